"""Size and build time of the offline Kaggle kit, and the wall time of its notebook, offline.

For each ensemble asked for (``demo``: effnet_b0, resnet1d_gru, multispec_b0 at the demo's
input sizes; ``seed``: effnet_b0, resnet1d_gru, multispec_b0, multispec_b1 at the seed's full
input sizes) it writes a weights folder of **untrained** networks (``--folds`` checkpoints per
member, inference checkpoints as ``hms.ensemble`` writes them, ``scripts/bench_weights.py``:
the sizes set the kit's size and the speed, the weights do not), or takes a real one
(``--weights NAME=DIR``), then

1. builds the kit with ``python -m hms.export format=kaggle`` (timed, in a fresh process);
2. runs the kit's notebook (``hms.kaggle_kit.run_notebook``: its code cells in order, in a new
   environment holding exactly ``kaggle_base.txt``, no package index, no network where
   ``unshare -rn`` is allowed) on the real test sample (``--kaggle-dir``: 1 EEG) and on
   ``--test-eegs`` test EEGs of the built-in ``full`` preset (generated once into ``--work``
   with ``python -m hms.synth``), each in a fresh environment and working folder;
3. prints one table and writes ``bench_kit.json`` in ``--work``. The estimate for a hidden test
   set scales the per-EEG time of the large run (its wall time less the 1-EEG run's) linearly,
   and says how many test EEGs fit in Kaggle's 9-hour limit.

    python scripts/bench_kit.py --work /tmp/hms_bench_kit
    python scripts/bench_kit.py --work /tmp/hms_bench_kit --ensembles demo --test-eegs 20  # quick
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path

import torch

from bench_weights import configured_weights, write_weights
from hms.blend import ENSEMBLE_FILE
from hms.kaggle_kit import COMPETITION, base_environment, network_cut, run_notebook

# Each conf/ensemble/<name>.yaml's blended members and weights, at the sizes of an experiment.
ENSEMBLES = {
    "demo": (configured_weights("demo"), "demo"),
    "seed": (configured_weights("seed"), None),  # no experiment: the seed's full input sizes
}
KAGGLE_LIMIT_S = 9 * 3600
HERE = Path(__file__).resolve().parents[1]


def write_ensemble(out: Path, name: str, folds: int) -> Path:
    """A weights folder of untrained networks of the ensemble ``name``, ``folds`` each."""
    weights, experiment = ENSEMBLES[name]
    return write_weights(out, weights, folds, experiment, name=name)


def size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def test_split(work: Path, n: int) -> Path:
    """``n`` test EEGs of the built-in ``full`` preset (one train EEG beside them)."""
    data = work / f"full-test{n}"
    if not (data / "synth_meta.json").is_file():
        presets = f"presets={{full: {{train_patients: 1, train_sessions: 1, train_eegs: 1, test_eegs: {n}}}}}"  # noqa: E501
        subprocess.run(
            [sys.executable, "-m", "hms.synth", f"out_dir={data}", "preset=full", "seed=0",
             "progress=false", presets],
            check=True, stdout=subprocess.DEVNULL,
        )  # fmt: skip
    return data


def competition_folder(source: Path, dest: Path) -> None:
    """The test part of an HMS folder, linked as the competition's folder."""
    dest.mkdir(parents=True)
    for name in ("test.csv", "sample_submission.csv", "test_eegs", "test_spectrograms"):
        if (source / name).exists():
            (dest / name).symlink_to(source / name)


