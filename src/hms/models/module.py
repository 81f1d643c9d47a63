"""``HMSModule``: one LightningModule for every model family.

It holds only primitive hyperparameters — the network's import path and keyword arguments, the
augmentations, the optimiser and schedule — so ``HMSModule.load_from_checkpoint(path)`` rebuilds
any run without Hydra or the config files. The loss is the competition's KL divergence; the
validation scores (``val/kl`` on all samples, ``val/kl_hq`` on those with >= 10 votes, and the
per-class terms) are computed with ``hms.metrics.kl_summary`` on the whole validation set at
once, exactly as the Kaggle scorer would compute them.

``probabilities`` is the one definition of a prediction: softmax, averaged with the left/right
mirror's under test-time flip; ``HMSModule.predict_proba`` and the exports use it.
``predict_loader`` runs one module over a loader (out-of-fold scoring in ``hms.training``, every
ensemble prediction in ``hms.inference``).
"""

from __future__ import annotations

import contextlib
import importlib
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch
from torch import Tensor
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from hms.constants import CLASSES
from hms.data.montage import DEFAULT_MONTAGE
from hms.metrics import kl_summary, kl_terms
from hms.models.base import HMSNet, OnePassNet
from hms.models.losses import kl_loss, vote_weights
from hms.models.optim import DEFAULT_OPTIMIZER, DEFAULT_SCHEDULER, build_optimizer, build_scheduler
from hms.transforms.augment import Augment, flip_batch

NET_PACKAGE = "hms.models."
_LEGACY_OPTIM = ("lr", "weight_decay", "warmup_ratio", "min_lr_ratio")


def net_class_from(path: str) -> type[HMSNet]:
    """The network class that a config or a checkpoint names, e.g.
    ``"hms.models.spec_cnn.SpecCNN"``.

    Only ``HMSNet`` classes (``hms.models.base``) defined in the ``hms.models`` package are
    accepted: a checkpoint
    is a file from a stranger, and the name it carries must not reach an arbitrary callable
    (``"subprocess.run"`` with ``net={"args": ...}`` would otherwise run a command). Anything
    else raises ``ValueError``; a name that does not exist raises ``ImportError``.
    """
    if not isinstance(path, str) or not path.startswith(NET_PACKAGE):
        raise ValueError(
            f"net_class {path!r} is not an hms network: only nn.Module classes of the "
            "hms.models package can be built"
        )
    module_name, _, name = path.rpartition(".")
    try:
        obj = getattr(importlib.import_module(module_name), name)
    except (ImportError, AttributeError, ValueError) as exc:
        raise ImportError(f"cannot import {path!r}: {exc}") from exc
    if not (
        isinstance(obj, type)
        and issubclass(obj, HMSNet)
        and obj not in (HMSNet, OnePassNet)
        and obj.__module__.startswith(NET_PACKAGE)
    ):
        raise ValueError(
            f"net_class {path!r} is not an hms network: only HMSNet classes defined in the "
            "hms.models package can be built"
        )
    return obj


def probabilities(
    net: Callable[[Mapping[str, Tensor]], Tensor],
    batch: Mapping[str, Tensor],
    tta_flip: bool,
    montage: str = DEFAULT_MONTAGE,
) -> Tensor:
    """Class probabilities (B, 6) float32 of ``net(batch)`` logits, averaged with those of the
    left/right mirrored batch (its ``eeg`` in ``montage``) when ``tta_flip``."""
    probs = torch.softmax(net(batch).float(), dim=-1)
    if tta_flip:
        flipped = flip_batch(batch, montage)
        probs = 0.5 * (probs + torch.softmax(net(flipped).float(), dim=-1))
    return probs


