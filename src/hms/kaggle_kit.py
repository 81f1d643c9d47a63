"""The offline Kaggle kit: the work of ``python -m hms.export format=kaggle``.

Kaggle scores this competition only from notebooks that run with the internet off, on Kaggle's
Python image. ``build_kit`` writes one folder to upload as one Kaggle dataset; attached beside
the competition data, its notebook installs hms from it offline and writes ``submission.csv``
with ``python -m hms.predict`` itself (the same preprocessing, models and blend)::

    <out_dir>/
        hms_kit.json      the kit's record (and the notebook's marker to find it): kit name, hms
                          version, the Python and platform it was built for, each wheel with
                          its SHA-256, the weights' hms version
        wheels/           a wheel of hms and of each runtime dependency the image lacks (the
                          closure of hms's requirements minus the closure of the base ones)
        kaggle_base.txt   what the kit assumes the image holds: names, version ranges, and the
                          version of each in the image it was checked against
        weights/          ensemble.json and the checkpoints it lists (nothing else of the
                          source folder), checked as hms.predict checks them; MODEL_CARD.md
        submit.ipynb      the notebook (plain Python cells: installs through sys.executable -m
                          pip; roots from HMS_KAGGLE_INPUT / HMS_KAGGLE_WORKING)
        README.md         how to upload and attach the kit, what the notebook does, run time

The notebook (``kaggle_files/submit.py``, cells as ``# %%`` blocks) stops with one clear message
when an input folder is missing, when the kit was built for another Python or platform, when
the image lacks a base requirement, and when the weights were written by another hms version.

The hms wheel is built (``pip wheel --no-deps``) from the source tree hms is imported from, or
given (``hms_wheel``). Dependency wheels are the versions installed here, fetched from the
package index with ``pip download --only-binary=:all:`` for the target (``--python-version``,
``--platform``, ``--abi`` when it is not this interpreter); a dependency with no wheel there
(antlr4-python3-runtime 4.9.3 is an sdist only) is built with ``pip wheel --no-deps`` and kept
if the result fits the target (a pure-Python wheel always does). Building a kit needs the index;
running it does not.

A rehearsal before uploading (the kit's tests and ``scripts/bench_kit.py`` do this):
``base_environment`` makes a virtual environment holding exactly the base (linked from this
one), and ``run_notebook`` runs the kit's notebook there as Kaggle would, offline.
"""

from __future__ import annotations

import datetime as dt
import email.parser
import json
import os
import re
import shutil
import string
import subprocess
import sys
import sysconfig
import tempfile
import time
import tomllib
import zipfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

import pandas as pd
from omegaconf import OmegaConf
from packaging.markers import default_environment
from packaging.requirements import InvalidRequirement, Requirement
from packaging.tags import Tag, compatible_tags, cpython_tags, platform_tags, sys_tags
from packaging.utils import (
    InvalidWheelFilename,
    canonicalize_name,
    parse_wheel_filename,
)

import hms
from hms.blend import ENSEMBLE_FILE, EnsembleSpec, read_ensemble, read_json_bounded
from hms.data.io import atomic_dir, check_output_dir, file_digest, output_lock
from hms.errors import HMSDataError, HMSRunError
from hms.inference import open_weights

KIT_FILE = "hms_kit.json"
KIT_FORMAT = 1
COMPETITION = "hms-harmful-brain-activity-classification"
BASE_FILE = "kaggle_base.txt"
NOTEBOOK_FILE = "submit.ipynb"
README_FILE = "README.md"
CARD_FILE = "MODEL_CARD.md"
WHEELS_DIR = "wheels"
WEIGHTS_DIR = "weights"
FILES = Path(__file__).parent / "kaggle_files"  # package data: base, notebook, README template
_KIT_NAME_LINE = re.compile(r'^KIT_NAME = "[^"\n]*"(.*)$', re.MULTILINE)
_LEGACY_MANYLINUX = {"manylinux1": (2, 5), "manylinux2010": (2, 12), "manylinux2014": (2, 17)}


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _log(message: str) -> None:
    print(message, flush=True)


# --------------------------------------------------------------------------- the target


@dataclass
class Target:
    """The Python and platform of the notebook image the kit is built for."""

    python: tuple[int, int]
    platforms: list[str]  # pip platform tags, e.g. ["manylinux_2_35_x86_64"]
    abi: str
    native: bool  # this interpreter: pip needs no target options, tags are sys_tags()
    tags: frozenset[Tag] = field(repr=False)

    @property
    def python_version(self) -> str:
        return f"{self.python[0]}.{self.python[1]}"

    def describe(self) -> str:
        return f"Python {self.python_version} on {', '.join(self.platforms)}"

    def fits(self, wheel: str) -> bool:
        """Whether pip on the target can install the wheel of this file name."""
        return bool(set(parse_wheel_filename(wheel)[3]) & self.tags)

    def pip_options(self) -> list[str]:
        """``pip download`` options for the target (none for this interpreter)."""
        if self.native:
            return []
        options = ["--python-version", self.python_version, "--implementation", "cp"]
        options += ["--abi", self.abi]
        for platform in _expand_platforms(self.platforms):
            options += ["--platform", platform]
        return options

    def marker_environment(self) -> dict[str, str]:
        """The values of requirement markers (``python_version``, ``sys_platform``, ...) there."""
        env = dict(default_environment())
        if self.native:
            return env
        full = f"{self.python_version}.0"
        env.update(
            python_version=self.python_version,
            python_full_version=full,
            implementation_version=full,
            implementation_name="cpython",
            platform_python_implementation="CPython",
        )
        platform = self.platforms[0]
        for prefix, sys_platform, system, os_name in (
            ("manylinux", "linux", "Linux", "posix"),
            ("musllinux", "linux", "Linux", "posix"),
            ("linux", "linux", "Linux", "posix"),
            ("macosx", "darwin", "Darwin", "posix"),
            ("win", "win32", "Windows", "nt"),
        ):
            if platform.startswith(prefix):
                env.update(sys_platform=sys_platform, platform_system=system, os_name=os_name)
                break
        machine = re.sub(
            r"^(manylinux_\d+_\d+|musllinux_\d+_\d+|manylinux\d*|linux)_", "", platform
        )
        machine = re.sub(r"^macosx_\d+_\d+_", "", machine)
        machine = {"amd64": "AMD64", "win32": "x86", "arm64": "arm64"}.get(machine, machine)
        env["platform_machine"] = machine
        return env

    def to_json(self) -> dict[str, Any]:
        return {
            "python_version": self.python_version,
            "platforms": self.platforms,
            "abi": self.abi,
            "implementation": "cp",
            "this_interpreter": self.native,
            "description": self.describe(),
        }


