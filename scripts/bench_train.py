"""Training throughput per model: samples/s of the data pipeline, of the model, and of both.

For each model config it composes the real training config (``conf/train.yaml`` plus the Hydra
overrides given), builds the real ``HMSDataModule`` and ``HMSModule``, and measures

- ``data``: samples/s of the training DataLoader alone (random windows read from the cache, with
  ``data.num_workers`` workers), iterated without a model;
- ``model``: samples/s of forward + backward + AdamW step (augmentation and on-device spectrograms
  included) on batches already on the device, with the trainer's precision (bf16 autocast on a
  GPU with ``trainer=gpu``) and channels-last when the config asks for it;
- ``train``: samples/s of the two together, the loader feeding the model as in ``trainer.fit``;

and the ratio data/model (>= 3 means the loader keeps the model fed). Run from the repository root:

    python scripts/bench_train.py --models effnet_b0 resnet1d_gru data.data_dir=data/demo
    python scripts/bench_train.py --device cuda --batch-size 64 trainer=gpu data.num_workers=8

Results go to stdout as a Markdown table (and to ``--json`` if given).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import torch
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate

from hms.cli import conf_dir, model_names
from hms.models.losses import kl_loss
from hms.models.module import autocast_for, net_class_from


def gradient_models() -> list[str]:
    """Every ``conf/model/*.yaml`` trained by gradient steps (one-pass members have no step)."""
    names = []
    with initialize_config_dir(config_dir=str(conf_dir()), version_base="1.3"):
        for name in model_names():
            cfg = compose("train", overrides=[f"model={name}"])
            if not net_class_from(cfg.model.net_class).one_pass:
                names.append(name)
    return names


MODELS = gradient_models()


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _to(batch: dict, device: torch.device) -> dict:
    return {k: v.to(device, non_blocking=True) for k, v in batch.items()}


def _cycle(loader):
    """The loader's batches, starting over when it is exhausted."""
    while True:
        yield from loader


def bench_data(loader, n_batches: int) -> tuple[float, dict]:
    """Samples/s of the loader (after its first batch, which starts the workers)."""
    it = _cycle(loader)
    first = next(it)
    n, t0 = 0, time.perf_counter()
    for _ in range(n_batches):
        batch = next(it)
        n += len(batch["target"])
    return n / (time.perf_counter() - t0), first


def _step(module, optimizer, batch, device, precision) -> None:
    with autocast_for(device, precision):
        augmented = module.augment(batch)
        loss = kl_loss(module(augmented), augmented["target"])
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()


def bench_model(module, batch, device, precision, steps: int, warmup: int) -> float:
    optimizer = torch.optim.AdamW(module.parameters(), lr=1e-4)
    module.train()
    batch = _to(batch, device)
    for _ in range(warmup):
        _step(module, optimizer, batch, device, precision)
    _sync(device)
    t0 = time.perf_counter()
    for _ in range(steps):
        _step(module, optimizer, batch, device, precision)
    _sync(device)
    return steps * len(batch["target"]) / (time.perf_counter() - t0)


def bench_train(module, loader, device, precision, steps: int) -> float:
    optimizer = torch.optim.AdamW(module.parameters(), lr=1e-4)
    module.train()
    it = _cycle(loader)
    _step(module, optimizer, _to(next(it), device), device, precision)
    _sync(device)
    n, t0 = 0, time.perf_counter()
    for _ in range(steps):
        batch = next(it)
        _step(module, optimizer, _to(batch, device), device, precision)
        n += len(batch["target"])
    _sync(device)
    return n / (time.perf_counter() - t0)


def run(model: str, args: argparse.Namespace) -> dict:
    overrides = [f"model={model}", "pretrained=false", *args.overrides]
    if not any(o.startswith("experiment=") for o in args.overrides):
        overrides.append("experiment=none")  # the seed's input sizes unless a recipe is given
    if args.batch_size:
        overrides.append(f"data.batch_size={args.batch_size}")
    with initialize_config_dir(config_dir=str(conf_dir()), version_base="1.3"):
        cfg = compose("train", overrides=overrides)
    device = torch.device(args.device)
    precision = str(cfg.trainer.get("precision"))
    torch.manual_seed(0)
    dm = instantiate(cfg.data)
    dm.prepare_data()
    dm.setup()
    dm.set_stage(1)
    loader = dm.train_dataloader()
    module = instantiate(cfg.model, _convert_="all").to(device)
    if cfg.channels_last and device.type == "cuda":
        module.net.to(memory_format=torch.channels_last)
    if cfg.compile:
        module.net = torch.compile(module.net)
    if module.net.needs_fitting:
        module.net.fit_normalization([_to(next(iter(loader)), device)])

    data_rate, first = bench_data(loader, args.data_batches)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    model_rate = bench_model(module, first, device, precision, args.steps, args.warmup)
    peak = torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None
    train_rate = bench_train(module, loader, device, precision, args.steps)
    with torch.no_grad():
        encoded = module.net.encode(_to(first, device))
    return {
        "model": model,
        "batch_size": int(cfg.data.batch_size),
        "input": list(encoded.shape[1:]),
        "num_workers": int(cfg.data.num_workers),
        "precision": precision if device.type == "cuda" else "32-true",
        "channels_last": bool(cfg.channels_last and device.type == "cuda"),
        "data_samples_s": round(data_rate, 1),
        "model_samples_s": round(model_rate, 1),
        "train_samples_s": round(train_rate, 1),
        "data_over_model": round(data_rate / model_rate, 2),
        "model_ms_per_sample": round(1000 / model_rate, 2),
        "data_ms_per_sample": round(1000 / data_rate, 2),
        "peak_gpu_gib": None if peak is None else round(peak, 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=MODELS)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--batch-size", type=int, default=0, help="0: the config's")
    parser.add_argument("--steps", type=int, default=10, help="timed optimiser steps")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--data-batches", type=int, default=20)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: default)")
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("overrides", nargs="*", help="Hydra overrides of conf/train.yaml")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if torch.cuda.is_available():
        torch.backends.cudnn.benchmark = True

    device_name = (
        torch.cuda.get_device_name(0)
        if args.device.startswith("cuda")
        else f"CPU ({platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
        f"{torch.get_num_threads()} torch threads)"
    )
    print(f"device: {device_name}; torch {torch.__version__}; overrides: {args.overrides}")
    rows = []
    for model in args.models:
        row = run(model, args)
        rows.append(row)
        print(json.dumps(row), file=sys.stderr, flush=True)
    print()
    print(
        "| model | batch | input (C, H, W) | workers | precision | data samples/s | "
        "model samples/s | train samples/s | data/model |"
    )
    print("| --- | ---: | --- | ---: | --- | ---: | ---: | ---: | ---: |")
    for r in rows:
        print(
            f"| {r['model']} | {r['batch_size']} | {tuple(r['input'])} | {r['num_workers']} | "
            f"{r['precision']}{' + channels_last' if r['channels_last'] else ''} | "
            f"{r['data_samples_s']:.0f} | {r['model_samples_s']:.1f} | "
            f"{r['train_samples_s']:.1f} | {r['data_over_model']:.1f} |"
        )
    if args.json:
        args.json.write_text(json.dumps({"device": device_name, "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
