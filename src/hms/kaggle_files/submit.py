# The source of the kit's notebook, submit.ipynb (hms.kaggle_kit.notebook): each "# %%" line
# starts a code cell, each "# %% [markdown]" line a markdown cell of "# " lines. The code cells
# are plain Python (no ! or % lines), so that they also run in order as one script (the kit's
# test does that, with the network cut). hms.kaggle_kit writes the kit's folder name into
# KIT_NAME.

# %% [markdown]
# # HMS - Harmful Brain Activity Classification: the submission of an hms ensemble
#
# This notebook runs with the **internet off**. It needs two inputs (*Add Input*): the
# competition data and the hms kit dataset built by `python -m hms.export format=kaggle`
# (see the kit's README.md). It
#
# 1. finds both under `/kaggle/input`,
# 2. checks that this Python can install the kit's wheels and that the image holds what the
#    kit assumes (`kaggle_base.txt`),
# 3. installs hms from the kit's `wheels/` with pip, offline,
# 4. checks that the installed hms, the kit and the weights are of one hms version,
# 5. runs `python -m hms.predict paths=kaggle`, the command you run on your machine: the same
#    preprocessing, models and blend, and writes `/kaggle/working/submission.csv`.
#
# Any failure stops the notebook with one message that says what is wrong and what to do.

# %%
import hashlib
import json
import os
import re
import subprocess
import sys
import sysconfig
import time
from importlib import metadata
from pathlib import Path

import pandas as pd

try:
    from packaging.requirements import Requirement
    from packaging.specifiers import SpecifierSet
    from packaging.tags import sys_tags
    from packaging.utils import parse_wheel_filename
except ImportError:  # packaging is in Kaggle's image; pip carries a copy of it
    from pip._vendor.packaging.requirements import Requirement
    from pip._vendor.packaging.specifiers import SpecifierSet
    from pip._vendor.packaging.tags import sys_tags
    from pip._vendor.packaging.utils import parse_wheel_filename

KIT_NAME = "hms-kit"  # the kit dataset's folder under the input root (its slug)
COMPETITION = "hms-harmful-brain-activity-classification"
KIT_FILE = "hms_kit.json"
INPUT = Path(os.environ.get("HMS_KAGGLE_INPUT", "/kaggle/input"))
WORKING = Path(os.environ.get("HMS_KAGGLE_WORKING", "/kaggle/working"))
STARTED = time.time()


def stop(message):
    """End the notebook with one message (no traceback of ours)."""
    raise SystemExit(f"hms kit: {message}")


def folders(root, depth=3):
    """The folders under ``root``, breadth first, ``depth`` levels down."""
    level = [root]
    for _ in range(depth):
        level = sorted(p for d in level for p in (d.iterdir() if d.is_dir() else []) if p.is_dir())
        yield from level


def listing(root):
    """What is under ``root``, two levels down, for a message."""
    shown = [str(p.relative_to(root)) + "/" for p in folders(root, 2)]
    return ", ".join(shown[:30]) + (" ..." if len(shown) > 30 else "") if shown else "nothing"


def output_tail(text, lines=12):
    return "\n".join(text.strip().splitlines()[-lines:])


def read_json(path, max_bytes, what):
    """A JSON file of at most ``max_bytes``, or a stop naming it."""
    if not path.is_file():
        stop(f"{path} is missing: upload the kit folder again")
    if path.stat().st_size > max_bytes:
        stop(f"{path} is larger than any {what} ({max_bytes} bytes at most): upload the kit again")
    try:
        return json.loads(path.read_bytes())
    except (ValueError, RecursionError) as exc:
        stop(f"{path} is not a readable {what} ({str(exc)[:200]}): upload the kit folder again")


WHEEL_NAME = r"[A-Za-z0-9][A-Za-z0-9._+-]*\.whl"


def kit_problems(record):
    """What makes a kit record one this notebook cannot trust (hms.kaggle_kit checks the same
    when it builds a kit): each field read below, of its type; wheel files plain names with a
    SHA-256; the weights folder a plain name inside the kit."""
    if not isinstance(record, dict):
        return ["not a JSON object"]
    problems = []
    if record.get("format") != 1:
        problems.append("format is not 1")
    for key in ("hms_version", "requires_python"):
        if not isinstance(record.get(key), str):
            problems.append(f"{key} is not a string")
    target = record.get("target")
    if not isinstance(target, dict) or not all(
        isinstance(target.get(k), str) for k in ("description", "python_version")
    ):
        problems.append("target lacks its description or python_version")
    wheels = record.get("wheels")
    if not isinstance(wheels, list) or not 0 < len(wheels) <= 500:
        problems.append("wheels is not a list of 1 to 500 wheels")
    else:
        for wheel in wheels:
            file = wheel.get("file") if isinstance(wheel, dict) else None
            if not isinstance(file, str) or not re.fullmatch(WHEEL_NAME, file):
                problems.append(f"wheel file {str(file)[:80]!r} is not a wheel's name")
            elif not isinstance(wheel.get("sha256"), str) or not re.fullmatch(
                r"[0-9a-f]{64}", wheel["sha256"]
            ):
                problems.append(f"wheel {file} has no SHA-256")
            if len(problems) > 3:
                break
    weights = record.get("weights")
    folder = weights.get("dir") if isinstance(weights, dict) else None
    if not isinstance(folder, str) or not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", folder):
        problems.append("weights.dir is not a folder name")
    return problems