def _expand_platforms(platforms: Iterable[str]) -> list[str]:
    """The platforms pip may pick wheels of for ``platforms``: a manylinux tag also takes the
    wheels of older glibc versions (``manylinux_2_35_x86_64`` takes ``manylinux2014_x86_64``)."""
    out: list[str] = []
    for platform in platforms:
        m = re.fullmatch(
            r"(manylinux1|manylinux2010|manylinux2014|manylinux_2_(\d+))_(.+)", platform
        )
        if m is None:
            out.append(platform)
            continue
        glibc = int(m[2]) if m[2] else _LEGACY_MANYLINUX[m[1]][1]
        arch = m[3]
        out += [f"manylinux_2_{minor}_{arch}" for minor in range(glibc, 4, -1)]
        out += [f"{name}_{arch}" for name, (_, v) in _LEGACY_MANYLINUX.items() if v <= glibc]
    return list(dict.fromkeys(out))


def _python_version(value: Any) -> tuple[int, int]:
    """``"3.12"`` (or ``3.12`` as YAML reads it) -> (3, 12)."""
    text = repr(value) if isinstance(value, float) else str(value)
    m = re.fullmatch(r"3\.(\d{1,2})", text.strip())
    if isinstance(value, bool) or m is None:
        raise HMSDataError(None, f"python_version must be a version such as '3.12', got {value!r}")
    if isinstance(value, float) and len(m[1]) == 1:  # 3.10 arrives as the float 3.1
        raise HMSDataError(
            None, f"python_version={value!r} is ambiguous (3.10 reads as 3.1): quote it, "
            "python_version='3.10'",
        )  # fmt: skip
    return 3, int(m[1])


def resolve_target(python_version: Any = None, platform: Any = None) -> Target:
    """The target of the kit: this interpreter when both are None, else the Python version
    (``"3.12"``) and pip platform tag(s) (``"manylinux_2_35_x86_64"``, or a list) given."""
    here = sys.version_info[:2]
    native_platform = sysconfig.get_platform().replace("-", "_").replace(".", "_")
    if platform is not None and not isinstance(platform, str):
        platforms = [str(p) for p in platform]
    elif platform is not None:
        platforms = [platform]
    else:
        platforms = []
    bad = [p for p in platforms if not re.fullmatch(r"[a-z0-9_]+", p)]
    if bad or (platform is not None and not platforms):
        raise HMSDataError(
            None, f"platform must be pip platform tags such as manylinux_2_35_x86_64, got "
            f"{platform!r}",
        )  # fmt: skip
    python = here if python_version is None else _python_version(python_version)
    if python == here and (not platforms or platforms == [native_platform]):
        return Target(here, [native_platform], f"cp{here[0]}{here[1]}", True, frozenset(sys_tags()))
    abi = f"cp{python[0]}{python[1]}"
    plats = _expand_platforms(platforms or list(platform_tags()))
    tags = set(cpython_tags(python, abis=[abi], platforms=plats))
    tags |= set(compatible_tags(python, abi, platforms=plats))
    return Target(python, platforms or [native_platform], abi, False, frozenset(tags))


# --------------------------------------------------------------------------- base requirements


@dataclass
class BaseRequirement:
    requirement: Requirement
    image_version: str | None  # the version in the image it was checked against


@dataclass
class BaseFile:
    path: Path
    text: str
    requirements: list[BaseRequirement]
    image: str  # the "# Image:" line: which image they were checked against

    @property
    def names(self) -> set[str]:
        return {canonicalize_name(b.requirement.name) for b in self.requirements}


def read_base(path: str | Path | None = None) -> BaseFile:
    """The base requirements (``kaggle_base.txt``: one requirement a line, ``# image: X`` after
    it the version the image holds); ``None``: the file packaged with hms."""
    path = Path(path) if path is not None else FILES / BASE_FILE
    if not path.is_file():
        raise HMSDataError(path, "base requirements file not found")
    text = path.read_text()
    reqs: list[BaseRequirement] = []
    image = ""
    for number, line in enumerate(text.splitlines(), 1):
        body, _, comment = line.partition("#")
        if not body.strip():
            if comment.strip().lower().startswith("image:") and not image:
                image = comment.strip()[len("image:") :].strip()
            continue
        try:
            req = Requirement(body.strip())
        except InvalidRequirement as exc:
            raise HMSDataError(path, f"line {number}: not a requirement: {body.strip()!r}") from exc
        m = re.search(r"image:\s*(\S+)", comment)
        version = m[1] if m else None
        if version is not None and not req.specifier.contains(version, prereleases=True):
            raise HMSDataError(
                path, f"line {number}: {req} does not hold the image's {req.name} {version}"
            )
        reqs.append(BaseRequirement(req, version))
    if not reqs:
        raise HMSDataError(path, "no requirement in the base requirements file")
    names = [canonicalize_name(b.requirement.name) for b in reqs]
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise HMSDataError(path, f"requirements listed twice: {twice}")
    return BaseFile(path, text, reqs, image or "unknown (no '# Image:' line)")


# --------------------------------------------------------------------------- which wheels


