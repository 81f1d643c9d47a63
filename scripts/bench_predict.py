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
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path

import pandas as pd
import pytorch_lightning as pl
import torch
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from omegaconf import OmegaConf

from hms.blend import ENSEMBLE_FILE, EnsembleSpec
from hms.cli import conf_dir
from hms.submission import predict

SEED = {"effnet_b0": 0.50, "resnet1d_gru": 0.15, "multispec_b0": 0.175, "multispec_b1": 0.175}


def write_weights(out: Path, folds: int, experiment: str | None) -> None:
    checkpoints, data = {}, {}
    for name in SEED:
        overrides = [f"model={name}", "pretrained=false"]
        overrides.append(f"experiment={experiment or 'null'}")  # null: the seed's sizes
        with initialize_config_dir(config_dir=str(conf_dir()), version_base="1.3"):
            cfg = compose("train", overrides=overrides)
        (out / name).mkdir(parents=True)
        checkpoints[name] = []
        for fold in range(folds):
            torch.manual_seed(fold)
            module = instantiate(cfg.model, _convert_="all")
            if module.net.needs_fitting:  # statistics of random inputs: no pass over data
                module.net.fit_normalization([module.net.example_batch(4)])
            ckpt = {
                "state_dict": module.state_dict(),
                "hyper_parameters": dict(module.hparams),
                "pytorch-lightning_version": pl.__version__,
                "hms_stage": "stage2",
            }
            rel = f"{name}/fold{fold}.ckpt"
            torch.save(ckpt, out / rel)
            checkpoints[name].append(rel)
        data[name] = {
            "recording": OmegaConf.to_container(cfg.data.recording, resolve=True),
            "window": OmegaConf.to_container(cfg.data.window, resolve=True),
        }
    ensemble = EnsembleSpec(name="seed", weights=SEED, checkpoints=checkpoints, data=data)
    (out / ENSEMBLE_FILE).write_text(json.dumps(ensemble.to_json(), indent=2))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", type=Path, default=Path("data/demo"))
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--experiment", default=None, help="e.g. demo (default: seed sizes)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--num-workers", type=int, default=2)
    parser.add_argument("--tta-flip", action="store_true")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="hms-bench-predict-") as tmp:
        tmp = Path(tmp)
        write_weights(tmp / "weights", args.folds, args.experiment)
        n_test = len(pd.read_csv(args.data_dir / "test.csv"))
        times = []
        for _ in range(2):
            t0 = time.perf_counter()
            predict(
                args.data_dir,
                tmp / "weights",
                tmp / "submission.csv",
                device=args.device,
                batch_size=args.batch_size,
                num_workers=args.num_workers,
                tta_flip=True if args.tta_flip else None,
                cache_dir=tmp / "cache",
                workers=2,
                progress=False,
            )
            times.append(time.perf_counter() - t0)
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
    print(f"with cache build: {times[0]:.1f} s = {n_test / times[0]:.2f} test EEGs/s")
    print(f"cache reused:     {times[1]:.1f} s = {n_test / times[1]:.2f} test EEGs/s")


if __name__ == "__main__":
    main()
