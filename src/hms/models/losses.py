"""The training loss: KL(target || softmax(logits)), the competition metric on logits.

Terms whose target is zero contribute zero (``xlogy``), so one-hot and sparse vote distributions
give finite losses and gradients.
"""

from __future__ import annotations

from typing import TypeVar

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

Votes = TypeVar("Votes", Tensor, np.ndarray)


def vote_weights(n_votes: Votes, k: float | None) -> Votes | None:
    """``n / (n + k)`` per sample of n votes (``vote_weight: k`` of the nets and of the feature
    baseline): a target drawn from few raters is an unbiased but noisier estimate of the experts'
    distribution, so it weighs less. None (every sample weighs the same) when k is None or <= 0;
    a large k weighs by the vote count."""
    if k is None or k <= 0:
        return None
    n = n_votes.float() if isinstance(n_votes, Tensor) else np.asarray(n_votes, dtype=np.float64)
    return n / (n + float(k))


def _kl_terms(logits: Tensor, target: Tensor) -> Tensor:
    """(B, K) terms target * (log target - log_softmax(logits)), computed in float32."""
    logp = F.log_softmax(logits.float(), dim=-1)
    target = target.float()
    return torch.xlogy(target, target) - target * logp


def kl_loss(logits: Tensor, target: Tensor, weight: Tensor | None = None) -> Tensor:
    """``F.kl_div(log_softmax(logits), target, reduction="batchmean")``, safe for zero targets.

    ``weight`` (B,), if given, makes it a weighted mean over rows (e.g. by number of votes).
    """
    rows = _kl_terms(logits, target).sum(dim=-1)
    if weight is None:
        return rows.mean()
    weight = weight.float()
    return (rows * weight).sum() / weight.sum().clamp_min(torch.finfo(torch.float32).tiny)