def _applicable(requires: Iterable[str] | None, env: dict[str, str], extras=()) -> list:
    """The requirements whose markers hold on the target (with the extras asked for)."""
    out = []
    for text in requires or ():
        req = Requirement(text)
        if req.marker is None or any(
            req.marker.evaluate({**env, "extra": extra}) for extra in (*extras, "")
        ):
            out.append(req)
    return out


def _installed(name: str) -> metadata.Distribution | None:
    try:
        return metadata.distribution(name)
    except metadata.PackageNotFoundError:
        return None


def base_closure(base: BaseFile, env: dict[str, str]) -> set[str]:
    """The base requirements and, through the metadata installed here, what they require: what
    the image holds when it holds the base (canonical names)."""
    seen: set[str] = set()
    todo = [(b.requirement.name, tuple(b.requirement.extras)) for b in base.requirements]
    done: set[tuple[str, tuple]] = set()
    while todo:
        name, extras = todo.pop()
        if (canonicalize_name(name), extras) in done:
            continue
        done.add((canonicalize_name(name), extras))
        seen.add(canonicalize_name(name))
        dist = _installed(name)
        if dist is not None:
            todo += [(r.name, tuple(r.extras)) for r in _applicable(dist.requires, env, extras)]
    return seen


@dataclass
class Dependency:
    name: str
    version: str
    required_by: str


def kit_dependencies(requires: Iterable[str], base: BaseFile, target: Target) -> list[Dependency]:
    """The distributions the kit must carry besides hms: the closure of hms's requirements
    (markers evaluated for the target) minus the base's closure, each at the version installed
    here. Refused: a requirement that the image's version of a base package does not meet (the
    kit would not install), and one that is neither in the base nor installed here."""
    env = target.marker_environment()
    in_base = base_closure(base, env)
    image = {
        canonicalize_name(b.requirement.name): b.image_version
        for b in base.requirements
        if b.image_version
    }
    todo = [(req, "hms") for req in _applicable(requires, env)]
    found: dict[str, Dependency] = {}
    while todo:
        req, parent = todo.pop(0)
        key = canonicalize_name(req.name)
        if key in image and not req.specifier.contains(image[key], prereleases=True):
            raise HMSDataError(
                base.path, f"{parent} requires {req}, but the notebook image holds {req.name} "
                f"{image[key]}: the kit would not install there (widen the requirement or "
                "build for another image)",
            )  # fmt: skip
        if key in in_base or key == "hms" or key in found:
            continue
        dist = _installed(req.name)
        if dist is None:
            raise HMSDataError(
                None, f"{req.name} ({parent} requires {req}) is neither in the base "
                f"requirements ({base.path.name}) nor installed here: install it, or list it in "
                "the base file if the notebook image holds it",
            )  # fmt: skip
        if not req.specifier.contains(dist.version, prereleases=True):
            raise HMSDataError(
                None, f"{parent} requires {req}, but {req.name} {dist.version} is installed "
                "here (the kit ships the installed version): install one that fits",
            )  # fmt: skip
        found[key] = Dependency(dist.metadata["Name"], dist.version, parent)
        todo += [(r, dist.metadata["Name"]) for r in _applicable(dist.requires, env, req.extras)]
    return sorted(found.values(), key=lambda d: canonicalize_name(d.name))


# --------------------------------------------------------------------------- wheels


