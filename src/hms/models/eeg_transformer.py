"""A light transformer on the raw EEG: the family added to show what a new family takes
(docs/architecture.md: this file, its config and its demo size).

The derivations (B, C, 10000) are average-pooled (``downsample``), cut into patches of
``patch_s`` seconds that a strided convolution embeds as tokens (50 one-second tokens by
default), given a learned position, read by a pre-norm transformer encoder, and pooled for a
linear head: the mean over all tokens and, with ``centre_pool``, over the tokens of the labelled
central 10 s (``hms.models.pooling``). Attention lets a token compare any two moments of the
window, which suits periodic discharges and evolving rhythms.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from hms.constants import N_CLASSES, SAMPLE_RATE, WINDOW_SAMPLES
from hms.data.montage import DEFAULT_MONTAGE
from hms.models.base import HMSNet
from hms.models.pooling import centre_slice


class EEGTransformer(HMSNet):
    """EEG derivations of ``montage`` -> patch tokens -> transformer encoder -> 6 logits."""

    inputs = ("eeg",)

    def __init__(
        self,
        montage: str = DEFAULT_MONTAGE,
        downsample: int = 4,
        patch_s: float = 1.0,
        dim: int = 64,
        depth: int = 2,
        heads: int = 4,
        mlp_ratio: float = 2.0,
        dropout: float = 0.1,
        input_scale: float = 0.01,
        centre_pool: bool = True,
    ) -> None:
        super().__init__(montage)
        rate = SAMPLE_RATE / downsample
        self.patch = round(patch_s * rate)
        n_tokens = WINDOW_SAMPLES // downsample // self.patch
        if self.patch < 1 or n_tokens < 2 or dim % heads:
            raise ValueError(
                f"need patches of >= 1 sample, >= 2 tokens and dim divisible by heads (got "
                f"patch {self.patch}, {n_tokens} tokens, dim {dim}, heads {heads})"
            )
        self.downsample, self.input_scale, self.centre_pool = downsample, input_scale, centre_pool
        self.embed = nn.Conv1d(self.n_channels, dim, self.patch, stride=self.patch)
        self.position = nn.Parameter(torch.zeros(1, n_tokens, dim))
        nn.init.trunc_normal_(self.position, std=0.02)
        layer = nn.TransformerEncoderLayer(
            dim, heads, int(dim * mlp_ratio), dropout, activation="gelu", batch_first=True,
            norm_first=True,
        )  # fmt: skip
        self.encoder = nn.TransformerEncoder(layer, depth, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Sequential(
            nn.Dropout(dropout), nn.Linear(dim * (2 if centre_pool else 1), N_CLASSES)
        )
        nn.init.normal_(self.head[1].weight, std=1e-3)  # start near the uniform prediction
        nn.init.zeros_(self.head[1].bias)

    def encode(self, batch: Mapping[str, Tensor]) -> Tensor:
        """The ``eeg`` input scaled to about unit size and average-pooled by ``downsample``."""
        eeg = batch["eeg"]
        self.check_eeg(eeg)
        x = eeg.float() * self.input_scale
        return F.avg_pool1d(x, self.downsample) if self.downsample > 1 else x

    def body(self, x: Tensor) -> Tensor:
        tokens = self.embed(x).transpose(1, 2) + self.position  # (B, tokens, dim)
        h = self.norm(self.encoder(tokens))
        parts = [h.mean(dim=1)]
        if self.centre_pool:
            parts.append(h[:, centre_slice(h.shape[1])].mean(dim=1))
        return self.head(torch.cat(parts, dim=1))
