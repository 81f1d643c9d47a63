"""Run a kit's notebook against the package versions of Kaggle's image, offline.

The kit's test runs the notebook in an environment holding the base packages at the versions of
this machine (pandas 3, Lightning 2.6.6, ...). This script builds an environment holding each
base package at the version Kaggle's image holds (``# image: X`` in ``kaggle_base.txt``:
pandas 2.3.3, timm 1.0.26, pytorch-lightning 2.6.4, mne 1.12.1, scikit-learn 1.6.1, ...),
installed from the package index, runs the kit's notebook there with the network cut on the
real test sample, and compares its ``submission.csv`` with ``hms.submission.predict`` here.

What it cannot match: the Python (this interpreter's, Kaggle's is 3.12) and torch, torchaudio
and torchvision, which are linked from this environment (the image's ``2.10.0+cpu`` builds are
on download.pytorch.org only).

    python scripts/kaggle_image_check.py --kit /tmp/kit --work /tmp/kaggle_image_env
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
from packaging.utils import canonicalize_name

from hms.constants import VOTE_COLUMNS
from hms.kaggle_kit import (
    BASE_FILE,
    COMPETITION,
    installed_closure,
    read_base,
    run_notebook,
)
from hms.submission import predict

LINKED = ("torch", "torchvision")  # the image's +cpu builds are not on PyPI
HERE = Path(__file__).resolve().parents[1]


def image_environment(root: Path, base_file: Path) -> Path:
    """A virtual environment of the image's versions of the base (torch linked from here)."""
    python = root / "bin" / "python"
    if python.is_file():
        return python
    subprocess.run([sys.executable, "-m", "venv", str(root)], check=True)
    site = Path(
        subprocess.run(
            [python, "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
            capture_output=True, text=True, check=True,
        ).stdout.strip()
    )  # fmt: skip
    base = read_base(base_file)
    pinned = {
        canonicalize_name(b.requirement.name): b.image_version.split("+")[0]
        for b in base.requirements
        if b.image_version and canonicalize_name(b.requirement.name) not in LINKED
    }
    # torch and what it loads (CUDA libraries included), except what the image pins itself.
    for name, dist in installed_closure(LINKED).items():
        if name in pinned:
            continue
        for rel in dist.files or ():
            link = Path(os.path.normpath(site / rel))
            source = Path(dist.locate_file(rel))
            if site in link.parents and not link.exists() and source.exists():
                link.parent.mkdir(parents=True, exist_ok=True)
                link.symlink_to(source)
    pip = [python, "-m", "pip", "install", "--quiet"]
    subprocess.run([*pip, f"pip=={pinned.pop('pip')}"], check=True)
    subprocess.run([*pip, *(f"{name}=={version}" for name, version in pinned.items())], check=True)
    return python


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--kit", type=Path, required=True, help="a kit (hms.export format=kaggle)")
    parser.add_argument("--work", type=Path, required=True, help="a scratch folder (kept)")
    samples = HERE / "tests" / "data" / "kaggle_samples"
    parser.add_argument("--kaggle-dir", type=Path, default=samples)
    args = parser.parse_args()
    python = image_environment(args.work / "env", args.kit / BASE_FILE)
    versions = subprocess.run(
        [python, "-m", "pip", "list", "--format=freeze"], capture_output=True, text=True
    ).stdout.split()
    wanted = {
        canonicalize_name(b.requirement.name) for b in read_base(args.kit / BASE_FILE).requirements
    }
    print(
        "environment:",
        ", ".join(v for v in versions if canonicalize_name(v.split("==")[0]) in wanted),
    )
    run = args.work / "run"
    shutil.rmtree(run, ignore_errors=True)
    data = run / "input" / COMPETITION
    data.mkdir(parents=True)
    for name in ("test.csv", "sample_submission.csv", "test_eegs", "test_spectrograms"):
        (data / name).symlink_to(args.kaggle_dir / name)
    (run / "input" / args.kit.name).symlink_to(args.kit.resolve())
    done = run_notebook(args.kit, python, run / "input", run / "working")
    print(done.stdout[-3000:], done.stderr[-3000:])
    if done.returncode != 0:
        raise SystemExit(f"the notebook failed (exit status {done.returncode})")
    got = pd.read_csv(run / "working" / "submission.csv")
    want = predict(data, args.kit / "weights", None, device="cpu", progress=False)
    diff = np.abs(got[list(VOTE_COLUMNS)].to_numpy() - want[list(VOTE_COLUMNS)].to_numpy()).max()
    print(f"max abs difference from hms.predict here: {diff:.2e}")


if __name__ == "__main__":
    main()