def _pip(*args: str) -> subprocess.CompletedProcess:
    """``python -m pip ...`` of this interpreter (pip's own configuration applies)."""
    env = {**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1", "PIP_NO_INPUT": "1"}
    return subprocess.run(
        [sys.executable, "-m", "pip", *args], capture_output=True, text=True, env=env
    )


def _pip_error(result: subprocess.CompletedProcess) -> str:
    """pip's reason in a line: its ``ERROR:`` lines, else the last lines it wrote."""
    lines = [line.strip() for line in (result.stderr + result.stdout).splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("ERROR:")]
    return " ".join(errors[-3:] or lines[-3:]) or f"exit status {result.returncode}"


def source_root() -> Path | None:
    """The source tree hms is imported from (its pyproject.toml names the project hms), if any."""
    root = Path(hms.__file__).resolve().parents[2]
    pyproject = root / "pyproject.toml"
    if not pyproject.is_file():
        return None
    try:
        project = tomllib.loads(pyproject.read_text()).get("project", {})
    except (OSError, tomllib.TOMLDecodeError):
        return None
    return root if project.get("name") == "hms" else None


def _one_wheel(folder: Path) -> Path:
    wheels = sorted(folder.glob("*.whl"))
    if len(wheels) != 1:
        raise HMSRunError(f"pip left {len(wheels)} wheels in {folder}, expected one")
    return wheels[0]


def hms_wheel_version(path: Path) -> str:
    """The version of a wheel of hms (from its file name), or ``HMSDataError``."""
    try:
        name, version, _, _ = parse_wheel_filename(path.name)
    except InvalidWheelFilename as exc:
        raise HMSDataError(path, "not a wheel file name (hms-<version>-py3-none-any.whl)") from exc
    if name != "hms":
        raise HMSDataError(path, f"a wheel of {name}, not of hms")
    return str(version)


def build_hms_wheel(dest: Path, given: str | Path | None = None) -> tuple[Path, str]:
    """A wheel of hms in ``dest``: ``given``, or built from the source tree hms is imported from
    (``pip wheel --no-deps``). Returns the wheel and where it came from."""
    if given is not None:
        given = Path(given).expanduser()
        if not given.is_file():
            raise HMSDataError(given, "hms wheel not found")
        hms_wheel_version(given)
        shutil.copy2(given, dest / given.name)
        return dest / given.name, f"given: {given}"
    root = source_root()
    if root is None:
        raise HMSDataError(
            Path(hms.__file__).parent, "hms is not imported from a source tree (no pyproject.toml "
            "of hms above it), so its wheel cannot be built here: give hms_wheel=FILE, a wheel "
            f"of hms {hms.__version__}",
        )  # fmt: skip
    with tempfile.TemporaryDirectory(prefix="hms-kit-wheel-") as scratch:
        result = _pip("wheel", "--no-deps", "--wheel-dir", scratch, str(root))
        if result.returncode != 0:
            raise HMSRunError(
                f"pip could not build the hms wheel from {root}: {_pip_error(result)}"
            )
        wheel = _one_wheel(Path(scratch))
        shutil.copy2(wheel, dest / wheel.name)
    return dest / wheel.name, f"built from {root}{_git_state(root)}"


def _git_state(root: Path) -> str:
    """`` (git <commit>[, uncommitted changes])`` of a source tree, when git can tell."""
    try:
        head = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "--short", "HEAD"],
            capture_output=True, text=True, timeout=20,
        )  # fmt: skip
        dirty = subprocess.run(
            ["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True, text=True, timeout=20,
        )  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        return ""
    if head.returncode != 0:
        return ""
    return f" (git {head.stdout.strip()}{', uncommitted changes' if dirty.stdout.strip() else ''})"


def wheel_metadata(path: Path) -> email.message.Message:
    """The METADATA of a wheel."""
    with zipfile.ZipFile(path) as zf:
        names = [n for n in zf.namelist() if re.fullmatch(r"[^/]+\.dist-info/METADATA", n)]
        if len(names) != 1:
            raise HMSDataError(path, "not a wheel (no single .dist-info/METADATA)")
        return email.parser.Parser().parsestr(zf.read(names[0]).decode("utf-8"))


def fetch_wheel(dep: Dependency, target: Target, dest: Path) -> tuple[Path, str]:
    """The wheel of ``dep`` for the target, in ``dest``: downloaded from the package index, or,
    when the index has none (an sdist-only package), built with ``pip wheel --no-deps`` and kept
    only if it fits the target. Returns the wheel and where it came from."""
    spec = f"{dep.name}=={dep.version}"
    with tempfile.TemporaryDirectory(prefix="hms-kit-dl-") as scratch:
        got = _pip(
            "download", "--no-deps", "--only-binary=:all:", "--dest", scratch,
            *target.pip_options(), spec,
        )  # fmt: skip
        source = "package index"
        if got.returncode != 0:
            built = _pip("wheel", "--no-deps", "--wheel-dir", scratch, spec)
            if built.returncode != 0:
                raise HMSRunError(
                    f"pip could not download {spec} for {target.describe()} "
                    f"({_pip_error(got)}), nor build it ({_pip_error(built)}); pip download needs "
                    "the package index (PyPI, or the index of your pip configuration): is it "
                    "reachable?"
                )
            source = "built from its sdist (no wheel on the index)"
        wheel = _one_wheel(Path(scratch))
        if not target.fits(wheel.name):
            raise HMSDataError(
                None, f"{spec} has no wheel for {target.describe()} on the index, and the one "
                f"built here ({wheel.name}) does not fit it: build the kit on the target's "
                "Python and platform",
            )  # fmt: skip
        shutil.copy2(wheel, dest / wheel.name)
    return dest / wheel.name, source


# --------------------------------------------------------------------------- weights and card


def _weights_files(weights_dir: Path, spec: EnsembleSpec) -> tuple[list[str], list[str]]:
    """(what the kit copies: ensemble.json and the checkpoints it lists; what it leaves out)."""
    listed = [ENSEMBLE_FILE, *(f for files in spec.checkpoints.values() for f in files)]
    present = sorted(
        p.relative_to(weights_dir).as_posix() for p in weights_dir.rglob("*") if p.is_file()
    )
    wanted = {Path(f).as_posix() for f in listed}
    return listed, [f for f in present if f not in wanted]


def scores_table(
    weights_dir: Path, spec: EnsembleSpec, scores: str | Path | None
) -> tuple[pd.DataFrame | None, str]:
    """The test figures of the weights (a ``hms.pipeline`` scores table: ``name, cv, cv_hq,
    test, test_hq``) and where they come from. ``scores`` given: it must be that folder's (its
    CV figures those of ``ensemble.json``), else ``HMSDataError``. Not given: the pipeline's
    table beside the weights (``<out>/submissions/<experiment>-<ensemble>-scores.csv`` for
    ``<out>/ensembles/<experiment>/<ensemble>``) is used when its CV figures match; otherwise
    the figures are unknown."""
    given = scores is not None
    if given:
        path = Path(scores).expanduser()
        if not path.is_file():
            raise HMSDataError(path, "scores table not found")
    else:
        parts = weights_dir.resolve()
        if parts.parent.parent.name != "ensembles":
            return None, "unknown (no scores table of hms.pipeline beside the weights; scores=FILE)"
        experiment, name = parts.parent.name, parts.name
        path = parts.parents[2] / "submissions" / f"{experiment}-{name}-scores.csv"
        if not path.is_file():
            return None, f"unknown ({path} not found; scores=FILE)"
    try:
        table = pd.read_csv(path)
    except (OSError, ValueError) as exc:
        if given:
            raise HMSDataError(path, f"not a readable CSV ({exc})") from exc
        return None, f"unknown ({path} is not readable)"
    need = {"name", "cv", "cv_hq", "test", "test_hq"}
    cv = {row["name"]: row for row in spec.cv.get("table", []) if isinstance(row, dict)}
    problem = None
    if not need <= set(table.columns):
        problem = f"columns {sorted(need - set(table.columns))} missing"
    else:
        common = [n for n in table["name"] if n in cv]
        differ = [
            n for n in common
            for got, want in ((table.set_index("name").loc[n, "cv"], cv[n]["kl"]),)
            if not abs(float(got) - float(want)) <= 1e-9
        ]  # fmt: skip
        if not common:
            problem = "none of its rows is a member or blend of this ensemble"
        elif differ:
            problem = f"its CV figures differ from ensemble.json's for {differ}"
    if problem is not None:
        if given:
            raise HMSDataError(path, f"not the scores of this weights folder: {problem}")
        return None, f"unknown ({path} is not this folder's: {problem})"
    return table, str(path)


def _number(x: Any) -> str:
    try:
        value = float(x)
    except (TypeError, ValueError):
        return "-"
    return "-" if value != value else f"{value:.4f}"  # NaN: not measured


def _training_data(spec: EnsembleSpec) -> list[str]:
    """What the runs were trained on, from their folders when they are still on this machine."""
    lines = []
    checkpoints = (spec.built_from or {}).get("checkpoints", {})
    runs = {info["run"] for info in checkpoints.values() if isinstance(info.get("run"), str)}
    seen: set[str] = set()
    for run in sorted(runs):
        config = Path(run) / "config.yaml"
        if not config.is_file():
            continue
        data_dir = str(OmegaConf.load(config).get("data", {}).get("data_dir", ""))
        record = Path(run) / "complete.json"
        inputs = ""
        if record.is_file():
            inputs = json.loads(record.read_text()).get("data", {}).get("train_inputs", "")
        key = f"{data_dir} {inputs}"
        if not data_dir or key in seen:
            continue
        seen.add(key)
        line = f"`{data_dir}`" + (f" (train inputs fingerprint {inputs})" if inputs else "")
        meta = Path(data_dir) / "synth_meta.json"
        if meta.is_file():
            info = json.loads(meta.read_text())
            line += (
                f": the built-in dataset, preset {info.get('preset', {}).get('name', '?')}, "
                f"seed {info.get('seed', '?')}, generator {info.get('generator_version', '?')}"
            )
        lines.append(line)
    return lines


def _cv_line(cv: dict[str, Any]) -> str:
    """What the blend weights were chosen on (``ensemble.json``'s ``cv`` summary)."""
    if "n_samples" not in cv:
        return "- CV: unknown (ensemble.json holds no cv summary: written by hand, or not by hms)"
    return (
        f"- weights {cv.get('use', '?')} on the out-of-fold predictions of folds "
        f"{cv.get('folds', '?')}: {cv['n_samples']} samples ({cv.get('n_samples_hq', '?')} with "
        ">= 10 votes)"
    )


def model_card(
    spec: EnsembleSpec,
    weights: Path,
    scores: pd.DataFrame | None,
    scores_from: str,
    kit_hms: str,
) -> str:
    """``MODEL_CARD.md``: members, folds, blend weights, CV and test figures, versions, the
    training data, and the digest of every file of the kit's weights folder."""
    cv_rows = [row for row in spec.cv.get("table", []) if isinstance(row, dict)]
    test = {} if scores is None else {r["name"]: r for r in scores.to_dict("records")}
    lines = [
        f"# Model card: ensemble `{spec.name}`",
        "",
        f"- written by hms {spec.hms_version or 'unknown (ensemble.json does not say)'}; this "
        f"kit installs hms {kit_hms}",
        f"- blend: {spec.space}-space, weights {spec.weights}"
        + (f", per-class log bias {spec.bias}" if spec.bias else ""),
        _cv_line(spec.cv),
        f"- test figures: {scores_from}",
        "",
        "| member | network | fold checkpoints | weight |",
        "| --- | --- | ---: | ---: |",
    ]
    networks = spec.cv.get("networks", {}) if isinstance(spec.cv.get("networks"), dict) else {}
    lines += [
        f"| {m} | {networks.get(m, 'unknown')} | {len(spec.checkpoints[m])} | "
        f"{spec.weights[m]:.4f} |"
        for m in spec.members
    ]
    if cv_rows:
        lines += [
            "",
            "KL divergence (CV: out-of-fold; test: the pipeline's test split):",
            "",
            "| | CV KL | CV KL >= 10 votes | test KL | test KL >= 10 votes |",
            "| --- | ---: | ---: | ---: | ---: |",
        ]
        for row in cv_rows:
            t = test.get(row["name"], {})
            lines.append(
                f"| {row['name']}{' (reference, not blended)' if row.get('reference') else ''} "
                f"| {_number(row.get('kl'))} | {_number(row.get('kl_hq'))} "
                f"| {_number(t.get('test'))} | {_number(t.get('test_hq'))} |"
            )
        extra = [r for r in test.values() if r["name"] not in {c["name"] for c in cv_rows}]
        lines += [
            f"| {r['name']} | - | - | {_number(r.get('test'))} | {_number(r.get('test_hq'))} |"
            for r in extra
        ]
    else:
        lines += ["", "CV figures: unknown (ensemble.json holds no cv table)."]
    data = _training_data(spec)
    lines += ["", "Trained on: " + ("; ".join(data) if data else "unknown (the runs are not on "
              "this machine, or ensemble.json does not name them)")]  # fmt: skip
    lines += ["", "## Files", "", "| file | bytes | SHA-256 |", "| --- | ---: | --- |"]
    for path in sorted(p for p in weights.rglob("*") if p.is_file() and p.name != CARD_FILE):
        digest = file_digest(path)
        lines.append(
            f"| {path.relative_to(weights).as_posix()} | {digest['size']:,} | {digest['sha256']} |"
        )
    return "\n".join(lines) + "\n"


def copy_weights(weights_dir: Path, spec: EnsembleSpec, dest: Path) -> list[str]:
    """Copy ensemble.json and the checkpoints it lists to ``dest``; check the copy as
    ``hms.predict`` checks a weights folder. Returns the files left out."""
    listed, left_out = _weights_files(weights_dir, spec)
    for rel in listed:
        (dest / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(weights_dir / rel, dest / rel)  # a symlinked checkpoint: its content
    open_weights(dest, "cpu", "32")  # digests against built_from, settings, each file
    sums = (spec.built_from or {}).get("checkpoints", {})
    for rel in listed[1:]:
        want = file_digest(weights_dir / rel)["sha256"] if rel not in sums else sums[rel]["sha256"]
        if file_digest(dest / rel)["sha256"] != want:
            raise HMSRunError(f"{dest / rel}: the copy differs from {weights_dir / rel}")
    return left_out


# --------------------------------------------------------------------------- notebook, README


def notebook_cells(kit_name: str) -> list[dict[str, Any]]:
    """The notebook's cells from ``kaggle_files/submit.py`` (``# %%`` code cells, ``# %%
    [markdown]`` cells of ``# `` lines), with the kit's folder name in ``KIT_NAME``."""
    text = (FILES / "submit.py").read_text()
    text, n = _KIT_NAME_LINE.subn(lambda m: f"KIT_NAME = {json.dumps(kit_name)}{m[1]}", text)
    if n != 1:
        raise RuntimeError(f"{FILES / 'submit.py'}: expected one KIT_NAME line, found {n}")
    cells: list[dict[str, Any]] = []
    kind, lines = None, []

    def flush() -> None:
        while lines and not lines[-1].strip():
            lines.pop()
        while lines and not lines[0].strip():
            lines.pop(0)
        if kind is None or not lines:
            return
        if kind == "markdown":
            body = [re.sub(r"^# ?", "", line) for line in lines]
            cells.append({"cell_type": "markdown", "metadata": {}, "source": _source(body)})
        else:
            cells.append(
                {
                    "cell_type": "code",
                    "execution_count": None,
                    "metadata": {},
                    "outputs": [],
                    "source": _source(lines),
                }
            )

    for line in text.splitlines():
        if line.startswith("# %%"):
            flush()
            kind, lines = ("markdown" if "[markdown]" in line else "code"), []
        else:
            lines.append(line)
    flush()
    magic = [
        line
        for cell in cells
        if cell["cell_type"] == "code"
        for line in cell["source"]
        if line.lstrip().startswith(("!", "%"))
    ]
    if magic:
        raise RuntimeError(f"notebook code cells must be plain Python, found {magic}")
    return cells


def _source(lines: list[str]) -> list[str]:
    return [line + "\n" for line in lines[:-1]] + lines[-1:]


def notebook(kit_name: str) -> dict[str, Any]:
    """``submit.ipynb`` as an nbformat-4 document."""
    return {
        "cells": notebook_cells(kit_name),
        "metadata": {
            "kernelspec": {"display_name": "Python 3", "language": "python", "name": "python3"},
            "language_info": {"name": "python"},
        },
        "nbformat": 4,
        "nbformat_minor": 4,
    }


def code_cells(path: str | Path) -> list[str]:
    """The source of each code cell of a notebook file, in order."""
    doc = json.loads(Path(path).read_text())
    return ["".join(cell["source"]) for cell in doc["cells"] if cell["cell_type"] == "code"]


def _size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def _mib(n: int) -> str:
    return f"{n / 2**20:,.1f} MiB"


# --------------------------------------------------------------------------- a local rehearsal

DEAD_PROXY = "http://127.0.0.1:9"  # the discard port: nothing listens, connections are refused


def installed_closure(names: Iterable[str]) -> dict[str, metadata.Distribution]:
    """The distributions ``names`` installed here and, recursively, what they require (markers
    of this interpreter), by canonical name."""
    env = dict(default_environment())
    found: dict[str, metadata.Distribution] = {}
    todo, done = [(name, ()) for name in names], set()
    while todo:
        name, extras = todo.pop()
        if (canonicalize_name(name), extras) in done:
            continue
        done.add((canonicalize_name(name), extras))
        dist = _installed(name)
        if dist is None:
            raise HMSDataError(None, f"{name} is not installed here")
        found[canonicalize_name(name)] = dist
        todo += [(r.name, tuple(r.extras)) for r in _applicable(dist.requires, env, extras)]
    return found


def base_environment(root: str | Path, base: str | Path | None = None) -> Path:
    """A new virtual environment at ``root`` holding exactly the base requirements: the
    distributions ``kaggle_base.txt`` names and what they require, each of their files linked
    from this environment (nothing is downloaded; hms, hydra-core, edfio are absent unless the
    base names them). A stand-in for the notebook image, to run a kit's notebook before
    uploading it; returns its python."""
    root = Path(root)
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(root)], check=True)
    python = root / "bin" / "python"
    site = Path(
        subprocess.run(
            [python, "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
            capture_output=True, text=True, check=True,
        ).stdout.strip()
    )  # fmt: skip
    for dist in installed_closure(
        b.requirement.name for b in read_base(base).requirements
    ).values():
        if not dist.files:
            raise HMSDataError(None, f"{dist.metadata['Name']} lists no files (no RECORD)")
        for rel in dist.files:
            link = Path(os.path.normpath(site / rel))
            source = Path(dist.locate_file(rel))
            if site not in link.parents or link.exists() or not source.exists():
                continue  # scripts outside site-packages (bin/), files already linked
            link.parent.mkdir(parents=True, exist_ok=True)
            link.symlink_to(source)
    return python


def notebook_script(kit: str | Path) -> str:
    """The code cells of a kit's notebook, in order, as one script."""
    return "\n\n".join(code_cells(Path(kit) / NOTEBOOK_FILE))


def network_cut() -> list[str]:
    """A command prefix that runs a program without a route out (``unshare -rn``: a new network
    namespace holding only loopback), or ``[]`` where this machine does not allow it."""
    unshare = shutil.which("unshare")
    if unshare and subprocess.run([unshare, "-rn", "true"], capture_output=True).returncode == 0:
        return [unshare, "-rn"]
    return []


def run_notebook(
    kit: str | Path,
    python: str | Path,
    input_dir: str | Path,
    working_dir: str | Path,
    timeout: float | None = None,
) -> subprocess.CompletedProcess:
    """Run a kit's notebook (its code cells in order, as one script) with ``python``, as Kaggle
    would with the internet off: ``HMS_KAGGLE_INPUT`` / ``HMS_KAGGLE_WORKING`` at the given
    roots, the working root as the current folder, no package index (``PIP_NO_INDEX``, no pip
    configuration), proxies at a dead port, and no route out (``network_cut``) where the
    machine allows it. ``PYTHONPATH`` is dropped, so that only what the environment holds is
    imported."""
    working_dir = Path(working_dir)
    working_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile("w", suffix=".py", prefix="hms-kit-notebook-") as script:
        script.write(notebook_script(kit))
        script.flush()
        env = {k: v for k, v in os.environ.items() if not k.startswith("PIP_")}
        for key in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV", "NO_PROXY", "no_proxy"):
            env.pop(key, None)
        env.update(
            PIP_NO_INDEX="1", PIP_CONFIG_FILE=os.devnull, PIP_DISABLE_PIP_VERSION_CHECK="1",
            HTTP_PROXY=DEAD_PROXY, HTTPS_PROXY=DEAD_PROXY, http_proxy=DEAD_PROXY,
            https_proxy=DEAD_PROXY, ALL_PROXY=DEAD_PROXY, WANDB_MODE="disabled",
            HMS_KAGGLE_INPUT=str(input_dir), HMS_KAGGLE_WORKING=str(working_dir),
        )  # fmt: skip
        return subprocess.run(
            [*network_cut(), str(python), script.name],
            capture_output=True, text=True, env=env, cwd=working_dir, timeout=timeout,
        )  # fmt: skip


# --------------------------------------------------------------------------- the kit


def _check_kit_name(kit_name: Any) -> str:
    if not isinstance(kit_name, str) or not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", kit_name):
        raise HMSDataError(
            None, f"kit_name must be a folder name (letters, digits, '.', '_', '-'), the slug of "
            f"the Kaggle dataset; got {kit_name!r}",
        )  # fmt: skip
    return kit_name


MAX_KIT_RECORD_BYTES = 1024**2  # hms_kit.json: about 10 kB
MAX_KIT_WHEELS = 500
_WHEEL_FILE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+-]*\.whl")
_HEX64 = re.compile(r"[0-9a-f]{64}")


