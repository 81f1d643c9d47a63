"""Speed of ``hms.predict`` for the full seed ensemble: test EEGs per second, end to end.

It builds a weights folder of the seed ensemble (effnet_b0, resnet1d_gru, multispec_b0,
multispec_b1) with ``--folds`` checkpoints per member at the input sizes of the chosen recipe
(default: the seed's sizes, no experiment; ``--experiment demo`` for the CPU-sized models). The
networks are freshly initialised (throughput does not depend on the weights; a multispec_b1 with
dataset normalisation gets unit statistics). Then it times ``hms.submission.predict`` on the
test split of ``--data-dir`` twice: the first run includes building the test cache, the second
reuses it, so the difference is the cost of preprocessing. Run from the repository root:

    python scripts/bench_predict.py --data-dir data/demo --folds 5
    python scripts/bench_predict.py --data-dir data/demo --folds 5 --device cuda --batch-size 64
    python scripts/bench_predict.py --data-dir data/demo --folds 1 --backends torch onnx

``--backends torch onnx`` also exports the weights (``python -m hms.export format=onnx``) and
times the ONNX folder run by onnxruntime on the same test split (the export is not timed);
``--keep DIR`` keeps both weights folders (for ``scripts/bench_annotate.py``).
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time
from pathlib import Path

import pandas as pd
import torch

from bench_weights import write_weights
from hms.submission import predict

SEED = {"effnet_b0": 0.50, "resnet1d_gru": 0.15, "multispec_b0": 0.175, "multispec_b1": 0.175}


def time_predict(args: argparse.Namespace, weights: Path, work: Path) -> list[float]:
    """Two runs of predict: with the test cache built, and reusing it."""
    times = []
    for _ in range(2):
        t0 = time.perf_counter()
        predict(
            args.data_dir,
            weights,
            work / "submission.csv",
            device=args.device,
            batch_size=args.batch_size,
            num_workers=args.num_workers,
            tta_flip=None,  # the checkpoints' own setting (--tta-flip), exported with them
            cache_dir=work / "cache",
            workers=2,
            progress=False,
        )
        times.append(time.perf_counter() - t0)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", type=Path, default=Path("data/demo"))
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--experiment", default=None, help="e.g. demo (default: seed sizes)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--num-workers", type=int, default=2)
    parser.add_argument("--tta-flip", action="store_true")
    parser.add_argument(
        "--backends", nargs="+", default=["torch"], choices=["torch", "onnx"],
        help="onnx: the same weights exported (python -m hms.export format=onnx), run by "
        "onnxruntime (the export's time is not counted)",
    )  # fmt: skip
    parser.add_argument("--keep", type=Path, default=None, help="keep the weights folders here")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="hms-bench-predict-") as tmp:
        work = args.keep or Path(tmp)
        torch_weights = work / "weights"
        write_weights(torch_weights, SEED, args.folds, args.experiment, args.tta_flip, "seed")
        n_test = len(pd.read_csv(args.data_dir / "test.csv"))
        results = {}
        for backend in args.backends:
            weights = torch_weights
            if backend == "onnx":
                from hms.onnx_export import export_onnx

                weights = export_onnx(torch_weights, work / "onnx", log=lambda _: None)
            results[backend] = time_predict(args, weights, work)
    device = (
        torch.cuda.get_device_name(0)
        if torch.cuda.is_available() and args.device != "cpu"
        else f"CPU ({platform.machine()}, {os.cpu_count()} cores, "
        f"{torch.get_num_threads()} threads)"
    )
    n_ckpt = len(SEED) * args.folds
    print(f"device: {device}; torch {torch.__version__}")
    print(
        f"seed ensemble, {n_ckpt} checkpoints ({args.folds} folds x 4 members), "
        f"sizes: {args.experiment or 'seed'}, tta_flip={args.tta_flip}, {n_test} test EEGs"
    )
    for backend, times in results.items():
        print(
            f"{backend}: with cache build: {times[0]:.1f} s = {n_test / times[0]:.2f} test EEGs/s"
        )
        print(
            f"{backend}: cache reused:     {times[1]:.1f} s = {n_test / times[1]:.2f} test EEGs/s"
        )


if __name__ == "__main__":
    main()
