"""1-D CNN + GRU on the raw bipolar signals (the seed's "ResNet1D-GRU").

The multi-kernel stem looks at several time scales at once (spikes to slow waves), residual blocks
halve the time axis while widening the channels, and a bidirectional GRU reads the sequence of
features; mean and max pooling over time feed a linear head. The defaults (100-Hz input,
5 blocks, 156 GRU steps) give 1.13 M parameters and train on a CPU at a usable pace.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from hms.constants import N_CLASSES
from hms.data.montage import DEFAULT_MONTAGE, get_montage, montage_name
from hms.models.base import HMSNet
from hms.models.pooling import centre_slice


class ResBlock1d(nn.Module):
    """conv-BN-ReLU-dropout-conv-BN plus shortcut, ReLU, then max-pool by ``pool``."""

    def __init__(
        self, c_in: int, c_out: int, kernel_size: int = 3, pool: int = 2, dropout: float = 0.0
    ) -> None:
        super().__init__()
        pad = kernel_size // 2
        self.conv1 = nn.Conv1d(c_in, c_out, kernel_size, padding=pad, bias=False)
        self.bn1 = nn.BatchNorm1d(c_out)
        self.drop = nn.Dropout(dropout)
        self.conv2 = nn.Conv1d(c_out, c_out, kernel_size, padding=pad, bias=False)
        self.bn2 = nn.BatchNorm1d(c_out)
        self.shortcut = (
            nn.Identity()
            if c_in == c_out
            else nn.Sequential(nn.Conv1d(c_in, c_out, 1, bias=False), nn.BatchNorm1d(c_out))
        )
        self.pool = nn.MaxPool1d(pool) if pool > 1 else nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        y = self.drop(F.relu(self.bn1(self.conv1(x))))
        y = self.bn2(self.conv2(y))
        return self.pool(F.relu(y + self.shortcut(x)))


class ResNet1DGRU(HMSNet):
    """EEG derivations of ``montage`` (B, C, T) -> 6 logits.

    ``downsample`` average-pools the input first (2: 200 -> 100 Hz, enough for signals band-passed
    below 20 Hz); ``input_scale`` brings µV to about unit scale. Each of ``block_channels`` is a
    residual block that halves the time axis; the GRU is bidirectional. The head reads the mean
    and maximum of the GRU outputs over the window and, with ``centre_pool``, also over the
    labelled central 10 s. ``montage`` sets the input channels; ``in_channels`` (the channel
    count of checkpoints written before montages had names, 16 or 18 for the double banana)
    must agree with it when given.
    """

    inputs = ("eeg",)

    def __init__(
        self,
        in_channels: int | None = None,
        stem_kernels: Sequence[int] = (3, 7, 15, 31),
        stem_channels: int = 16,
        block_channels: Sequence[int] = (64, 96, 128, 160, 192),
        block_kernel: int = 3,
        gru_hidden: int = 128,
        gru_layers: int = 2,
        dropout: float = 0.3,
        downsample: int = 2,
        input_scale: float = 0.01,
        centre_pool: bool = False,
        montage: str | None = None,
    ) -> None:
        if montage is None:
            montage = montage_name(in_channels == 18) if in_channels else DEFAULT_MONTAGE
        super().__init__(montage)
        if in_channels is not None and in_channels != get_montage(montage).n_channels:
            raise ValueError(
                f"in_channels={in_channels}, but montage {montage!r} has "
                f"{get_montage(montage).n_channels} channels"
            )
        in_channels = self.n_channels
        if any(k % 2 == 0 for k in stem_kernels) or block_kernel % 2 == 0:
            raise ValueError("kernel sizes must be odd, so that convolutions keep the length")
        self.in_channels, self.downsample, self.input_scale = in_channels, downsample, input_scale
        self.stem = nn.ModuleList(
            nn.Conv1d(in_channels, stem_channels, k, padding=k // 2, bias=False)
            for k in stem_kernels
        )
        width = stem_channels * len(stem_kernels)
        self.stem_bn = nn.BatchNorm1d(width)
        blocks = []
        for c in block_channels:
            blocks.append(ResBlock1d(width, c, block_kernel, pool=2, dropout=dropout / 2))
            width = c
        self.blocks = nn.Sequential(*blocks)
        self.gru = nn.GRU(
            width,
            gru_hidden,
            num_layers=gru_layers,
            batch_first=True,
            bidirectional=True,
            dropout=dropout if gru_layers > 1 else 0.0,
        )
        self.centre_pool = centre_pool
        pooled = 4 * gru_hidden * (2 if centre_pool else 1)
        self.head = nn.Sequential(nn.Dropout(dropout), nn.Linear(pooled, N_CLASSES))

    def encode(self, batch: Mapping[str, Tensor]) -> Tensor:
        """The ``eeg`` input scaled to about unit size and average-pooled by ``downsample``."""
        eeg = batch["eeg"]
        self.check_eeg(eeg)
        x = eeg.float() * self.input_scale
        if self.downsample > 1:
            x = F.avg_pool1d(x, self.downsample)
        return x

    def stem_blocks(self, x: Tensor) -> Tensor:
        """``encode``'s output -> the residual blocks' output (B, C', T')."""
        x = F.relu(self.stem_bn(torch.cat([conv(x) for conv in self.stem], dim=1)))
        return self.blocks(x)

    def features(self, eeg: Tensor) -> Tensor:
        """(B, C, T) -> (B, T', 2 * gru_hidden) GRU outputs."""
        out, _ = self.gru(self.stem_blocks(self.encode({"eeg": eeg})).transpose(1, 2))
        return out

    def pool(self, h: Tensor) -> Tensor:
        """(B, T', 2 * gru_hidden) GRU outputs -> the head's input: their mean and maximum over
        the window and, with ``centre_pool``, also over the labelled central 10 s."""
        parts = [h.mean(dim=1), h.amax(dim=1)]
        if self.centre_pool:
            mid = h[:, centre_slice(h.shape[1])]
            parts += [mid.mean(dim=1), mid.amax(dim=1)]
        return torch.cat(parts, dim=1)

    def body(self, x: Tensor) -> Tensor:
        out, _ = self.gru(self.stem_blocks(x).transpose(1, 2))
        return self.head(self.pool(out))
