"""Scalp geometry: approximate 10-20 electrode positions, the spatial smoothing of background
sources, and the spatial fields (weights per electrode) of the rhythmic and periodic patterns."""

from __future__ import annotations

from functools import lru_cache

import numpy as np

from hms.constants import CHAINS, CHANNEL_INDEX, SCALP_CHANNELS, SPEC_REGIONS

# Azimuthal projection of the 10-20 system on the unit disc: x to the right, y to the nose.
POSITIONS: dict[str, tuple[float, float]] = {
    "Fp1": (-0.31, 0.95), "F3": (-0.42, 0.52), "C3": (-0.5, 0.0), "P3": (-0.42, -0.52),
    "F7": (-0.81, 0.59), "T3": (-1.0, 0.0), "T5": (-0.81, -0.59), "O1": (-0.31, -0.95),
    "Fz": (0.0, 0.5), "Cz": (0.0, 0.0), "Pz": (0.0, -0.5),
    "Fp2": (0.31, 0.95), "F4": (0.42, 0.52), "C4": (0.5, 0.0), "P4": (0.42, -0.52),
    "F8": (0.81, 0.59), "T4": (1.0, 0.0), "T6": (0.81, -0.59), "O2": (0.31, -0.95),
}  # fmt: skip
XY = np.array([POSITIONS[c] for c in SCALP_CHANNELS])  # (19, 2) in file order
N_SCALP = len(SCALP_CHANNELS)

# Where lateralised patterns are maximal (left-hemisphere x; the right side mirrors x).
REGION_FOCI: dict[str, tuple[float, float]] = {
    "frontal": (-0.45, 0.6),
    "frontotemporal": (-0.75, 0.45),
    "temporal": (-0.9, -0.05),
    "central": (-0.5, 0.0),
    "parietal": (-0.5, -0.5),
    "occipital": (-0.35, -0.85),
}
REGION_NAMES: tuple[str, ...] = tuple(REGION_FOCI)


@lru_cache(maxsize=4)
def mixing_kernel(width: float = 0.45) -> np.ndarray:
    """(19, 19) Gaussian kernel over inter-electrode distance, rows of unit L2 norm.

    Mixing independent per-electrode sources with it gives neighbouring electrodes correlated
    activity (volume conduction) while keeping each channel's variance that of one source.
    """
    d2 = ((XY[:, None, :] - XY[None, :, :]) ** 2).sum(-1)
    k = np.exp(-d2 / (2 * width**2))
    return k / np.linalg.norm(k, axis=1, keepdims=True)


def gaussian_field(focus: tuple[float, float], spread: float, bilateral: float) -> np.ndarray:
    """(19,) weights, max 1: a Gaussian bump at ``focus`` plus ``bilateral`` times its mirror.

    ``bilateral`` = 0 is a strictly lateralised field, 1 a symmetric (generalised) one; the values
    in between are the continuum between lateralised and generalised patterns (LPD~GPD).
    """
    fx, fy = focus
    own = np.exp(-((XY[:, 0] - fx) ** 2 + (XY[:, 1] - fy) ** 2) / (2 * spread**2))
    mirror = np.exp(-((XY[:, 0] + fx) ** 2 + (XY[:, 1] - fy) ** 2) / (2 * spread**2))
    w = own + bilateral * mirror
    return w / w.max()


def weights_from(names_weights: dict[str, float]) -> np.ndarray:
    """(19,) weights from a {electrode: weight} dict (zero elsewhere)."""
    w = np.zeros(N_SCALP)
    for name, value in names_weights.items():
        w[CHANNEL_INDEX[name]] = value
    return w


@lru_cache(maxsize=1)
def spectrogram_pairs() -> tuple[np.ndarray, np.ndarray]:
    """Anode and cathode indices of the 16 bipolar pairs, in the region order of the files."""
    pairs = [p for region in SPEC_REGIONS for p in CHAINS[region]]
    return (
        np.array([CHANNEL_INDEX[a] for a, _ in pairs]),
        np.array([CHANNEL_INDEX[b] for _, b in pairs]),
    )
