"""Bipolar montages and the left/right hemisphere flip.

A montage is a small integer table of (anode, cathode) channel indices, so that applying it is one
vectorised subtraction and flipping it is one index lookup, on numpy arrays or torch tensors alike.
"""

from __future__ import annotations

import numpy as np

from hms.constants import BIPOLAR_PAIRS, CHANNEL_INDEX, MIDLINE_PAIRS, MIRROR


def bipolar_pairs(midline: bool = False) -> tuple[tuple[str, str], ...]:
    """The double banana (LL, LP, RP, RL; 16 pairs), optionally with Fz-Cz and Cz-Pz (18)."""
    return BIPOLAR_PAIRS + (MIDLINE_PAIRS if midline else ())


def bipolar_names(midline: bool = False) -> list[str]:
    return [f"{a}-{b}" for a, b in bipolar_pairs(midline)]


def montage_index(midline: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Indices into ``EEG_CHANNELS`` of each pair's anode and cathode."""
    pairs = bipolar_pairs(midline)
    anode = np.array([CHANNEL_INDEX[a] for a, _ in pairs], dtype=np.int64)
    cathode = np.array([CHANNEL_INDEX[b] for _, b in pairs], dtype=np.int64)
    return anode, cathode


def apply_montage(x: np.ndarray, midline: bool = False, clip_uv: float | None = 1024.0):
    """Referential (time, 20) -> bipolar (time, 16|18), each derivation clipped to +-clip_uv."""
    anode, cathode = montage_index(midline)
    y = x[:, anode] - x[:, cathode]
    if clip_uv is not None:
        y = y.clip(-clip_uv, clip_uv)
    return y


def bipolar_flip_index(midline: bool = False) -> np.ndarray:
    """Permutation of the bipolar channels that swaps each derivation with its mirror.

    The double banana is symmetric: LL <-> RL and LP <-> RP pair by pair, midline pairs stay.
    """
    pairs = bipolar_pairs(midline)
    position = {pair: i for i, pair in enumerate(pairs)}
    return np.array([position[(MIRROR[a], MIRROR[b])] for a, b in pairs], dtype=np.int64)
