"""Where one training step's time goes, per model family, on the real config and data.

For each model it composes the training config (``conf/train.yaml`` + the Hydra overrides
given), builds the real ``HMSDataModule`` and ``HMSModule``, and times, in ms per batch (median
of ``--repeats``, after a warm-up):

- ``load``: one training batch from the DataLoader (random window, montage, collation);
- ``augment``: the batch augmentations;
- ``encode``: the network's ``encode`` (``hms.models.base.HMSNet``): the on-device spectrograms,
  normalisation, masks and layout of an image model, the scaled and pooled signal of a 1-D
  model, the qEEG features of the feature baseline;
- ``body``: forward + backward of the network's learned part (``body``); none for a member
  fitted in one pass (``one_pass``), which has no gradient step;
- ``optimizer``: the optimiser's step;
- ``step``: augment + forward + loss + backward + optimizer together, as training runs it.

Run from the repository root, on an otherwise idle machine:

    python scripts/profile_step.py experiment=demo --models effnet_b0 resnet1d_gru multispec_b0

(Hydra overrides first: ``--models`` takes every name after it; the default is every
``conf/model/*.yaml``.)
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate

from hms.cli import conf_dir, model_names
from hms.models.losses import kl_loss


def timed(fn: Callable[[], object], repeats: int) -> float:
    """Median wall time of ``fn`` in ms, after one warm-up call."""
    fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return 1000 * statistics.median(times)


def profile(model: str, overrides: list[str], repeats: int) -> dict[str, float]:
    with initialize_config_dir(config_dir=str(conf_dir()), version_base="1.3"):
        cfg = compose("train", overrides=[f"model={model}", "pretrained=false", *overrides])
    torch.manual_seed(0)
    module = instantiate(cfg.model, _convert_="all")
    dm = instantiate(cfg.data, views=list(module.inputs))
    dm.prepare_data()
    dm.setup()
    dm.set_stage(1)
    loader = dm.train_dataloader()
    it = iter(loader)

    def next_batch():
        nonlocal it
        try:
            return next(it)
        except StopIteration:
            it = iter(loader)
            return next(it)

    out = {"batch": float(dm.batch_size), "load": timed(next_batch, repeats)}
    batch = next_batch()
    net = module.net
    if net.needs_fitting:
        net.fit_normalization([batch])
    module.train()
    out["augment"] = timed(lambda: module.augment(batch), repeats)
    aug = module.augment(batch)
    out["encode"] = timed(lambda: net.encode(aug), repeats)
    if net.one_pass:  # fitted once on its features: no gradient step to time
        return out
    encoded = net.encode(aug).detach()
    out["body"] = timed(lambda: net.body(encoded).sum().backward(), repeats)
    params = [p for p in module.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=1e-4)
    for p in params:
        p.grad = torch.zeros_like(p)
    out["optimizer"] = timed(optimizer.step, repeats)

    def step() -> None:
        b = module.augment(batch)
        loss = kl_loss(module(b), b["target"])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    out["step"] = timed(step, repeats)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", nargs="+", default=model_names())
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("overrides", nargs="*", help="Hydra overrides of conf/train.yaml")
    args = parser.parse_args()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; {args.overrides}")
    keys = ["load", "augment", "encode", "body", "optimizer", "step"]
    print(f"| model | batch | {' | '.join(keys)} | samples/s (step) |")
    print("| --- | ---: |" + " ---: |" * (len(keys) + 1))
    for model in args.models:
        r = profile(model, args.overrides, args.repeats)
        cells = [f"{r[k]:.0f}" if k in r else "" for k in keys]
        rate = f"{1000 * r['batch'] / r['step']:.0f}" if "step" in r else ""
        print(f"| {model} | {r['batch']:.0f} | {' | '.join(cells)} | {rate} |", flush=True)


if __name__ == "__main__":
    main()