def kit_record_problems(record: Any) -> list[str]:
    """What makes ``record`` (a parsed ``hms_kit.json``) not one that the kit's notebook can
    trust: each field it reads, of its type; wheel files plain names inside ``wheels/`` with a
    SHA-256; the weights folder a plain name inside the kit. The notebook runs the same checks
    (``kaggle_files/submit.py``, ``read_kit``) before it reads anything else of the kit."""
    if not isinstance(record, dict):
        return ["not a JSON object"]
    problems = []
    if record.get("format") != KIT_FORMAT:
        problems.append(f"format is not {KIT_FORMAT}")
    for key in ("hms_version", "requires_python"):
        if not isinstance(record.get(key), str):
            problems.append(f"{key} is not a string")
    target = record.get("target")
    if not isinstance(target, dict) or not all(
        isinstance(target.get(k), str) for k in ("description", "python_version")
    ):
        problems.append("target lacks its description or python_version")
    wheels = record.get("wheels")
    if not isinstance(wheels, list) or not 0 < len(wheels) <= MAX_KIT_WHEELS:
        problems.append(f"wheels is not a list of 1 to {MAX_KIT_WHEELS} wheels")
    else:
        for wheel in wheels:
            file = wheel.get("file") if isinstance(wheel, dict) else None
            if not isinstance(file, str) or not _WHEEL_FILE.fullmatch(file):
                problems.append(f"wheel file {str(file)[:80]!r} is not a wheel's name")
            elif not isinstance(wheel.get("sha256"), str) or not _HEX64.fullmatch(wheel["sha256"]):
                problems.append(f"wheel {file} has no SHA-256")
            if len(problems) > 3:
                break
    weights = record.get("weights")
    folder = weights.get("dir") if isinstance(weights, dict) else None
    if not isinstance(folder, str) or not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", folder):
        problems.append("weights.dir is not a folder name")
    return problems


