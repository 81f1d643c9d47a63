"""Kaggle-style spectrograms computed from EEG.

The competition's spectrogram files hold, every 2 s, the power of four montage chains (LL, RL, LP,
RP) in the 100 bins of a 1024-point FFT between 0.59 and 19.92 Hz. Their computation was not
published; this module reproduces it: power spectral density in µV²/Hz of each 1024-sample Hann
window centred on its row's time, averaged over the four bipolar pairs of each chain. On the real
public test recording, spectrogram second T matches EEG second T - 275 (the 50-s EEG is the centre
of the 10-min window), and there the rows computed from the EEG and the official rows have a
log-power correlation of 0.94 and a median ratio of 1.07 (tests/test_spectrogram.py). The
built-in dataset and inference on recordings without a spectrogram file both use this function,
so the two views of a recording always agree.
"""

from __future__ import annotations

import numpy as np
import scipy.fft

from hms.constants import (
    CHAINS,
    CHANNEL_INDEX,
    SAMPLE_RATE,
    SPEC_BINS,
    SPEC_NFFT,
    SPEC_REGIONS,
    SPEC_ROW_SECONDS,
    SPEC_WINDOW_ROWS,
)
from hms.data.signal import fill_nonfinite

_WINDOW = np.hanning(SPEC_NFFT).astype(np.float32)
_WINDOW_POWER = float(np.sum(np.hanning(SPEC_NFFT) ** 2))


def _chain_index() -> tuple[np.ndarray, np.ndarray]:
    pairs = [p for region in SPEC_REGIONS for p in CHAINS[region]]
    anode = np.array([CHANNEL_INDEX[a] for a, _ in pairs])
    cathode = np.array([CHANNEL_INDEX[b] for _, b in pairs])
    return anode, cathode


def row_times(n_samples: int, fs: int = SAMPLE_RATE) -> np.ndarray:
    """Row centre times (s) of a recording of ``n_samples``: 1, 3, 5, ... as in the files."""
    n_rows = int(n_samples / fs // SPEC_ROW_SECONDS)
    return np.arange(n_rows) * SPEC_ROW_SECONDS + SPEC_ROW_SECONDS / 2


def window_row_times(centres_s: np.ndarray | float) -> np.ndarray:
    """Centre times (s) of the 300 rows of the 10-min spectrogram window around each centre:
    ``centre - 299, centre - 297, ..., centre + 299``; shape ``(len(centres), 300)``."""
    half = SPEC_WINDOW_ROWS * SPEC_ROW_SECONDS / 2
    offsets = -half + SPEC_ROW_SECONDS / 2 + SPEC_ROW_SECONDS * np.arange(SPEC_WINDOW_ROWS)
    return np.atleast_1d(np.asarray(centres_s, dtype=np.float64))[:, None] + offsets[None, :]


def kaggle_spectrogram(
    eeg: np.ndarray, times: np.ndarray | None = None, fs: int = SAMPLE_RATE
) -> tuple[np.ndarray, np.ndarray]:
    """Spectrogram rows of a referential recording (time, 20 channels in ``EEG_CHANNELS`` order).

    ``times`` are the row centres in seconds from the recording start (default: 1, 3, 5, ...).
    Returns ``(times, values)``: the row centre times and a
    float32 array (rows, 400) in the column order of the files (LL, RL, LP, RP x 100 bins). Windows
    that reach past either end of the recording are completed by reflection. Non-finite samples
    are filled first (``hms.data.signal``), so the output is always finite.
    """
    x, _ = fill_nonfinite(eeg)
    anode, cathode = _chain_index()
    bip = np.ascontiguousarray((x[:, anode] - x[:, cathode]).T)  # (16, T): LL, RL, LP, RP pairs
    times = row_times(bip.shape[1], fs) if times is None else np.asarray(times, dtype=np.float64)
    if len(times) == 0:
        return times, np.zeros((0, len(SPEC_REGIONS) * len(SPEC_BINS)), dtype=np.float32)
    half = SPEC_NFFT // 2
    mode = "reflect" if bip.shape[1] > half else "constant"  # too short to reflect: zero-pad
    pad = np.pad(bip, ((0, 0), (half, half)), mode=mode)
    centres = np.round(times * fs).astype(np.int64)  # sample of each row centre (+half in pad)
    segs = pad[:, centres[:, None] + np.arange(SPEC_NFFT)[None, :]]  # (16, rows, nfft) float32
    segs -= segs.mean(axis=-1, keepdims=True)
    segs *= _WINDOW
    spec = scipy.fft.rfft(segs, axis=-1)[..., SPEC_BINS[0] : SPEC_BINS[-1] + 1]
    psd = (spec.real**2 + spec.imag**2) / (fs * _WINDOW_POWER)  # (16, rows, 100)
    psd = psd.reshape(len(SPEC_REGIONS), 4, len(times), len(SPEC_BINS)).mean(axis=1)
    values = psd.transpose(1, 0, 2).reshape(len(times), -1)  # region-major, as the columns
    return times, values.astype(np.float32)
