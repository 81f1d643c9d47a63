"""Where one training step's time goes, per model family, on the real config and data.

For each model it composes the training config (``conf/train.yaml`` + the Hydra overrides
given), builds the real ``HMSDataModule`` and ``HMSModule``, and times, in ms per batch (median
of ``--repeats``, after a warm-up):

- ``load``: one training batch from the DataLoader (random window, montage, collation);
- ``augment``: the batch augmentations;
- for the image models: ``spectrogram`` (the on-device spectrograms of every view), ``image``
  (normalisation, masks, layout, resize) and ``backbone`` (forward + backward of the CNN);
- for the ResNet1D-GRU: ``conv`` (stem and residual blocks) and ``gru`` (the recurrent layer and
  head), each forward + backward;
- for the feature baseline: ``features`` (the qEEG features of the batch, no gradient);
- ``optimizer``: the AdamW step;
- ``step``: augment + forward + loss + backward + optimizer together, as training runs it.

Run from the repository root, on an otherwise idle machine:

    python scripts/profile_step.py experiment=demo --models effnet_b0 resnet1d_gru multispec_b0

(Hydra overrides first: ``--models`` takes every name after it.)
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate

from hms.cli import conf_dir
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
    norms = getattr(net, "norms", {})
    if any(getattr(n, "mode", "") == "dataset" for n in norms.values()):
        net.fit_normalization([batch])
    module.train()
    out["augment"] = timed(lambda: module.augment(batch), repeats)
    aug = module.augment(batch)
    if hasattr(net, "backbone"):  # SpecCNN
        out["spectrogram"] = timed(lambda: [net.raw_maps(aug, v) for v in net.views], repeats)
        out["image"] = timed(lambda: net.image(aug), repeats) - out["spectrogram"]
        image = net.image(aug).detach()
        out["backbone"] = timed(lambda: net.backbone(image).sum().backward(), repeats)
    elif hasattr(net, "gru"):  # ResNet1DGRU
        out["conv"] = timed(lambda: net.blocks(_stem(net, aug["eeg"])).sum().backward(), repeats)
        feats = net.blocks(_stem(net, aug["eeg"])).detach().requires_grad_()

        def gru() -> None:
            h, _ = net.gru(feats.transpose(1, 2))
            net.head(net.pool(h)).sum().backward()

        out["gru"] = timed(gru, repeats)
    elif hasattr(net, "features"):  # FeatureGBM: no gradient step, only its features
        out["features"] = timed(lambda: net.features(aug["eeg"]), repeats)
        return out
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


def _stem(net, eeg: torch.Tensor) -> torch.Tensor:
    """The ResNet1D-GRU's input scaling, pooling and multi-kernel stem (``features`` up to the
    blocks)."""
    x = eeg.float() * net.input_scale
    if net.downsample > 1:
        x = torch.nn.functional.avg_pool1d(x, net.downsample)
    return torch.relu(net.stem_bn(torch.cat([conv(x) for conv in net.stem], dim=1)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", nargs="+", default=["effnet_b0", "resnet1d_gru"])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("overrides", nargs="*", help="Hydra overrides of conf/train.yaml")
    args = parser.parse_args()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; {args.overrides}")
    keys = ["load", "augment", "spectrogram", "image", "backbone", "conv", "gru", "features"]
    keys += ["optimizer", "step"]
    print(f"| model | batch | {' | '.join(keys)} | samples/s (step) |")
    print("| --- | ---: |" + " ---: |" * (len(keys) + 1))
    for model in args.models:
        r = profile(model, args.overrides, args.repeats)
        cells = [f"{r[k]:.0f}" if k in r else "" for k in keys]
        rate = f"{1000 * r['batch'] / r['step']:.0f}" if "step" in r else ""
        print(f"| {model} | {r['batch']:.0f} | {' | '.join(cells)} | {rate} |", flush=True)


if __name__ == "__main__":
    main()
