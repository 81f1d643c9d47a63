"""The optimiser and learning-rate schedule of training, chosen in config.

``HMSModule`` keeps them as primitive hyperparameters, each a Hydra ``_partial_`` target
(``conf/optimizer/*.yaml``, ``conf/scheduler/*.yaml``)::

    optimizer: {_target_: torch.optim.AdamW, _partial_: true, lr: 1.0e-3, weight_decay: 1.0e-2}
    scheduler: {_target_: hms.models.optim.warmup_cosine, _partial_: true, warmup_ratio: 0.1}

and builds them when training starts: ``build_optimizer`` hands the optimiser two parameter
groups (weight decay on weights, none on biases and normalisation parameters) and the stage's
learning rate; ``build_scheduler`` hands the schedule the optimiser and the number of steps.
A checkpoint is a file from a stranger and a resumed run builds what it names, so only targets
in ``torch.optim`` (optimisers and schedulers) and in ``hms.models.optim`` are built.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch import nn

ALLOWED_PREFIXES = ("torch.optim.", "hms.models.optim.")
DEFAULT_OPTIMIZER = {"_target_": "torch.optim.AdamW", "_partial_": True, "lr": 1e-3,
                     "weight_decay": 1e-2}  # fmt: skip
DEFAULT_SCHEDULER = {"_target_": "hms.models.optim.warmup_cosine", "_partial_": True,
                     "warmup_ratio": 0.1, "min_lr_ratio": 0.01}  # fmt: skip


def _partial(spec: Mapping[str, Any], what: str) -> Callable[..., Any]:
    """The callable a ``_partial_`` target names, with its keyword arguments bound."""
    from hydra.utils import instantiate  # training only: inference never builds an optimiser

    target = spec.get("_target_")
    if not isinstance(target, str) or not target.startswith(ALLOWED_PREFIXES):
        raise ValueError(
            f"{what} target {target!r} is not allowed: only {list(ALLOWED_PREFIXES)} are built"
        )
    built = instantiate({**spec, "_partial_": True})
    if not callable(built):
        raise ValueError(f"{what} target {target!r} did not give a callable")
    return built


def parameter_groups(module: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """Weights decay; biases and normalisation parameters (1-D tensors) do not."""
    decay, no_decay = [], []
    for name, p in module.named_parameters():
        if p.requires_grad:
            (no_decay if p.ndim <= 1 or name.endswith(".bias") else decay).append(p)
    return [
        {"params": decay, "weight_decay": weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]


def build_optimizer(
    spec: Mapping[str, Any], module: nn.Module, lr_scale: float = 1.0
) -> torch.optim.Optimizer:
    """The optimiser of ``spec`` over ``module``'s parameters, at ``lr_scale`` times its lr."""
    spec = dict(spec)
    lr = float(spec.pop("lr", DEFAULT_OPTIMIZER["lr"]))
    weight_decay = float(spec.pop("weight_decay", 0.0))
    make = _partial(spec, "optimizer")
    return make(parameter_groups(module, weight_decay), lr=lr * lr_scale)


def build_scheduler(
    spec: Mapping[str, Any], optimizer: torch.optim.Optimizer, total_steps: int
) -> torch.optim.lr_scheduler.LRScheduler:
    """The per-step schedule of ``spec``; a ``hms.models.optim`` schedule also gets the
    number of steps (``total_steps``)."""
    make = _partial(spec, "scheduler")
    if str(spec.get("_target_", "")).startswith("hms.models.optim."):
        return make(optimizer, total_steps=total_steps)
    return make(optimizer)


def warmup_cosine(
    optimizer: torch.optim.Optimizer,
    total_steps: int,
    warmup_ratio: float = 0.1,
    min_lr_ratio: float = 0.01,
) -> torch.optim.lr_scheduler.LambdaLR:
    """Linear warm-up over ``warmup_ratio`` of the steps, then a cosine down to
    ``min_lr_ratio`` of the learning rate."""
    total = max(int(total_steps), 1)
    warmup = int(total * warmup_ratio)

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / (warmup + 1)
        progress = min((step - warmup) / max(total - warmup, 1), 1.0)
        return min_lr_ratio + (1 - min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