def read_kit_record(kit_dir: str | Path) -> dict[str, Any]:
    """A kit's ``hms_kit.json``, bounded (``MAX_KIT_RECORD_BYTES``) and checked
    (``kit_record_problems``); ``HMSDataError`` naming the file otherwise."""
    path = Path(kit_dir) / KIT_FILE
    if not path.is_file():
        raise HMSDataError(Path(kit_dir), f"no {KIT_FILE}: not a kit folder")
    record = read_json_bounded(path, MAX_KIT_RECORD_BYTES, f"hms {KIT_FILE}")
    problems = kit_record_problems(record)
    if problems:
        raise HMSDataError(path, f"not an hms kit record: {'; '.join(problems)}")
    return record


def _earlier_kit(folder: Path) -> bool:
    try:
        read_kit_record(folder)
    except HMSDataError:
        return False
    return True


def check_out_dir(out_dir: Path, weights_dir: Path) -> None:
    """``out_dir`` must be writable and, when it exists, an earlier kit (a valid
    ``hms_kit.json``) or empty (the new kit replaces it whole); never the weights folder or
    inside it."""
    check_output_dir(out_dir, weights_dir, "kit folder", KIT_FILE, _earlier_kit)


def build_kit(
    weights_dir: str | Path,
    out_dir: str | Path,
    kit_name: str = "hms-kit",
    python_version: Any = None,
    platform: Any = None,
    base: str | Path | None = None,
    hms_wheel: str | Path | None = None,
    scores: str | Path | None = None,
    log: Callable[[str], None] = _log,
) -> dict[str, Any]:
    """Build the kit of ``weights_dir`` in ``out_dir`` (built aside, then renamed); returns the
    kit's record (``hms_kit.json``). Arguments, the output folder, the base file, the weights
    folder and the scores table are checked before anything is built."""
    t0 = time.perf_counter()
    weights_dir, out_dir = Path(weights_dir).expanduser(), Path(out_dir).expanduser()
    kit_name = _check_kit_name(kit_name)
    target = resolve_target(python_version, platform)
    check_out_dir(out_dir, weights_dir)
    base_file = read_base(base)
    spec = read_ensemble(weights_dir)  # checked as hms.predict checks it: the file, each
    open_weights(weights_dir, "cpu", "32", spec)  # member's settings, each file (its SHA-256
    # against built_from, its model)
    table, scores_from = scores_table(weights_dir, spec, scores)
    version = hms_wheel_version(Path(hms_wheel)) if hms_wheel is not None else hms.__version__
    if spec.hms_version is not None and spec.hms_version != version:
        raise HMSDataError(
            weights_dir / ENSEMBLE_FILE, f"written by hms {spec.hms_version}, but the kit would "
            f"install hms {version}: build the weights again with this hms (python -m "
            f"hms.ensemble), or the kit with hms {spec.hms_version}",
        )  # fmt: skip
    log(f"[kit] {kit_name}: ensemble {spec.name!r} of {weights_dir}, for {target.describe()}")
    if spec.hms_version is None:
        log(f"[kit] note: {ENSEMBLE_FILE} does not record the hms version that wrote it (an "
            "older folder); the notebook cannot check it")  # fmt: skip
    with output_lock(out_dir, "kit folder"), atomic_dir(out_dir) as tmp:
        wheels = tmp / WHEELS_DIR
        wheels.mkdir()
        records: list[dict[str, Any]] = []

        hms_file, source = build_hms_wheel(wheels, hms_wheel)
        meta = wheel_metadata(hms_file)
        if meta["Version"] != version:
            raise HMSDataError(
                hms_file, f"this wheel is hms {meta['Version']}, but hms {version} is expected "
                f"(imported from {Path(hms.__file__).parent})",
            )  # fmt: skip
        requires_python = meta.get("Requires-Python") or ""
        records.append({"name": "hms", "version": version, "file": hms_file.name, "source": source})
        log(f"[kit] hms {version}: {hms_file.name} ({source})")
        for dep in kit_dependencies(meta.get_all("Requires-Dist") or [], base_file, target):
            path, source = fetch_wheel(dep, target, wheels)
            records.append(
                {"name": dep.name, "version": dep.version, "file": path.name, "source": source,
                 "required_by": dep.required_by}
            )  # fmt: skip
            log(f"[kit] {dep.name} {dep.version} (for {dep.required_by}): {path.name} ({source})")
        for record in records:
            digest = file_digest(wheels / record["file"])
            record.update(size=digest["size"], sha256=digest["sha256"])

        left_out = copy_weights(weights_dir, spec, tmp / WEIGHTS_DIR)
        if left_out:
            shown = ", ".join(left_out[:8]) + (
                f", ... ({len(left_out)} files)" if len(left_out) > 8 else ""
            )
            log(f"[kit] not copied from {weights_dir} (not listed in {ENSEMBLE_FILE}): {shown}")
        (tmp / WEIGHTS_DIR / CARD_FILE).write_text(
            model_card(spec, tmp / WEIGHTS_DIR, table, scores_from, version)
        )
        shutil.copyfile(base_file.path, tmp / BASE_FILE)
        (tmp / NOTEBOOK_FILE).write_text(json.dumps(notebook(kit_name), indent=1) + "\n")
        manifest = {
            "format": KIT_FORMAT,
            "kit_name": kit_name,
            "competition": COMPETITION,
            "hms_version": version,
            "requires_python": requires_python,
            "target": target.to_json(),
            "built": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            "built_with": f"Python {sys.version.split()[0]} on {sysconfig.get_platform()}",
            "base": {"file": BASE_FILE, "image": base_file.image},
            "wheels": records,
            "weights": {
                "dir": WEIGHTS_DIR,
                "name": spec.name,
                "hms_version": spec.hms_version,
                "members": {m: len(spec.checkpoints[m]) for m in spec.members},
                "blended": [m for m in spec.members if spec.weights[m] > 0],
                "size": _size(tmp / WEIGHTS_DIR),
            },
        }
        problems = kit_record_problems(json.loads(json.dumps(manifest)))
        if problems:  # the notebook would refuse it: a bug of this builder, not bad input
            raise RuntimeError(f"the kit's record is not one its notebook reads: {problems}")
        (tmp / README_FILE).write_text(readme(manifest))
        (tmp / KIT_FILE).write_text(json.dumps(manifest, indent=2) + "\n")
        tmp.chmod(0o777 & ~_umask())  # mkdtemp made it private; a kit is meant to be shared
        total = _size(tmp)
    wheel_bytes = sum(r["size"] for r in records)
    log(
        f"[kit] wrote {out_dir}: {_mib(total)} ({len(records)} wheels {_mib(wheel_bytes)}, "
        f"weights {_mib(manifest['weights']['size'])}) in {time.perf_counter() - t0:.1f} s"
    )
    return manifest


def readme(manifest: dict[str, Any]) -> str:
    """The kit's README.md, from ``kaggle_files/README.md``."""
    weights = manifest["weights"]
    members = ", ".join(
        f"{m} ({k} fold{'s' if k != 1 else ''}{'' if m in weights['blended'] else ', not run'})"
        for m, k in weights["members"].items()
    )
    wheels = "\n".join(
        f"| {w['file']} | {w['size'] / 2**20:.2f} | {w['source']} |" for w in manifest["wheels"]
    )
    template = string.Template((FILES / "README.md").read_text())
    return template.substitute(
        kit_name=manifest["kit_name"],
        competition=manifest["competition"],
        hms_version=manifest["hms_version"],
        target=manifest["target"]["description"],
        requires_python=manifest["requires_python"] or "any",
        image=manifest["base"]["image"],
        ensemble=weights["name"],
        members=members,
        n_checkpoints=sum(k for m, k in weights["members"].items() if m in weights["blended"]),
        weights_mib=f"{weights['size'] / 2**20:,.1f}",
        wheels=wheels,
        built=manifest["built"],
    )
