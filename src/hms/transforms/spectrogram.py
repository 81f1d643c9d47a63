"""Spectrogram images for 2-D CNNs, computed on the batch on the model's device.

Both views end up as the same kind of object: a stack of per-chain *maps* (B, M, H, W) with
frequency on H (low frequencies first) and time on W, in chain order LL, LP, RP, RL (the bipolar
channel order), optionally followed by a midline map. ``arrange`` lays the maps out as a CNN image:

- ``"stack"``: maps on top of each other, one channel: (B, 1, M*H, W);
- ``"tile"``: a 2-column grid filled row by row, one channel: (B, 1, ceil(M/2)*H, 2*W) (an odd
  last cell is zero);
- ``"channels"``: one map per channel: (B, M, H, W).

``unarrange`` inverts it, so the hemisphere mirror of an image is ``arrange(unarrange(img)[:,
mirror_index(names)])`` whatever the layout.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from hms.constants import CHAIN_NAMES, SAMPLE_RATE, SPEC_REGIONS
from hms.data.montage import get_montage, montage_name

LAYOUTS = ("stack", "tile", "channels")
MIDLINE_MAP = "MID"
_MIRROR_MAP = {"LL": "RL", "RL": "LL", "LP": "RP", "RP": "LP", MIDLINE_MAP: MIDLINE_MAP}
_SPEC_BINS_PER_REGION = 100


def mel_filterbank(
    n_freqs: int, f_min: float, f_max: float, n_mels: int, sample_rate: int
) -> Tensor:
    """(n_freqs, n_mels) triangular filters on the HTK mel scale, unnormalised, for the bins of
    an FFT with ``n_freqs`` one-sided bins: ``torchaudio.functional.melscale_fbanks``, the seed's
    filterbank, computed the same way in float32. A band between two bins is all zero."""
    all_freqs = torch.linspace(0, sample_rate // 2, n_freqs)
    m_min = 2595.0 * math.log10(1.0 + f_min / 700.0)
    m_max = 2595.0 * math.log10(1.0 + f_max / 700.0)
    f_pts = 700.0 * (10.0 ** (torch.linspace(m_min, m_max, n_mels + 2) / 2595.0) - 1.0)
    f_diff = f_pts[1:] - f_pts[:-1]
    slopes = f_pts.unsqueeze(0) - all_freqs.unsqueeze(1)  # (n_freqs, n_mels + 2)
    down = (-1.0 * slopes[:, :-2]) / f_diff[:-1]
    up = slopes[:, 2:] / f_diff[1:]
    return torch.max(torch.zeros(1), torch.min(down, up))


def check_layout(layout: str) -> str:
    if layout not in LAYOUTS:
        raise ValueError(f"layout must be one of {LAYOUTS}, got {layout!r}")
    return layout


def arrange(maps: Tensor, layout: str) -> Tensor:
    """Maps (B, M, H, W) -> image (B, C, H', W') in ``layout`` (see the module docstring)."""
    check_layout(layout)
    b, m, h, w = maps.shape
    if layout == "channels":
        return maps
    if layout == "stack":
        return maps.reshape(b, 1, m * h, w)
    if m % 2:
        maps = torch.cat([maps, maps.new_zeros(b, 1, h, w)], dim=1)
    rows = maps.shape[1] // 2
    return maps.reshape(b, rows, 2, h, w).permute(0, 1, 3, 2, 4).reshape(b, 1, rows * h, 2 * w)


def unarrange(image: Tensor, layout: str, n_maps: int) -> Tensor:
    """The inverse of ``arrange``: image -> maps (B, n_maps, H, W)."""
    check_layout(layout)
    b, _, hh, ww = image.shape
    if layout == "channels":
        return image
    if layout == "stack":
        return image.reshape(b, n_maps, hh // n_maps, ww)
    rows = math.ceil(n_maps / 2)
    h, w = hh // rows, ww // 2
    maps = image.reshape(b, rows, h, 2, w).permute(0, 1, 3, 2, 4).reshape(b, 2 * rows, h, w)
    return maps[:, :n_maps]


def mirror_index(names: Sequence[str]) -> list[int]:
    """Permutation of maps named ``names`` that swaps each chain with its mirror (LL<->RL, ...)."""
    position = {name: i for i, name in enumerate(names)}
    missing = [name for name in names if _MIRROR_MAP.get(name) not in position]
    if missing:
        raise ValueError(f"maps {missing} have no mirror among {list(names)}")
    return [position[_MIRROR_MAP[name]] for name in names]


class _MapImage(nn.Module):
    """Shared by both views: maps -> image, and the hemisphere mirror of an image."""

    map_names: tuple[str, ...]
    layout: str  # subclasses define maps(x) -> (B, M, H, W)

    def forward(self, x: Tensor) -> Tensor:
        return arrange(self.maps(x), self.layout)

    def mirror(self, image: Tensor) -> Tensor:
        """The image of the hemisphere-flipped input, computed from the image itself."""
        maps = unarrange(image, self.layout, len(self.map_names))
        return arrange(maps[:, mirror_index(self.map_names)], self.layout)


class EEGSpectrogram(_MapImage):
    """EEG derivations of ``montage`` (B, C, T) -> log spectrogram image of the four chains (and
    the midline).

    Each derivation gets its own log spectrogram, and those of a chain (the montage's
    ``chain_index``) are averaged (in log space, as the public HMS solutions do). The defaults
    follow those solutions: a 128-band mel spectrogram of 0-20 Hz, 1024-point FFT of 128-sample
    windows, hop 39 so that a 50-s window gives T // hop = 256 frames (the trailing centred frame is
    dropped). ``kind="stft"`` keeps the linear FFT bins between ``f_min`` and ``f_max`` instead.
    ``log="db"`` is ``AmplitudeToDB`` (with ``top_db`` per sample), ``log="ln"`` is
    ``log(max(power, eps))``.
    ``midline=True`` adds a fifth map, the mean of the montage's midline channels (Fz-Cz and
    Cz-Pz in ``double_banana_midline``); without it, channels outside the chains are not read.
    ``montage=None`` (checkpoints written before montages had names) is the double banana, with
    its midline chain when ``midline``. ``crop_s`` keeps only the frames of the central
    ``crop_s`` seconds, where the experts' label lies (computing only those): at equal frames,
    a finer time axis on the labelled 10 s and its surroundings.
    """

    def __init__(
        self,
        kind: str = "mel",
        n_fft: int = 1024,
        hop_length: int = 39,
        win_length: int | None = 128,
        f_min: float = 0.0,
        f_max: float = 20.0,
        n_mels: int = 128,
        log: str = "db",
        top_db: float | None = 80.0,
        eps: float = 1e-10,
        midline: bool = False,
        layout: str = "stack",
        sample_rate: int = SAMPLE_RATE,
        montage: str | None = None,
        crop_s: float | None = None,
    ) -> None:
        super().__init__()
        self.crop = None if crop_s is None else round(crop_s * sample_rate)
        if self.crop is not None and self.crop < hop_length:
            raise ValueError(f"crop_s={crop_s} keeps less than one frame of hop {hop_length}")
        spec = get_montage(montage if montage is not None else montage_name(midline))
        if midline and not spec.midline:
            raise ValueError(
                f"midline=True needs a montage with a midline chain, not {spec.name!r}"
            )
        self.montage, self.n_channels = spec.name, spec.n_channels
        if kind not in ("mel", "stft"):
            raise ValueError(f"kind must be 'mel' or 'stft', got {kind!r}")
        if log not in ("db", "ln"):
            raise ValueError(f"log must be 'db' or 'ln', got {log!r}")
        self.kind, self.log, self.eps, self.top_db = kind, log, eps, top_db
        self.hop_length = hop_length
        self.midline = midline
        self.layout = check_layout(layout)
        win = win_length or n_fft
        if not 0 < win <= n_fft:
            raise ValueError(f"win_length must be in 1..n_fft={n_fft}, got {win_length}")
        if kind == "mel":
            fb = mel_filterbank(n_fft // 2 + 1, f_min, f_max, n_mels, sample_rate)
            bins = torch.arange(int(torch.nonzero(fb.sum(dim=1)).max()) + 1)
            self.register_buffer("mel_fb", fb[bins], persistent=False)
        else:
            freqs = torch.fft.rfftfreq(n_fft, 1.0 / sample_rate)
            bins = torch.nonzero((freqs >= f_min) & (freqs <= f_max)).flatten()
            self.mel_fb = None
        # The power of the kept FFT bins (n_fft points, the centred Hann window of win samples, as
        # torch.stft(center=True) frames them) as one strided convolution with their real and
        # imaginary DFT kernels: the window's win samples are the only non-zero ones of a frame,
        # and bins above f_max (mel: where the filterbank is zero) are not computed. It equals the
        # FFT to float rounding, costs the same, and exports to ONNX as a Conv (onnxruntime's STFT
        # kernel took most of a member's time).
        self.n_fft = n_fft
        bin_hz = torch.fft.rfftfreq(n_fft, 1.0 / sample_rate)[bins]
        self.register_buffer("bin_hz", bin_hz, persistent=False)  # frequency of each kept bin
        window = torch.hann_window(win, periodic=True, dtype=torch.float64)
        angle = 2 * math.pi * bins.double()[:, None] * torch.arange(win).double()[None, :] / n_fft
        kernels = torch.cat([window * torch.cos(angle), -window * torch.sin(angle)])
        self.register_buffer("dft", kernels.float().unsqueeze(1), persistent=False)
        self.pad_left = n_fft // 2 - (n_fft - win) // 2  # samples before a frame's centre
        self.pad_right = win - self.pad_left
        # Only the channels of the maps are transformed: the chains', then the midline's.
        chain_index = spec.chains_for("the EEG spectrogram (the image members' EEG view)")
        used = spec.lateral_channels + (list(spec.midline) if midline else [])
        self.used = used
        local = {c: i for i, c in enumerate(used)}
        chains = [[local[c] for c in chain] for chain in chain_index]
        self.register_buffer("chain_index", torch.tensor(chains), persistent=False)
        self.midline_index = [local[c] for c in spec.midline] if midline else []
        self.map_names = CHAIN_NAMES + ((MIDLINE_MAP,) if midline else ())

    @property
    def n_maps(self) -> int:
        return len(self.map_names)

    def power(self, x: Tensor) -> Tensor:
        """(B, C, T) -> (B, C, F, T // hop) power of the kept bins (mel: mel bands), frame t
        centred on sample t * hop (the signal reflected at its ends); with ``crop_s``, the
        frames centred on the central ``crop_s`` seconds only, (B, C, F, crop // hop)."""
        b, c, t = x.shape
        flat = x.reshape(b * c, 1, t)
        if self.crop is not None and self.crop < t:
            start = (t - self.crop) // 2  # the first kept frame's centre
            lo, hi = start - self.pad_left, start + self.crop + self.pad_right
            if lo < 0 or hi > t:
                raise ValueError("crop_s leaves no room for the frames' windows inside the EEG")
            t, padded = self.crop, flat[..., lo:hi]  # the frames' samples, all inside the EEG
        else:
            padded = F.pad(flat, (self.pad_left, self.pad_right), mode="reflect")
        frames = t // self.hop_length
        z = F.conv1d(padded, self.dft, stride=self.hop_length)[..., :frames]
        re, im = z.chunk(2, dim=1)
        power = re * re + im * im  # (B * C, bins, frames)
        if self.mel_fb is not None:
            power = torch.matmul(power.transpose(1, 2), self.mel_fb).transpose(1, 2)
        return power.reshape(b, c, power.shape[1], frames)

    def to_db(self, power: Tensor) -> Tensor:
        """10 log10(power), floored ``top_db`` below each sample's maximum (as
        ``torchaudio.transforms.AmplitudeToDB``, the seed's)."""
        db = 10.0 * torch.log10(power.clamp_min(self.eps))
        if self.top_db is not None:
            floor = db.amax(dim=(-3, -2, -1), keepdim=True) - self.top_db
            db = torch.maximum(db, floor)
        return db

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs) -> None:
        # Checkpoints written when torchaudio computed the spectrogram hold its window and
        # filterbank, which the settings define: they are rebuilt, not read.
        for key in [k for k in state_dict if k.startswith(prefix + "spectrogram.")]:
            del state_dict[key]
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def maps(self, x: Tensor) -> Tensor:
        """(B, C, T) EEG of the montage -> (B, 4|5, F, T // hop) per-chain log spectrograms."""
        if x.shape[1] != self.n_channels:
            raise ValueError(
                f"expected {self.n_channels} channels of montage {self.montage!r}, got {x.shape[1]}"
            )
        if self.used != list(range(x.shape[1])):
            x = x[:, self.used]
        with torch.autocast(device_type=x.device.type, enabled=False):
            power = self.power(x.float())
            logp = self.to_db(power) if self.log == "db" else power.clamp_min(self.eps).log()
        maps = logp[:, self.chain_index].mean(dim=2)  # (B, 4, F, W)
        if self.midline:
            maps = torch.cat([maps, logp[:, self.midline_index].mean(dim=1, keepdim=True)], dim=1)
        return maps


class KaggleSpectrogramImage(_MapImage):
    """Kaggle spectrogram rows (B, 300, 400) -> log-power image of its four regions.

    The file's columns are LL, RL, LP, RP (100 bins each); ``regions`` picks the map order, by
    default that of the EEG chains. Power is clamped to [eps, max_value] before the log (0 marks
    missing values in the rows); the defaults exp(-4) and exp(8) are those of the public
    solutions. ``crop_rows`` keeps that many central rows (2 s each) of the 10-min window.
    """

    def __init__(
        self,
        regions: Sequence[str] = CHAIN_NAMES,
        eps: float = math.exp(-4),
        max_value: float | None = math.exp(8),
        crop_rows: int | None = None,
        layout: str = "stack",
    ) -> None:
        super().__init__()
        unknown = set(regions) - set(SPEC_REGIONS)
        if unknown:
            raise ValueError(f"unknown regions {sorted(unknown)}; known: {SPEC_REGIONS}")
        self.map_names = tuple(regions)
        self.region_index = [SPEC_REGIONS.index(r) for r in regions]
        self.eps, self.max_value, self.crop_rows = eps, max_value, crop_rows
        self.layout = check_layout(layout)

    @property
    def n_maps(self) -> int:
        return len(self.map_names)

    def maps(self, spec: Tensor) -> Tensor:
        """(B, rows, 400) -> (B, n_regions, 100, rows) log power, low frequencies first."""
        if spec.shape[-1] != len(SPEC_REGIONS) * _SPEC_BINS_PER_REGION:
            raise ValueError(f"expected 400 spectrogram columns, got {spec.shape[-1]}")
        if self.crop_rows is not None and self.crop_rows < spec.shape[1]:
            start = (spec.shape[1] - self.crop_rows) // 2
            spec = spec[:, start : start + self.crop_rows]
        regions = spec.float().unflatten(-1, (len(SPEC_REGIONS), _SPEC_BINS_PER_REGION))
        maps = regions[:, :, self.region_index].permute(0, 2, 3, 1)
        return maps.clamp(min=self.eps, max=self.max_value).log()


class Normalize(nn.Module):
    """Standardises maps (B, M, H, W): per sample, with per-map dataset statistics, or not at all.

    ``mode="dataset"`` keeps mean/std per map as buffers, so a checkpoint carries the training
    fold's statistics; they come from ``fit`` (maps of training batches) or ``set_stats``.
    """

    MODES = ("instance", "dataset", "none")

    def __init__(self, mode: str = "instance", num_channels: int = 1, eps: float = 1e-6) -> None:
        super().__init__()
        if mode not in self.MODES:
            raise ValueError(f"mode must be one of {self.MODES}, got {mode!r}")
        self.mode, self.num_channels, self.eps = mode, num_channels, eps
        self.register_buffer("mean", torch.zeros(num_channels))
        self.register_buffer("std", torch.ones(num_channels))
        self.register_buffer("fitted", torch.tensor(False))
        self.is_fitted = False  # the buffer's value as a Python bool: forward reads this one

    def set_stats(
        self, mean: float | Sequence[float] | Tensor, std: float | Sequence[float] | Tensor
    ) -> Normalize:
        """Sets per-map statistics (a scalar applies to every map)."""
        mean_t = torch.as_tensor(mean, dtype=torch.float32).expand(self.num_channels)
        std_t = torch.as_tensor(std, dtype=torch.float32).expand(self.num_channels)
        if not (torch.isfinite(mean_t).all() and (std_t > 0).all()):
            raise ValueError("statistics must be finite with a positive std")
        self.mean.copy_(mean_t)
        self.std.copy_(std_t)
        self.fitted.fill_(True)
        self.is_fitted = True
        return self

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs) -> None:
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)
        self.is_fitted = bool(self.fitted)  # a forward pass that is exported reads no tensor

    def reset_stats(self) -> None:
        """Starts a streaming fit: ``update_stats`` on each batch of maps, then ``finish_stats``."""
        self._moments: list[Tensor | int] | None = None

    @torch.no_grad()
    def update_stats(self, maps: Tensor) -> None:
        x = maps.detach().double().transpose(0, 1).reshape(maps.shape[1], -1)
        s, q, n = x.sum(dim=1), (x * x).sum(dim=1), x.shape[1]
        moments = getattr(self, "_moments", None)
        if moments is None:
            self._moments = [s, q, n]
        else:
            self._moments = [moments[0] + s, moments[1] + q, moments[2] + n]

    def finish_stats(self) -> Normalize:
        moments = getattr(self, "_moments", None)
        if moments is None:
            raise ValueError("no maps were seen: call update_stats on training batches first")
        total, sq, count = moments
        self._moments = None
        mean = total / count
        std = (sq / count - mean * mean).clamp_min(0.0).sqrt()
        return self.set_stats(mean.float().cpu(), std.float().cpu().clamp_min(self.eps))

    def fit(self, batches: Iterable[Tensor]) -> Normalize:
        """Per-map mean and std over all pixels of all batches (training fold only)."""
        self.reset_stats()
        for maps in batches:
            self.update_stats(maps)
        return self.finish_stats()

    def forward(self, maps: Tensor) -> Tensor:
        if self.mode == "none":
            return maps
        if self.mode == "instance":
            mean = maps.mean(dim=(1, 2, 3), keepdim=True)
            std = maps.std(dim=(1, 2, 3), keepdim=True)
            return (maps - mean) / (std + self.eps)
        if not self.is_fitted:
            raise RuntimeError(
                "Normalize(mode='dataset') has no statistics yet: call fit(...) or set_stats(...) "
                "with training-fold data, or load a checkpoint that holds them"
            )
        if maps.shape[1] != self.num_channels:
            raise ValueError(f"expected {self.num_channels} maps, got {maps.shape[1]}")
        return (maps - self.mean.view(1, -1, 1, 1)) / self.std.view(1, -1, 1, 1)

    def extra_repr(self) -> str:
        return f"mode={self.mode!r}, num_channels={self.num_channels}"
