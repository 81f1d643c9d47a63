"""Signal cleaning and filtering shared by the cache, training and inference.

Strategy for bad samples (real HMS EEGs have all of these):
- non-finite samples (NaN, +-inf) are bad; each channel's bad stretches are filled by linear
  interpolation between the nearest good samples (held constant before the first and after the
  last good sample);
- a channel with no good sample at all becomes zeros;
- flat channels (peak-to-peak under ``FLAT_UV``) are left as they are: after the band-pass they
  are zero, which a bipolar derivation shows as the other electrode alone;
- huge artefacts are not removed here: the montage step clips each bipolar derivation to
  +-``clip_uv``, so one bad electrode cannot dominate a normalised input.
So nothing that leaves this module is NaN, whatever the file held.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from scipy import signal as sps

from hms.constants import SAMPLE_RATE

FLAT_UV = 0.5  # peak-to-peak (µV) under which a channel counts as flat


@dataclass(frozen=True)
class ChannelQuality:
    """What cleaning found, per channel: share of bad samples and whether the channel is flat."""

    bad_fraction: np.ndarray  # (C,) float32, 0..1
    flat: np.ndarray  # (C,) bool, after filling

    @property
    def any_bad(self) -> bool:
        return bool(self.bad_fraction.any() or self.flat.any())


def fill_nonfinite(x: np.ndarray) -> tuple[np.ndarray, ChannelQuality]:
    """Return a float32 copy of ``x`` (time, channels) with every non-finite sample filled."""
    x = np.array(x, dtype=np.float32, copy=True)
    if x.ndim != 2:
        raise ValueError(f"expected a (time, channels) array, got shape {x.shape}")
    bad = ~np.isfinite(x)
    bad_fraction = bad.mean(axis=0).astype(np.float32) if len(x) else np.zeros(x.shape[1])
    if bad.any():
        t = np.arange(len(x))
        for c in np.flatnonzero(bad.any(axis=0)):
            good = ~bad[:, c]
            if not good.any():
                x[:, c] = 0.0
            else:
                x[bad[:, c], c] = np.interp(t[bad[:, c]], t[good], x[good, c])
    flat = (np.ptp(x, axis=0) < FLAT_UV) if len(x) else np.ones(x.shape[1], dtype=bool)
    return x, ChannelQuality(bad_fraction=bad_fraction, flat=np.asarray(flat))


@lru_cache(maxsize=32)
def _bandpass_sos(
    low_hz: float | None, high_hz: float | None, order: int, fs: float
) -> np.ndarray | None:
    if low_hz and high_hz:
        return sps.butter(order, [low_hz, high_hz], btype="bandpass", fs=fs, output="sos")
    if low_hz:
        return sps.butter(order, low_hz, btype="highpass", fs=fs, output="sos")
    if high_hz:
        return sps.butter(order, high_hz, btype="lowpass", fs=fs, output="sos")
    return None


@lru_cache(maxsize=8)
def _notch_sos(freq_hz: float, quality: float, fs: float) -> np.ndarray:
    b, a = sps.iirnotch(freq_hz, quality, fs=fs)
    return sps.tf2sos(b, a)


def bandpass(
    x: np.ndarray,
    low_hz: float | None = 0.5,
    high_hz: float | None = 20.0,
    order: int = 4,
    notch_hz: float | None = None,
    notch_q: float = 30.0,
    fs: float = SAMPLE_RATE,
) -> np.ndarray:
    """Zero-phase Butterworth band-pass (and optional notch) along time (axis 0), float32 out.

    ``x`` must be finite (see ``fill_nonfinite``). Recordings shorter than the filter's padding are
    filtered with a shorter pad instead of raising.
    """
    y = np.asarray(x, dtype=np.float64)
    filters = []
    sos = _bandpass_sos(low_hz, high_hz, order, float(fs))
    if sos is not None:
        filters.append(sos)
    if notch_hz:
        filters.append(_notch_sos(float(notch_hz), float(notch_q), float(fs)))
    for sos in filters:
        # Odd extension of 2 s keeps the start-up transient of a 0.5-Hz high-pass out of the data.
        padlen = min(int(2 * fs), len(y) - 1)
        if padlen < 1:
            break
        y = sps.sosfiltfilt(sos, y, axis=0, padlen=padlen)
    return y.astype(np.float32)
