"""The preprocessing of one recording and of one model window, shared by training and inference.

Two steps, split where the work is cheapest to share ("stage" in hms means a training stage):
1. ``preprocess_recording`` (once per recording, by ``hms.prepare`` into the cache): fill
   non-finite samples and band-pass (optionally notch) the 20 referential channels. Filtering is
   linear, so filtering electrodes and then subtracting them equals filtering the derivations.
2. ``window_to_bipolar`` (per window, in the data loader): montage, clip, scale. Clipping is not
   linear, so it comes after the montage.
Inference runs the same two functions on test recordings, through the same cache.
"""

from __future__ import annotations

import hashlib
import json
import math
import numbers
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from hms.constants import SAMPLE_RATE
from hms.data.montage import DEFAULT_MONTAGE, get_montage, montage_name
from hms.data.signal import ChannelQuality, bandpass, fill_nonfinite

DTYPES = ("float16", "float32")  # what the cache may store signals as
MAX_FILTER_ORDER = 16


def _number(value: Any) -> bool:
    """A finite real within float range (settings come from JSON: 10**400 is an integer)."""
    if not isinstance(value, numbers.Real) or isinstance(value, bool):
        return False
    try:
        return math.isfinite(value)
    except OverflowError:
        return False


@dataclass(frozen=True)
class RecordingSettings:
    """Settings that shape the cached signals; changing any of them rebuilds the cache.

    Checked when made (``ValueError`` naming the setting): they also come from files of
    strangers (a weights folder's ``ensemble.json``)."""

    low_hz: float | None = 0.5
    high_hz: float | None = 20.0
    filter_order: int = 4
    notch_hz: float | None = None
    dtype: str = "float16"  # storage type of the cached signals

    def __post_init__(self) -> None:
        nyquist = SAMPLE_RATE / 2
        for name in ("low_hz", "high_hz", "notch_hz"):
            value = getattr(self, name)
            if value is not None and not (_number(value) and 0 <= value < nyquist):
                raise ValueError(
                    f"{name} must be null or a frequency in [0, {nyquist:g}) Hz, got {value!r}"
                )
        if self.low_hz and self.high_hz and not self.low_hz < self.high_hz:
            raise ValueError(f"low_hz={self.low_hz} must be below high_hz={self.high_hz}")
        order = self.filter_order
        if isinstance(order, bool) or not isinstance(order, numbers.Integral):
            raise ValueError(f"filter_order must be an integer, got {order!r}")
        if not 1 <= order <= MAX_FILTER_ORDER:
            raise ValueError(f"filter_order must be in 1..{MAX_FILTER_ORDER}, got {order}")
        if self.dtype not in DTYPES:
            raise ValueError(f"dtype must be one of {list(DTYPES)}, got {self.dtype!r}")

    def key(self) -> str:
        blob = json.dumps(asdict(self), sort_keys=True).encode()
        return hashlib.sha1(blob).hexdigest()[:12]


@dataclass(frozen=True)
class WindowSettings:
    """Per-window settings, applied at load time (no cache rebuild needed)."""

    montage: str = DEFAULT_MONTAGE  # a name of the registry in hms.data.montage
    clip_uv: float | None = 1024.0
    scale: float = 1.0  # multiply the clipped µV by this

    def __post_init__(self) -> None:
        get_montage(self.montage)  # an unknown name fails here, with the known ones
        if self.clip_uv is not None and not (_number(self.clip_uv) and self.clip_uv > 0):
            raise ValueError(f"clip_uv must be null or a positive number, got {self.clip_uv!r}")
        if not (_number(self.scale) and self.scale != 0):
            raise ValueError(f"scale must be a non-zero number, got {self.scale!r}")

    @classmethod
    def from_dict(cls, values: Mapping[str, Any] | None) -> WindowSettings:
        """From a config's or a manifest's ``window`` block; the ``midline`` flag of files
        written before montages had names reads as the double banana with or without its
        midline chain."""
        values = dict(values or {})
        if "midline" in values:
            midline = values.pop("midline")
            values.setdefault("montage", montage_name(bool(midline)))
        return cls(**values)


def preprocess_recording(
    raw: np.ndarray, settings: RecordingSettings | None = None
) -> tuple[np.ndarray, ChannelQuality]:
    """Raw referential µV (time, 20), may hold NaN -> filtered float32 (time, 20), always finite."""
    settings = settings or RecordingSettings()
    clean, quality = fill_nonfinite(raw)
    filtered = bandpass(
        clean,
        low_hz=settings.low_hz,
        high_hz=settings.high_hz,
        order=settings.filter_order,
        notch_hz=settings.notch_hz,
    )
    return filtered, quality


def clip_to_dtype(x: np.ndarray, dtype: str | np.dtype) -> np.ndarray:
    """``x`` clipped to the finite range of ``dtype`` (the cache's storage type): recordings in
    other units are clipped rather than stored as infinity."""
    limit = np.finfo(np.dtype(dtype)).max
    if np.abs(x).max(initial=0.0) > limit:
        return np.clip(x, -limit, limit)
    return x


def as_stored(filtered: np.ndarray, settings: RecordingSettings) -> np.ndarray:
    """Float32 values exactly as the cache stores and returns them (e.g. rounded to float16), so
    that code reading recordings without a cache (``hms.annotation``) feeds the same numbers."""
    return clip_to_dtype(filtered, settings.dtype).astype(settings.dtype).astype(np.float32)


def filtered_as_stored(raw: np.ndarray, settings: RecordingSettings | None = None) -> np.ndarray:
    """Raw referential µV (time, 20) -> the filtered signal a cache of ``settings`` would hold:
    ``preprocess_recording`` then ``as_stored``."""
    settings = settings or RecordingSettings()
    return as_stored(preprocess_recording(raw, settings)[0], settings)


def window_to_bipolar(window: np.ndarray, settings: WindowSettings | None = None) -> np.ndarray:
    """Filtered referential window (time, 20) -> model input (channels, time) float32."""
    settings = settings or WindowSettings()
    bip = get_montage(settings.montage).apply(
        np.asarray(window, dtype=np.float32), settings.clip_uv
    )
    if settings.scale != 1.0:
        bip = bip * np.float32(settings.scale)
    return np.ascontiguousarray(bip.T)