print(f"input: {INPUT}  working: {WORKING}  Python {sys.version.split()[0]}")

# %%
# 1. The inputs: the competition's test files and the kit.
if not INPUT.is_dir():
    stop(
        f"the input folder {INPUT} does not exist: run this notebook on Kaggle with the "
        "competition data and the kit dataset attached (Add Input), or set HMS_KAGGLE_INPUT to "
        "the folder that holds them"
    )
KIT = INPUT / KIT_NAME
if not (KIT / KIT_FILE).is_file():  # attached under another name: find it by its marker
    found = [d for d in folders(INPUT) if (d / KIT_FILE).is_file()]
    if not found:
        stop(
            f"no hms kit under {INPUT} (expected {KIT / KIT_FILE}): attach the kit dataset "
            f"(Add Input). Under {INPUT}: {listing(INPUT)}"
        )
    KIT = found[0]
    print(f"note: the kit is at {KIT}, not {INPUT / KIT_NAME}")
DATA = INPUT / COMPETITION
if not (DATA / "test.csv").is_file():
    found = [d for d in folders(INPUT) if d.name == COMPETITION and (d / "test.csv").is_file()]
    if not found:
        stop(
            f"the competition data is not under {INPUT} (expected {DATA / 'test.csv'}): attach "
            f"the competition {COMPETITION} (Add Input). Under {INPUT}: {listing(INPUT)}"
        )
    DATA = found[0]
    print(f"note: the competition data is at {DATA}")
MANIFEST = read_json(KIT / KIT_FILE, 1024**2, "kit record")
if kit_problems(MANIFEST):
    stop(
        f"{KIT / KIT_FILE} is not a record of an hms kit this notebook can run "
        f"({'; '.join(kit_problems(MANIFEST))}): build the kit again (python -m hms.export "
        "format=kaggle) and upload it whole"
    )
try:
    SpecifierSet(MANIFEST["requires_python"])
    [parse_wheel_filename(w["file"]) for w in MANIFEST["wheels"]]
except ValueError as exc:  # InvalidSpecifier, InvalidWheelFilename
    stop(f"{KIT / KIT_FILE}: {exc}: build the kit again and upload it whole")
print(f"kit: {KIT} (hms {MANIFEST['hms_version']}, built for {MANIFEST['target']['description']})")
print(f"competition data: {DATA}")

# %%
# 2. Before installing: can this Python take the kit's wheels, and does the image hold what the
# kit assumes?
PLATFORM = sysconfig.get_platform().replace("-", "_").replace(".", "_")
HERE = f"Python {sys.version_info[0]}.{sys.version_info[1]} on {PLATFORM}"
WHEELS = KIT / "wheels"
supported = set(sys_tags())
missing = [w["file"] for w in MANIFEST["wheels"] if not (WHEELS / w["file"]).is_file()]
if missing:
    stop(f"the kit is incomplete, {WHEELS} lacks {missing}: upload the kit folder again")
foreign = [
    w["file"] for w in MANIFEST["wheels"] if not set(parse_wheel_filename(w["file"])[3]) & supported
]
if foreign:
    stop(
        f"the kit was built for {MANIFEST['target']['description']}, but this notebook runs "
        f"{HERE}: pip cannot install {', '.join(foreign)} here. Build the kit for this image: "
        "python -m hms.export format=kaggle python_version=X.Y platform=... (see the kit's "
        "README.md)"
    )
python_here = ".".join(map(str, sys.version_info[:3]))
if not SpecifierSet(MANIFEST["requires_python"]).contains(python_here):
    stop(f"this hms needs Python {MANIFEST['requires_python']}, this notebook runs {HERE}")
for w in MANIFEST["wheels"]:
    if hashlib.sha256((WHEELS / w["file"]).read_bytes()).hexdigest() != w["sha256"]:
        stop(f"{WHEELS / w['file']} is damaged (its SHA-256 is not the kit's): upload it again")
if MANIFEST["target"]["python_version"] != "{}.{}".format(*sys.version_info[:2]):
    print(f"note: the kit was built for {MANIFEST['target']['description']}; its wheels fit {HERE}")
