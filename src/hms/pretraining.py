"""Self-supervised pretraining of an image member's backbone on unlabelled EEG windows.

The pretext task: from a window's image as the member builds it (effnet_b0's EEG spectrograms,
or multispec's Kaggle and EEG maps side by side), the backbone's pooled features predict the
qEEG features that ``hms.models.features.EEGFeatures`` computes from the same window's signal
(band powers and their ratios per chain, spectral edge and peak frequency, periodicity from the
autocorrelation, left/right asymmetry and correlation). The targets come from the recording
itself, so no vote is read: any unlabelled EEG serves, and the windows are drawn at random from
the samples of the train split (every fold: the validation folds' signals without their votes).
Each feature is standardised by its median and interquartile range over the first batches and
clipped at +-5, so that no heavy-tailed power dominates the smooth L1 loss.

Why: on the built-in data the image members start from random weights and learn slowly
(docs/learning.md section 8); the baseline's features are what they miss. The result is a file
that timm loads as pretrained weights (``pretrained=true pretrained_file=FILE``): the
backbone's state dict without its classifier, written atomically, with its provenance in a JSON
file beside it. A GPU user with ImageNet weights can pretrain on top of them the same way.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from hydra.utils import instantiate
from omegaconf import DictConfig
from torch import Tensor, nn
from torch.utils.data import DataLoader

from hms import runs
from hms.data.cache import fingerprint
from hms.data.datamodule import HMSDataModule
from hms.data.dataset import VIEWS, CacheDataset
from hms.data.io import HMSLayout, atomic_path, check_writable, file_digest
from hms.errors import HMSDataError, check_int
from hms.models.base import HMSNet
from hms.models.features import EEGFeatures

CLIP = 5.0  # standardised targets are clipped at +-CLIP


def _print(line: str) -> None:
    print(line, flush=True)


@dataclass
class Pretrained:
    """What a pretraining run wrote and measured."""

    path: str
    backbone: str
    epochs: int
    n_samples: int
    n_features: int
    epoch_loss: list[float]
    seconds: float


def pretext_views(net: nn.Module) -> tuple[str, ...]:
    """The dataset views a pretraining batch needs: what the member's image reads, and the EEG
    that the targets are computed from."""
    return tuple(v for v in VIEWS if v == "eeg" or v in tuple(net.inputs))


def unlabelled_loader(
    dm: HMSDataModule, batch_size: int, seed: int, views: tuple[str, ...] = ("eeg",)
) -> DataLoader:
    """A random window of every sample of the train split (all folds) per epoch, with ``views``;
    the votes ride along in the batches but are never read."""
    assert dm.train_cache is not None, "call dm.setup() first"
    index = np.arange(len(dm.train_cache.samples))
    ds = CacheDataset(dm.train_cache, index, dm.window, random_window=True, seed=seed, views=views)
    return DataLoader(ds, batch_size=batch_size, shuffle=True, drop_last=len(ds) > batch_size)


@torch.no_grad()
def target_scale(
    features: nn.Module, batches: Iterable[Mapping[str, Tensor]]
) -> tuple[Tensor, Tensor]:
    """Median and interquartile range of each feature over ``batches``, ignoring values that
    are not finite (a feature undefined on a window, e.g. a ratio over a flat chain)."""
    values = torch.cat([features(b["eeg"].float()) for b in batches])
    values = values.masked_fill(~torch.isfinite(values), float("nan"))
    centre = values.nanmedian(dim=0).values
    spread = values.nanquantile(0.75, dim=0) - values.nanquantile(0.25, dim=0)
    return centre.nan_to_num(0.0), spread.nan_to_num(1.0).clamp_min(1e-6)


def standardised(values: Tensor, centre: Tensor, spread: Tensor) -> Tensor:
    """The regression targets: standardised, clipped at +-CLIP, a value that is not finite at
    the median (0)."""
    z = ((values - centre) / spread).clamp(-CLIP, CLIP)
    return z.nan_to_num(0.0, posinf=CLIP, neginf=-CLIP)


def one_cycle(
    optimizer: torch.optim.Optimizer, lr: float, steps: int
) -> torch.optim.lr_scheduler.LRScheduler:
    """One cycle over ``steps``, warming up over a tenth of them (at least two steps: torch's
    schedule divides by zero when its warm-up is one step); constant at ``lr`` for fewer than
    four steps, which cannot hold a cycle."""
    if steps < 4:
        return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda _: 1.0)
    return torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=lr, total_steps=steps, pct_start=max(0.1, 2.0 / steps)
    )


def pretrain_backbone(
    net: nn.Module,
    loader: DataLoader,
    epochs: int,
    lr: float = 3e-3,
    weight_decay: float = 0.01,
    stats_batches: int = 40,
    log: Callable[[str], None] = _print,
) -> list[float]:
    """Trains ``net.pretrainable_backbone()`` (a ``SpecCNN``'s timm model) in place on the
    feature-regression pretext; returns the mean loss of each epoch. One-cycle schedule, AdamW,
    as training's."""
    features = EEGFeatures(montage=net.montage).eval()

    def first_batches() -> Iterable[Mapping[str, Tensor]]:
        return (b for _, b in zip(range(stats_batches), loader, strict=False))

    centre, spread = target_scale(features, first_batches())
    if net.needs_fitting:  # dataset-wide normalisation of the image: the train split's statistics
        net.fit_normalization(first_batches())
    backbone = net.pretrainable_backbone()
    head = nn.Linear(backbone.num_features, features.n_features)
    params = [*backbone.parameters(), *head.parameters()]
    optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    schedule = one_cycle(optimizer, lr, epochs * len(loader))
    net.train()
    losses: list[float] = []
    start = time.perf_counter()
    for epoch in range(epochs):
        total, n = 0.0, 0
        for batch in loader:
            signals = {k: batch[k].float() for k in {"eeg", *net.inputs}}  # each cast once
            eeg = signals["eeg"]
            with torch.no_grad():
                target = standardised(features(eeg), centre, spread)
            image = net.image({k: signals[k] for k in net.inputs})
            pooled = backbone.forward_features(image).mean(dim=(2, 3))
            loss = F.smooth_l1_loss(head(pooled), target)
            if not math.isfinite(loss.item()):
                raise HMSDataError(None, f"pretraining diverged at epoch {epoch + 1} (loss {loss})")
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
            total += loss.item() * len(eeg)
            n += len(eeg)
        losses.append(total / max(n, 1))
        log(
            f"pretrain epoch {epoch + 1}/{epochs}: loss {losses[-1]:.4f} "
            f"({time.perf_counter() - start:.0f} s)"
        )
    net.eval()
    return losses


def backbone_weights(net: nn.Module) -> dict[str, Tensor]:
    """The backbone's state dict without its classifier: what timm loads as pretrained weights
    for any number of classes (it drops or ignores the classifier keys)."""
    backbone = net.pretrainable_backbone()
    classifier = backbone.default_cfg.get("classifier", "classifier")
    return {
        k: v.detach().clone().contiguous()
        for k, v in backbone.state_dict().items()
        if not k.startswith(f"{classifier}.")
    }


def record_path(path: str | Path) -> Path:
    """The JSON record beside a pretrained weights file."""
    path = Path(path)
    return path.with_name(path.name + ".json")


def save_pretrained(net: nn.Module, path: str | Path, meta: dict[str, Any]) -> Path:
    """Writes the backbone's weights to ``path`` and ``meta`` with the file's SHA-256 to its
    record (``record_path``), each by a rename of a complete temporary file; the weights are
    renamed last, so a record never describes weights that were not written."""
    path = Path(path)
    with atomic_path(path) as tmp:
        torch.save(backbone_weights(net), tmp)
        digest = file_digest(tmp)
        with atomic_path(record_path(path)) as tmp_record:
            tmp_record.write_text(json.dumps({**meta, **digest}, indent=2) + "\n")
    return path


def pretrain(
    net: nn.Module,
    dm: HMSDataModule,
    out: str | Path,
    epochs: int,
    batch_size: int,
    lr: float,
    weight_decay: float,
    seed: int,
    stats_batches: int = 40,
    meta: Mapping[str, Any] | None = None,
    log: Callable[[str], None] = _print,
) -> Pretrained:
    """Pretrains ``net``'s backbone on the unlabelled windows of ``dm``'s train split and writes
    it to ``out`` (with ``out.json``); ``net`` must be an image member (``SpecCNN``). The image is
    the member's own (e.g. multispec's Kaggle and EEG maps side by side); the targets always come
    from the window's EEG, so ``dm`` must serve ``pretext_views(net)``."""
    if not isinstance(net, HMSNet) or net.pretrainable_backbone() is None:
        raise HMSDataError(
            None,
            f"pretraining needs an image member (a network with a pretrainable backbone), not "
            f"{type(net).__name__}",
        )
    views = pretext_views(net)
    if not set(views) <= set(dm.views):
        raise HMSDataError(
            None,
            f"pretraining this member needs the views {list(views)}; the data serves "
            f"{list(dm.views)}",
        )
    torch.manual_seed(seed)
    loader = unlabelled_loader(dm, batch_size, seed, views)
    start = time.perf_counter()
    losses = pretrain_backbone(net, loader, epochs, lr, weight_decay, stats_batches, log)
    seconds = time.perf_counter() - start
    done = Pretrained(
        path=str(Path(out)),
        backbone=type(net.backbone).__name__,
        epochs=epochs,
        n_samples=len(loader.dataset),
        n_features=EEGFeatures(montage=net.montage).n_features,
        epoch_loss=[round(x, 6) for x in losses],
        seconds=round(seconds, 1),
    )
    save_pretrained(net, out, {**asdict(done), **dict(meta or {})})
    return done


def finished_pretraining(cfg: DictConfig) -> Pretrained | None:
    """The pretraining that ``cfg`` (the ``pretrain`` config) asks for, when its file already
    holds it: the record's config digest and train data are this config's, and the weights
    file is the one the record describes. None otherwise."""
    out = Path(cfg.pretrain.out)
    try:
        record = json.loads(record_path(out).read_text())
    except (OSError, ValueError):
        return None
    if record.get("config_sha256") != runs.config_digest(cfg):
        return None
    if record.get("train_inputs") != fingerprint(HMSLayout(cfg.data.data_dir), "train"):
        return None
    if not out.is_file() or file_digest(out) != {k: record.get(k) for k in ("size", "sha256")}:
        return None
    return Pretrained(**{f.name: record[f.name] for f in fields(Pretrained)})


def run_pretraining(cfg: DictConfig, reuse: bool = False) -> Pretrained:
    """The work of ``python -m hms.pretrain``: the ``pretrain`` config (conf/pretrain.yaml:
    training's settings plus its ``pretrain`` block) -> the pretrained backbone's file. With
    ``reuse``, a file that already holds this pretraining (``finished_pretraining``) is kept."""
    settings = cfg.pretrain
    epochs = check_int("pretrain.epochs", settings.epochs, 1)
    check_int("pretrain.stats_batches", settings.stats_batches, 1)
    check_writable(settings.out, "pretrained weights file", folder=False)
    if reuse and (done := finished_pretraining(cfg)) is not None:
        return done
    # seeded before the backbone's random start is drawn: the same config, the same file
    torch.manual_seed(int(cfg.seed))
    module = instantiate(cfg.model, _convert_="all")
    dm = instantiate(cfg.data, views=list(pretext_views(module.net)))
    dm.prepare_data()
    dm.setup()
    meta = {
        "model": cfg.model.name,
        "experiment": cfg.experiment_name,
        "data_dir": str(Path(cfg.data.data_dir).resolve()),
        "train_inputs": dm.train_cache.manifest["inputs"],
        "config_sha256": runs.config_digest(cfg),
    }
    return pretrain(
        module.net,
        dm,
        settings.out,
        epochs=epochs,
        batch_size=cfg.data.batch_size,
        lr=float(settings.lr),
        weight_decay=float(settings.weight_decay),
        seed=int(cfg.seed),
        stats_batches=int(settings.stats_batches),
        meta=meta,
    )
