"""Training-time augmentations of a batch dict, on the batch's device.

Each augmentation is an ``nn.Module`` built from primitives that acts only in training mode
(``module.train()``) and returns a new dict (the input batch is not modified). The batch-level
ones act on both views consistently: ``eeg`` (B, C, 10000) bipolar and ``spec`` (B, 300, 400)
Kaggle rows, plus ``target``/``n_votes`` where labels change (mixup). ``SpecMasking`` acts on
spectrogram maps instead, inside the image models, because the EEG spectrograms only exist there.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from torch import Tensor, nn

from hms.constants import SAMPLE_RATE, SPEC_REGIONS, SPEC_ROW_SECONDS
from hms.data.montage import DEFAULT_MONTAGE, Montage, get_montage
from hms.transforms.spectrogram import mirror_index

Batch = Mapping[str, Tensor]
_SPEC_REGION_FLIP = mirror_index(SPEC_REGIONS)  # LL<->RL, LP<->RP in the file's column order


def flip_batch(
    batch: Batch, montage: str | Montage = DEFAULT_MONTAGE, mask: Tensor | None = None
) -> dict[str, Tensor]:
    """Swaps left and right hemispheres of the samples where ``mask`` (B,) is true (all if None).

    The EEG channels are permuted with their mirrors as ``montage`` (the montage the batch's
    ``eeg`` is in, by name) says, midline ones staying, and the Kaggle spectrogram regions swap
    LL<->RL and LP<->RP. Labels do not change. Also usable as test-time augmentation, in eval
    mode. The permutation is a constant of the montage, never read from a tensor's shape, so the
    function traces and exports as it runs.
    """
    out = dict(batch)
    if "eeg" in batch:
        eeg = batch["eeg"]
        spec = get_montage(montage)
        if eeg.shape[1] != spec.n_channels:
            raise ValueError(
                f"flip of montage {spec.name!r} needs {spec.n_channels} channels, got "
                f"{eeg.shape[1]}"
            )
        flipped = eeg[:, spec.flip_index]
        out["eeg"] = flipped if mask is None else torch.where(mask.view(-1, 1, 1), flipped, eeg)
    if "spec" in batch:
        spec = batch["spec"]
        regions = spec.unflatten(-1, (len(SPEC_REGIONS), -1))
        flipped = regions[:, :, _SPEC_REGION_FLIP].flatten(-2)
        out["spec"] = flipped if mask is None else torch.where(mask.view(-1, 1, 1), flipped, spec)
    return out


def _shift_last(x: Tensor, shifts: Tensor, circular: bool) -> Tensor:
    """Shifts each sample of (B, ..., T) right by ``shifts[b]`` steps, circularly or zero-filled."""
    b, t = x.shape[0], x.shape[-1]
    source = torch.arange(t, device=x.device).view(1, t) - shifts.view(b, 1)
    if circular:
        source = source.remainder(t)
    valid = (source >= 0) & (source < t)
    source = source.clamp(0, t - 1)
    shape = (b,) + (1,) * (x.dim() - 2) + (t,)
    out = x.gather(-1, source.view(shape).expand_as(x))
    return out if circular else out * valid.view(shape).to(x.dtype)


class _BatchAugment(nn.Module):
    """Identity in eval mode; subclasses implement ``augment`` on a copy of the batch."""

    def forward(self, batch: Batch) -> dict[str, Tensor]:
        if not self.training:
            return dict(batch)
        return self.augment(dict(batch))

    def augment(self, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        raise NotImplementedError


def _batch_size(batch: Batch) -> tuple[int, torch.device]:
    x = batch["eeg"] if "eeg" in batch else batch["spec"]
    return x.shape[0], x.device


class HemisphereFlip(_BatchAugment):
    """Left/right flip of a random subset (probability ``p``) of the samples, both views at once;
    ``montage`` is that of the batch's ``eeg``."""

    def __init__(self, p: float = 0.5, montage: str = DEFAULT_MONTAGE) -> None:
        super().__init__()
        self.p, self.montage = p, get_montage(montage).name

    def augment(self, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        b, device = _batch_size(batch)
        return flip_batch(batch, self.montage, torch.rand(b, device=device) < self.p)

    def extra_repr(self) -> str:
        return f"p={self.p}, montage={self.montage!r}"


class TimeShift(_BatchAugment):
    """Shifts each sample's EEG by a random whole number of samples in [-max_shift_s, max_shift_s].

    ``mode="roll"`` is circular, ``"zero"`` fills with zeros. With ``shift_spec`` the Kaggle rows
    move by the same time, rounded to whole 2-s rows (zero-filled rows read as missing values), so
    the two views stay aligned; the labelled 10 s move off the window centre in both.
    """

    def __init__(self, max_shift_s: float = 5.0, mode: str = "roll", shift_spec: bool = True):
        super().__init__()
        if mode not in ("roll", "zero"):
            raise ValueError(f"mode must be 'roll' or 'zero', got {mode!r}")
        self.max_shift = round(max_shift_s * SAMPLE_RATE)
        self.mode, self.shift_spec = mode, shift_spec

    def augment(self, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        b, device = _batch_size(batch)
        shifts = torch.randint(-self.max_shift, self.max_shift + 1, (b,), device=device)
        circular = self.mode == "roll"
        if "eeg" in batch:
            batch["eeg"] = _shift_last(batch["eeg"], shifts, circular)
        if self.shift_spec and "spec" in batch:
            rows = torch.round(shifts / (SAMPLE_RATE * SPEC_ROW_SECONDS)).long()
            spec = batch["spec"].transpose(1, 2)
            batch["spec"] = _shift_last(spec, rows, circular).transpose(1, 2).contiguous()
        return batch

    def extra_repr(self) -> str:
        return f"max_shift={self.max_shift} samples, mode={self.mode!r}"


class GainNoise(_BatchAugment):
    """Random per-sample gain (uniform in ``gain_range``) and gaussian noise on the EEG.

    ``noise_std`` is in the units of ``eeg`` (µV times the dataset's scale). With ``scale_spec``
    the Kaggle power is multiplied by gain², as it would be had the recording been louder.
    """

    def __init__(
        self,
        gain_range: Sequence[float] = (0.8, 1.25),
        noise_std: float = 0.0,
        scale_spec: bool = True,
    ) -> None:
        super().__init__()
        self.gain_min, self.gain_max = float(gain_range[0]), float(gain_range[1])
        self.noise_std, self.scale_spec = noise_std, scale_spec

    def augment(self, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        b, device = _batch_size(batch)
        gain = self.gain_min + (self.gain_max - self.gain_min) * torch.rand(b, device=device)
        if "eeg" in batch:
            eeg = batch["eeg"] * gain.view(b, 1, 1).to(batch["eeg"].dtype)
            if self.noise_std > 0:
                eeg = eeg + self.noise_std * torch.randn_like(eeg)
            batch["eeg"] = eeg
        if self.scale_spec and "spec" in batch:
            batch["spec"] = batch["spec"] * (gain * gain).view(b, 1, 1).to(batch["spec"].dtype)
        return batch

    def extra_repr(self) -> str:
        return f"gain=({self.gain_min}, {self.gain_max}), noise_std={self.noise_std}"


class ChannelDropout(_BatchAugment):
    """Zeroes each EEG derivation of each sample with probability ``p`` (a dead electrode pair)."""

    def __init__(self, p: float = 0.1) -> None:
        super().__init__()
        self.p = p

    def augment(self, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        eeg = batch["eeg"]
        keep = torch.rand(eeg.shape[0], eeg.shape[1], 1, device=eeg.device) >= self.p
        batch["eeg"] = eeg * keep.to(eeg.dtype)
        return batch

    def extra_repr(self) -> str:
        return f"p={self.p}"


class Mixup(_BatchAugment):
    """Mixes each selected sample (probability ``p``) with a random partner of the batch.

    The weight is lambda ~ Beta(alpha, alpha) per sample; ``eeg``, ``spec`` (raw power), ``target``
    and ``n_votes`` are mixed with the same weight, so the target stays a distribution.
    """

    KEYS = ("eeg", "spec", "target", "n_votes")

    def __init__(self, alpha: float = 0.4, p: float = 0.5) -> None:
        super().__init__()
        self.alpha, self.p = alpha, p

    def augment(self, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        b, device = _batch_size(batch)
        alpha = torch.tensor(float(self.alpha), device=device)
        lam = torch.distributions.Beta(alpha, alpha).sample((b,))
        lam = torch.where(torch.rand(b, device=device) < self.p, lam, torch.ones_like(lam))
        perm = torch.randperm(b, device=device)
        for key in self.KEYS:
            if key in batch:
                x = batch[key]
                w = lam.view((b,) + (1,) * (x.dim() - 1)).to(x.dtype)
                batch[key] = w * x + (1 - w) * x[perm]
        return batch

    def extra_repr(self) -> str:
        return f"alpha={self.alpha}, p={self.p}"


class SpecMasking(nn.Module):
    """SpecAugment on maps (B, M, H=freq, W=time): ``n_masks`` time and frequency bands each.

    Widths are uniform in [0, time_mask] columns / [0, freq_mask] rows, drawn per sample and shared
    by all maps of the sample (the same seconds are hidden in every chain). Masked pixels take
    ``value`` (0 = the mean after normalisation). Identity in eval mode.
    """

    def __init__(
        self, time_mask: int = 0, freq_mask: int = 0, n_masks: int = 1, value: float = 0.0
    ) -> None:
        super().__init__()
        self.time_mask, self.freq_mask, self.n_masks, self.value = (
            time_mask,
            freq_mask,
            n_masks,
            value,
        )

    @staticmethod
    def _bands(b: int, size: int, max_width: int, n: int, device: torch.device) -> Tensor:
        """(B, size) bool, true inside any of n random bands of width <= max_width."""
        width = torch.randint(0, max_width + 1, (n, b, 1), device=device).clamp(max=size)
        start = (torch.rand(n, b, 1, device=device) * (size - width + 1)).long()
        pos = torch.arange(size, device=device).view(1, 1, size)
        return ((pos >= start) & (pos < start + width)).any(dim=0)

    def forward(self, maps: Tensor) -> Tensor:
        if not self.training or self.n_masks <= 0 or (self.time_mask <= 0 and self.freq_mask <= 0):
            return maps
        b, _, h, w = maps.shape
        mask = torch.zeros(b, 1, h, w, dtype=torch.bool, device=maps.device)
        if self.time_mask > 0:
            mask = mask | self._bands(b, w, self.time_mask, self.n_masks, maps.device).view(
                b, 1, 1, w
            )
        if self.freq_mask > 0:
            mask = mask | self._bands(b, h, self.freq_mask, self.n_masks, maps.device).view(
                b, 1, h, 1
            )
        return maps.masked_fill(mask, self.value)

    def extra_repr(self) -> str:
        return f"time_mask={self.time_mask}, freq_mask={self.freq_mask}, n_masks={self.n_masks}"


class Augment(nn.Module):
    """The batch augmentations, each switched on by its own primitive arguments (0 = off).

    Order: flip, time shift, gain/noise, channel dropout, mixup (last, so partners are already
    augmented). Identity in eval mode. ``montage``: that of the batch's ``eeg`` (the flip's
    mirror).
    """

    def __init__(
        self,
        flip_p: float = 0.0,
        shift_s: float = 0.0,
        shift_mode: str = "roll",
        shift_spec: bool = True,
        gain_range: Sequence[float] = (1.0, 1.0),
        noise_std: float = 0.0,
        channel_dropout_p: float = 0.0,
        mixup_alpha: float = 0.0,
        mixup_p: float = 0.0,
        montage: str = DEFAULT_MONTAGE,
    ) -> None:
        super().__init__()
        steps: list[nn.Module] = []
        if flip_p > 0:
            steps.append(HemisphereFlip(flip_p, montage))
        if shift_s > 0:
            steps.append(TimeShift(shift_s, shift_mode, shift_spec))
        if tuple(gain_range) != (1.0, 1.0) or noise_std > 0:
            steps.append(GainNoise(gain_range, noise_std))
        if channel_dropout_p > 0:
            steps.append(ChannelDropout(channel_dropout_p))
        if mixup_alpha > 0 and mixup_p > 0:
            steps.append(Mixup(mixup_alpha, mixup_p))
        self.steps = nn.ModuleList(steps)

    def forward(self, batch: Batch) -> dict[str, Tensor]:
        out = dict(batch)
        if self.training:
            for step in self.steps:
                out = step(out)
        return out
