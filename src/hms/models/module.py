"""``HMSModule``: one LightningModule for every model family.

It holds only primitive hyperparameters — the network's import path and keyword arguments, the
augmentations, the optimiser and schedule — so ``HMSModule.load_from_checkpoint(path)`` rebuilds
any run without Hydra or the config files. The loss is the competition's KL divergence; the
validation scores (``val/kl`` on all samples, ``val/kl_hq`` on those with >= 10 votes, and the
per-class terms) are computed with ``hms.metrics.kl_summary`` on the whole validation set at
once, exactly as the Kaggle scorer would compute them.

``probabilities`` is the one definition of a prediction: softmax, averaged with the left/right
mirror's under test-time flip; ``HMSModule.predict_proba`` and the TorchScript export use it.
"""

from __future__ import annotations

import importlib
import math
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch
from torch import Tensor, nn

from hms.constants import CLASSES
from hms.metrics import kl_summary, kl_terms
from hms.models.losses import kl_loss, vote_weights
from hms.transforms.augment import Augment, flip_batch

NET_PACKAGE = "hms.models."


def net_class_from(path: str) -> type[nn.Module]:
    """The network class that a config or a checkpoint names, e.g.
    ``"hms.models.spec_cnn.SpecCNN"``.

    Only ``nn.Module`` classes defined in the ``hms.models`` package are accepted: a checkpoint
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
        and issubclass(obj, nn.Module)
        and obj.__module__.startswith(NET_PACKAGE)
    ):
        raise ValueError(
            f"net_class {path!r} is not an hms network: only nn.Module classes defined in the "
            "hms.models package can be built"
        )
    return obj


def probabilities(
    net: Callable[[Mapping[str, Tensor]], Tensor], batch: Mapping[str, Tensor], tta_flip: bool
) -> Tensor:
    """Class probabilities (B, 6) float32 of ``net(batch)`` logits, averaged with those of the
    left/right mirrored batch when ``tta_flip``."""
    probs = torch.softmax(net(batch).float(), dim=-1)
    if tta_flip:
        probs = 0.5 * (probs + torch.softmax(net(flip_batch(batch)).float(), dim=-1))
    return probs


class HMSModule(pl.LightningModule):
    def __init__(
        self,
        name: str,
        net_class: str,
        net: Mapping[str, Any] | None = None,
        augment: Mapping[str, Any] | None = None,
        lr: float = 1e-3,
        weight_decay: float = 1e-2,
        warmup_ratio: float = 0.1,
        min_lr_ratio: float = 0.01,
        vote_weight: float | None = None,
        tta_flip: bool = False,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.net: nn.Module = net_class_from(net_class)(**dict(net or {}))
        self.augment = Augment(**dict(augment or {}))
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
        return tuple(getattr(self.net, "inputs", ("eeg", "spec")))

    def forward(self, batch: Mapping[str, Tensor]) -> Tensor:
        return self.net(batch)

    @torch.no_grad()
    def predict_proba(self, batch: Mapping[str, Tensor]) -> Tensor:
        """Class probabilities (B, 6), averaged with the left/right mirror when ``tta_flip``."""
        return probabilities(self, batch, self.hparams.tta_flip)

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
        decay, no_decay = [], []
        for name, p in self.named_parameters():
            if p.requires_grad:
                (no_decay if p.ndim <= 1 or name.endswith(".bias") else decay).append(p)
        optimizer = torch.optim.AdamW(
            [
                {"params": decay, "weight_decay": self.hparams.weight_decay},
                {"params": no_decay, "weight_decay": 0.0},
            ],
            lr=self.hparams.lr * self.lr_scale,
        )
        total = max(int(self.trainer.estimated_stepping_batches), 1)
        warmup = int(total * self.hparams.warmup_ratio)
        floor = self.hparams.min_lr_ratio

        def schedule(step: int) -> float:
            if step < warmup:
                return (step + 1) / (warmup + 1)
            progress = min((step - warmup) / max(total - warmup, 1), 1.0)
            return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * progress))

        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)
        return {
            "optimizer": optimizer,
            "lr_scheduler": {"scheduler": scheduler, "interval": "step"},
        }