lacking = []
for line in (KIT / "kaggle_base.txt").read_text().splitlines():
    text = line.split("#", 1)[0].strip()
    if not text:
        continue
    requirement = Requirement(text)
    if requirement.marker is not None and not requirement.marker.evaluate():
        continue
    try:
        version = metadata.version(requirement.name)
    except metadata.PackageNotFoundError:
        lacking.append(f"{requirement} (not installed)")
        continue
    if not requirement.specifier.contains(version, prereleases=True):
        lacking.append(f"{requirement} (the image has {version})")
if lacking:
    stop(
        f"this notebook's image lacks what the kit assumes it holds (kaggle_base.txt): "
        f"{'; '.join(lacking)}. Build the kit with base=FILE listing only what this image holds, "
        "so that the rest goes into wheels/ (see the kit's README.md)"
    )
print(f"{len(MANIFEST['wheels'])} wheels fit {HERE}; the image holds the kit's base")

# %%
# 3. Install hms from the kit's wheels, offline (the image's own torch, pandas, ... stay).
command = [
    sys.executable, "-m", "pip", "install", "--no-index", "--find-links", str(WHEELS),
    "--no-cache-dir", "--disable-pip-version-check", "--no-input", "--progress-bar", "off",
    f"hms=={MANIFEST['hms_version']}",
]  # fmt: skip
result = subprocess.run(command, capture_output=True, text=True)
if result.returncode != 0:
    stop(
        "pip could not install hms from the kit offline:\n"
        + output_tail(result.stderr + result.stdout)
    )
installed = [line for line in result.stdout.splitlines() if line.startswith("Successfully")]
print(installed[-1] if installed else f"hms {MANIFEST['hms_version']} was installed already")

# %%
# 4. One hms version: the installed one, the kit's, and the one that wrote the weights.
probe = subprocess.run(
    [sys.executable, "-c", "import importlib.metadata as m, hms; print(m.version('hms'))"],
    capture_output=True,
    text=True,
)
if probe.returncode != 0:
    stop(f"hms does not import after the install:\n{output_tail(probe.stderr)}")
INSTALLED = probe.stdout.strip()
WEIGHTS = KIT / MANIFEST["weights"]["dir"]
ensemble = read_json(WEIGHTS / "ensemble.json", 4 * 1024**2, "hms ensemble.json")
written_by = ensemble.get("hms_version") if isinstance(ensemble, dict) else None
if MANIFEST["hms_version"] != INSTALLED:
    stop(
        f"hms {INSTALLED} is installed, but the kit is of hms {MANIFEST['hms_version']}: an "
        "hms of another version was in the image; uninstall it before running this notebook"
    )
if written_by is not None and written_by != INSTALLED:
    stop(
        f"the weights folder {WEIGHTS} was written by hms {written_by}, but the kit installs "
        f"hms {INSTALLED}: build the kit again from weights of hms {INSTALLED} (python -m "
        "hms.ensemble, then python -m hms.export format=kaggle)"
    )
if written_by is None:
    print(f"hms {INSTALLED}: installed and the kit's; the weights do not say (an older hms)")
else:
    print(f"hms {INSTALLED}: installed, the kit's and the weights' version")

# %%
# 5. The submission: python -m hms.predict, the command you run on your machine.


def hydra_value(path):
    """A path as a Hydra override value (quoted when it holds characters Hydra reads)."""
    text = str(path)
    if all(c.isalnum() or c in "/._-+:@~" for c in text):
        return text
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


command = [
    sys.executable, "-m", "hms.predict", "paths=kaggle", "progress=false",
    f"test_path={hydra_value(DATA)}", f"weights_dir={hydra_value(WEIGHTS)}",
]  # fmt: skip
environment = {**os.environ, "HMS_KAGGLE_INPUT": str(INPUT), "HMS_KAGGLE_WORKING": str(WORKING)}
print("python", " ".join(command[1:]))
started = time.time()
with subprocess.Popen(
    command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=environment
) as process:
    said = []
    for line in process.stdout:
        print(line, end="")
        said.append(line)
if process.returncode != 0:
    errors = [line.strip() for line in said if line.startswith("error:")]
    stop(
        f"python -m hms.predict failed (exit status {process.returncode}): "
        + (errors[-1] if errors else output_tail("".join(said)))
    )
SUBMISSION = WORKING / "submission.csv"
if not SUBMISSION.is_file():
    stop(f"python -m hms.predict wrote no {SUBMISSION}")
print(f"prediction: {time.time() - started:.1f} s")

# %%
# 6. The result.
submission = pd.read_csv(SUBMISSION)
print(f"{SUBMISSION}: {len(submission)} rows; the notebook took {time.time() - STARTED:.1f} s")
print(submission.head())