class HMSModule(pl.LightningModule):
    def __init__(
        self,
        name: str,
        net_class: str,
        net: Mapping[str, Any] | None = None,
        augment: Mapping[str, Any] | None = None,
        optimizer: Mapping[str, Any] | None = None,
        scheduler: Mapping[str, Any] | None = None,
        vote_weight: float | None = None,
        tta_flip: bool = False,
        **legacy: Any,
    ) -> None:
        super().__init__()
        # Checkpoints written before the optimiser was chosen in config name its settings as
        # lr, weight_decay, warmup_ratio and min_lr_ratio: they become AdamW and warmup-cosine.
        unknown = sorted(set(legacy) - set(_LEGACY_OPTIM))
        if unknown:
            raise TypeError(f"HMSModule got unexpected arguments {unknown}")
        if legacy and (optimizer is not None or scheduler is not None):
            raise TypeError(
                f"{sorted(legacy)} belong in the optimizer and scheduler settings (e.g. "
                "optimizer.lr=...), not beside them"
            )
        if optimizer is None:
            optimizer = {**DEFAULT_OPTIMIZER, **{k: legacy[k] for k in ("lr", "weight_decay")
                                                  if k in legacy}}  # fmt: skip
        if scheduler is None:
            scheduler = {**DEFAULT_SCHEDULER, **{k: legacy[k] for k in ("warmup_ratio",
                                                  "min_lr_ratio") if k in legacy}}  # fmt: skip
        self.save_hyperparameters(
            {"name": name, "net_class": net_class, "net": net, "augment": augment,
             "optimizer": dict(optimizer), "scheduler": dict(scheduler),
             "vote_weight": vote_weight, "tta_flip": tta_flip}
        )  # fmt: skip
        self.net: HMSNet = net_class_from(net_class)(**dict(net or {}))
        self.augment = Augment(**dict(augment or {}), montage=self.net.montage)
        self._val: list[dict[str, Tensor]] = []
        self.stage = "stage1"  # set by hms.train; saved in checkpoints so a resume knows where
        self.lr_scale = 1.0  # stage 2 trains with a lower learning rate

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["hms_stage"] = self.stage
        # The weights are in the state dict: rebuilding the architecture must not download.
        net = checkpoint.get("hyper_parameters", {}).get("net")
        if isinstance(net, dict) and "pretrained" in net:
            checkpoint["hyper_parameters"]["net"] = {**net, "pretrained": False}

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        self.stage = checkpoint.get("hms_stage", "stage1")

    # ------------------------------------------------------------------ forward

    @property
    def inputs(self) -> tuple[str, ...]:
        return tuple(self.net.inputs)

    def forward(self, batch: Mapping[str, Tensor]) -> Tensor:
        return self.net(batch)

    @torch.no_grad()
    def predict_proba(self, batch: Mapping[str, Tensor]) -> Tensor:
        """Class probabilities (B, 6), averaged with the left/right mirror when ``tta_flip``."""
        return probabilities(self, batch, self.hparams.tta_flip, self.net.montage)

    # ------------------------------------------------------------------ steps

    def training_step(self, batch: dict[str, Tensor], batch_idx: int) -> Tensor:
        batch = self.augment(batch)
        logits = self(batch)
        loss = kl_loss(
            logits, batch["target"], vote_weights(batch["n_votes"], self.hparams.vote_weight)
        )
        self.log("train/loss", loss, prog_bar=True, on_epoch=True, batch_size=len(logits))
        return loss

    def validation_step(self, batch: dict[str, Tensor], batch_idx: int) -> None:
        logits = self(batch)
        loss = kl_loss(logits, batch["target"])
        self.log("val/loss", loss, batch_size=len(logits), sync_dist=True)
        self._val.append(
            {
                "index": batch["index"].detach(),
                "probs": torch.softmax(logits.float(), dim=-1).detach(),
                "target": batch["target"].detach().float(),
                "n_votes": batch["n_votes"].detach().float(),
            }
        )

    def on_validation_epoch_end(self) -> None:
        if not self._val:
            return
        parts = {k: torch.cat([v[k] for v in self._val]) for k in self._val[0]}
        self._val.clear()
        if self.trainer.world_size > 1:  # gather and drop the padding of the distributed sampler
            parts = {k: self.all_gather(v).flatten(0, 1) for k, v in parts.items()}
        index = parts["index"].cpu().numpy()
        _, first = np.unique(index, return_index=True)
        probs = parts["probs"].cpu().double().numpy()[first]
        probs /= probs.sum(axis=1, keepdims=True)
        target = parts["target"].cpu().double().numpy()[first]
        n_votes = parts["n_votes"].cpu().numpy()[first]
        summary = kl_summary(target, probs, n_votes)
        metrics = {"val/kl_hq": summary.kl_hq}
        for name, value in zip(CLASSES, kl_terms(target, probs).mean(axis=0), strict=True):
            metrics[f"val/kl_{name}"] = float(value)
        self.log("val/kl", summary.kl, prog_bar=True)
        self.log_dict(metrics)

    # ------------------------------------------------------------------ optimisation

    def configure_optimizers(self):
        optimizer = build_optimizer(self.hparams.optimizer, self, self.lr_scale)
        total = int(self.trainer.estimated_stepping_batches)
        scheduler = build_scheduler(self.hparams.scheduler, optimizer, total)
        return {
            "optimizer": optimizer,
            "lr_scheduler": {"scheduler": scheduler, "interval": "step"},
        }


# --------------------------------------------------------------------------- prediction


def autocast_for(device: torch.device, precision: str | None) -> contextlib.AbstractContextManager:
    if device.type == "cuda" and precision and "bf16" in str(precision):
        return torch.autocast("cuda", dtype=torch.bfloat16)
    if device.type == "cuda" and precision and "16" in str(precision):
        return torch.autocast("cuda", dtype=torch.float16)
    return contextlib.nullcontext()


@torch.no_grad()
def predict_loader(
    module: HMSModule,
    loader: DataLoader,
    device: torch.device | str = "cpu",
    precision: str | None = None,
    progress: bool = False,
    desc: str = "predict",
) -> tuple[np.ndarray, np.ndarray]:
    """``(sample indices, probabilities (N, 6) float64, rows summing to 1)`` over a loader."""
    device = torch.device(device)
    module = module.to(device).eval()
    keys = module.inputs
    indices, probs = [], []
    for batch in tqdm(loader, desc=desc, disable=not progress, leave=False):
        inputs = {k: v.to(device, non_blocking=True) for k, v in batch.items() if k in keys}
        with autocast_for(device, precision):
            p = module.predict_proba(inputs)
        indices.append(batch["index"].numpy())
        probs.append(p.float().cpu().numpy())
    if not probs:
        return np.zeros(0, np.int64), np.zeros((0, 6))
    out = np.concatenate(probs).astype(np.float64)
    return np.concatenate(indices), out / out.sum(axis=1, keepdims=True)