def notebook_run(kit: Path, data: Path, work: Path, label: str) -> dict:
    """The kit's notebook on ``data`` in a fresh environment and working folder: wall time."""
    root = work / f"run-{label}"
    shutil.rmtree(root, ignore_errors=True)
    python = base_environment(root / "env")
    competition_folder(data, root / "input" / COMPETITION)
    (root / "input" / kit.name).symlink_to(kit)
    t0 = time.perf_counter()
    done = run_notebook(kit, python, root / "input", root / "working")
    wall = time.perf_counter() - t0
    if done.returncode != 0:
        raise SystemExit(f"the notebook failed on {label}:\n{(done.stdout + done.stderr)[-3000:]}")
    predicted = [
        line for line in done.stdout.splitlines() if line.startswith("prediction:")
    ]  # the notebook's own timing of python -m hms.predict
    n = len((data / "test.csv").read_text().strip().splitlines()) - 1
    return {
        "test_eegs": n,
        "notebook_s": round(wall, 1),
        "predict_s": float(predicted[-1].split()[1]) if predicted else None,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--work", type=Path, required=True, help="a scratch folder (kept)")
    parser.add_argument("--ensembles", nargs="+", default=["demo", "seed"], choices=ENSEMBLES)
    parser.add_argument(
        "--folds", type=int, nargs="+", default=None,
        help="checkpoints per member, one number per ensemble (default: demo 2, seed 5)",
    )  # fmt: skip
    parser.add_argument(
        "--weights", nargs="*", default=[], metavar="NAME=DIR",
        help="a real weights folder for an ensemble instead of untrained networks",
    )  # fmt: skip
    samples = HERE / "tests" / "data" / "kaggle_samples"
    parser.add_argument("--kaggle-dir", type=Path, default=samples)
    parser.add_argument("--test-eegs", type=int, default=1000)
    args = parser.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    folds = args.folds or [2 if name == "demo" else 5 for name in args.ensembles]
    given = dict(item.split("=", 1) for item in args.weights)
    large = test_split(args.work, args.test_eegs)
    load = os.getloadavg()
    results = {
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, torch threads "
        f"{torch.get_num_threads()}, load average before {load[0]:.2f}",
        "network": "unshare -rn" if network_cut() else "PIP_NO_INDEX and dead proxies only",
        "ensembles": {},
    }
    for name, k in zip(args.ensembles, folds, strict=True):
        weights = Path(given[name]) if name in given else args.work / f"weights-{name}-{k}"
        if name not in given and not (weights / ENSEMBLE_FILE).is_file():
            write_ensemble(weights, name, k)
        kit = args.work / f"kit-{name}"
        t0 = time.perf_counter()
        subprocess.run(
            [sys.executable, "-m", "hms.export", "format=kaggle", f"weights_dir={weights}",
             f"out_dir={kit}"],
            check=True, stdout=subprocess.DEVNULL,
        )  # fmt: skip
        build_s = time.perf_counter() - t0
        manifest = json.loads((kit / "hms_kit.json").read_text())
        entry = {
            "weights": str(weights) if name in given else f"untrained, {k} folds",
            "checkpoints": sum(manifest["weights"]["members"].values()),
            "kit_mib": round(size(kit) / 2**20, 1),
            "wheels_mib": round(size(kit / "wheels") / 2**20, 2),
            "weights_mib": round(size(kit / "weights") / 2**20, 1),
            "build_s": round(build_s, 1),
            "sample": notebook_run(kit, args.kaggle_dir, args.work, f"{name}-sample"),
            "large": notebook_run(kit, large, args.work, f"{name}-{args.test_eegs}"),
        }
        small, big = entry["sample"], entry["large"]
        per_eeg = (big["notebook_s"] - small["notebook_s"]) / max(big["test_eegs"] - 1, 1)
        if per_eeg <= 0:  # a large run too small to tell the per-EEG cost from the noise
            entry["per_test_eeg_s"] = entry["test_eegs_in_9h"] = None
        else:
            entry["per_test_eeg_s"] = round(per_eeg, 3)
            entry["test_eegs_in_9h"] = int((KAGGLE_LIMIT_S - small["notebook_s"]) / per_eeg)
        results["ensembles"][name] = entry
        print(json.dumps({name: entry}, indent=2), flush=True)
    (args.work / "bench_kit.json").write_text(json.dumps(results, indent=2))
    print(f"\nmachine: {results['machine']}; network cut: {results['network']}")
    print("| ensemble | checkpoints | kit MiB (wheels, weights) | build s | notebook s, 1 EEG "
          f"| notebook s, {args.test_eegs} EEGs | s per test EEG | test EEGs in 9 h |")  # fmt: skip
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for name, e in results["ensembles"].items():
        print(
            f"| {name} ({e['weights']}) | {e['checkpoints']} | {e['kit_mib']} ({e['wheels_mib']}, "
            f"{e['weights_mib']}) | {e['build_s']} | {e['sample']['notebook_s']} | "
            f"{e['large']['notebook_s']} | {e['per_test_eeg_s'] or '-'} | "
            f"{'-' if e['test_eegs_in_9h'] is None else format(e['test_eegs_in_9h'], ',')} |"
        )


if __name__ == "__main__":
    main()
