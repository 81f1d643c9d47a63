"""Spectrogram rows of a session where no EEG file exists, synthesised in the spectral domain.

A Kaggle spectrogram row is, per chain, the mean over 4 bipolar pairs of a Hann periodogram. For
Gaussian activity of PSD S(f), one pair's bin is S(f) times an Exp(1) fluctuation, so the chain
mean is S(f) times about Gamma(4)/4 (a little wider: neighbouring pairs share an electrode). The
Hann window correlates neighbouring bins (power correlation 0.44) and consecutive rows overlap
by 3.12 of 5.12 s (power correlation 0.12). Rows are drawn as expected PSD x such a fluctuation:
Gamma noise smoothed over bins and rows with kernels that give those correlations, its shape
chosen to keep the variance of the chain mean. The expected PSD is written down from the same
model that renders the EEG.
"""

from __future__ import annotations

import numpy as np

from hms.constants import SAMPLE_RATE, SPEC_BINS, SPEC_NFFT
from hms.synth.fields import spectrogram_pairs

BIN_FREQS = np.array(SPEC_BINS) * SAMPLE_RATE / SPEC_NFFT


def hann_psd(x: np.ndarray, fs: int = SAMPLE_RATE) -> np.ndarray:
    """(100,) mean Hann periodogram of a 1-D signal at the spectrogram bins (µV²/Hz)."""
    win = np.hanning(SPEC_NFFT)
    starts = np.arange(0, len(x) - SPEC_NFFT + 1, fs)
    segs = x[starts[:, None] + np.arange(SPEC_NFFT)[None, :]].astype(np.float64)
    segs -= segs.mean(axis=1, keepdims=True)
    spec = np.abs(np.fft.rfft(segs * win, axis=1)) ** 2 / (fs * np.sum(win**2))
    return spec[:, list(SPEC_BINS)].mean(axis=0)


def pair_field_psd(field: np.ndarray, psd: np.ndarray) -> np.ndarray:
    """(16, 100) PSD in the bipolar pairs of a source with scalp ``field`` (19,) and PSD (100,)."""
    anode, cathode = spectrogram_pairs()
    return np.outer((field[anode] - field[cathode]) ** 2, psd)


def _kernel_for(corr: float) -> np.ndarray:
    """Symmetric 3-tap kernel [c, 1-2c, c] whose smoothing gives lag-1 correlation ``corr``."""
    cs = np.linspace(0.0, 1 / 3, 3001)
    lag1 = 2 * cs * (1 - 2 * cs) / (2 * cs**2 + (1 - 2 * cs) ** 2)
    c = cs[np.argmin(np.abs(lag1 - corr))]
    return np.array([c, 1 - 2 * c, c])


BIN_KERNEL = _kernel_for(0.44)  # |0.25 / 0.375|^2: Hann power correlation of adjacent bins
_b = (1 - np.sqrt(1 - 4 * 0.12**2)) / (2 * 0.12)  # 2-tap [1, b]: lag-1 correlation 0.12
ROW_KERNEL = np.array([1.0, _b]) / (1.0 + _b)
# Variance of a chain value / its mean: 1/4 for 4 independent pairs, but neighbouring pairs of a
# chain share an electrode (and the scalp field), which raises it; 0.33 matches rows computed
# from the synthetic EEG (and 0.34 is measured on white referential noise).
CHAIN_VARIANCE = 0.33
GAMMA_SHAPE = float(np.sum(BIN_KERNEL**2) * np.sum(ROW_KERNEL**2)) / CHAIN_VARIANCE


def surrogate_rows(rng: np.random.Generator, expected: np.ndarray) -> np.ndarray:
    """(rows, 400) float32 spectrogram rows for expected pair PSDs ``expected`` (rows, 16, 100)."""
    rows, _, bins = expected.shape
    if rows == 0:
        return np.zeros((0, 4 * bins), dtype=np.float32)
    chain_psd = expected.reshape(rows, 4, 4, bins).mean(axis=2)
    g = rng.standard_gamma(GAMMA_SHAPE, size=(rows + 1, 4, bins + 2), dtype=np.float32)
    g /= np.float32(GAMMA_SHAPE)
    k = BIN_KERNEL.astype(np.float32)
    g = k[0] * g[..., :-2] + k[1] * g[..., 1:-1] + k[2] * g[..., 2:]
    r = ROW_KERNEL.astype(np.float32)
    fluct = r[0] * g[1:] + r[1] * g[:-1]
    return (chain_psd * fluct).reshape(rows, 4 * bins).astype(np.float32)
