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

``--members`` also times each member alone (every fold on one batch of random windows,
``hms.inference.load_members(...).predict_batch``, after a warm-up), windows per second per
backend. ``--folders TORCH_DIR ONNX_DIR`` times existing folders (e.g. the main command's
weights and their export) instead of building untrained ones; then only ``--members`` runs:

    python scripts/bench_predict.py --members --folders outputs/ensembles/demo/demo /tmp/onnx
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

from bench_weights import configured_weights, write_weights
from hms.submission import predict

SEED = configured_weights("seed")  # conf/ensemble/seed.yaml's blended members


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


def time_members(weights: Path, batch_size: int, repeats: int) -> dict[str, float]:
    """Windows per second of each member alone (all its folds, flip TTA as exported) on the CPU."""
    import numpy as np

    from hms.data.montage import get_montage
    from hms.inference import load_members

    _, members = load_members(weights, device="cpu")
    rng = np.random.default_rng(0)
    rates = {}
    for member in members:
        batch = {"spec": (rng.random((batch_size, 300, 400)) * 10).astype(np.float32)}
        channels = get_montage(member.window.montage).n_channels
        batch["eeg"] = (30 * rng.standard_normal((batch_size, channels, 10000))).astype(np.float32)
        batch = {k: v for k, v in batch.items() if k in member.inputs}
        member.predict_batch(batch)  # warm-up
        t0 = time.perf_counter()
        for _ in range(repeats):
            member.predict_batch(batch)
        rates[member.name] = repeats * batch_size / (time.perf_counter() - t0)
    return rates


def print_member_rates(rates: dict[str, dict[str, float]], batch_size: int) -> None:
    names = list(next(iter(rates.values())))
    print(f"members alone, batch {batch_size}, windows/s (all folds):")
    print(
        f"{'member':<16}"
        + "".join(f"{b:>10}" for b in rates)
        + ("  onnx/torch" if len(rates) > 1 else "")
    )
    for name in names:
        row = f"{name:<16}" + "".join(f"{rates[b][name]:>10.1f}" for b in rates)
        if {"torch", "onnx"} <= set(rates):
            row += f"  {rates['onnx'][name] / rates['torch'][name]:>9.2f}x"
        print(row)


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
    parser.add_argument("--members", action="store_true", help="also time each member alone")
    parser.add_argument("--repeats", type=int, default=5, help="batches per member (--members)")
    parser.add_argument(
        "--folders", nargs=2, type=Path, metavar=("TORCH_DIR", "ONNX_DIR"), default=None,
        help="time these existing folders' members (implies --members, skips predict)",
    )  # fmt: skip
    args = parser.parse_args()
    if args.folders:
        rates = {
            backend: time_members(folder, args.batch_size, args.repeats)
            for backend, folder in zip(("torch", "onnx"), args.folders, strict=True)
        }
        print(
            f"torch {torch.__version__}, {torch.get_num_threads()} threads; "
            + " and ".join(map(str, args.folders))
        )
        print_member_rates(rates, args.batch_size)
        return

    with tempfile.TemporaryDirectory(prefix="hms-bench-predict-") as tmp:
        work = args.keep or Path(tmp)
        torch_weights = work / "weights"
        write_weights(torch_weights, SEED, args.folds, args.experiment, args.tta_flip, "seed")
        n_test = len(pd.read_csv(args.data_dir / "test.csv"))
        results, member_rates = {}, {}
        for backend in args.backends:
            weights = torch_weights
            if backend == "onnx":
                from hms.onnx_export import export_onnx

                weights = export_onnx(torch_weights, work / "onnx", log=lambda _: None)
            results[backend] = time_predict(args, weights, work)
            if args.members:
                member_rates[backend] = time_members(weights, args.batch_size, args.repeats)
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
    if member_rates:
        print_member_rates(member_rates, args.batch_size)


if __name__ == "__main__":
    main()
