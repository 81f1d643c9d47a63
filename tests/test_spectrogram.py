"""The Kaggle-style spectrogram against the real competition files."""

from __future__ import annotations

import numpy as np

from hms.constants import SPEC_EEG_LAG
from hms.data.io import read_eeg, read_spectrogram
from hms.data.spectrogram import kaggle_spectrogram, row_times


def _compare(kaggle_dir, lag: int) -> tuple[float, float]:
    eeg = read_eeg(kaggle_dir / "test_eegs" / "3911565283.parquet")
    times, official = read_spectrogram(kaggle_dir / "test_spectrograms" / "853520.parquet")
    keep = (times - lag >= 3) & (times - lag <= 47)  # rows whose window lies in the 50-s EEG
    _, ours = kaggle_spectrogram(eeg, times[keep] - lag)
    ref = official[keep]
    corr = np.corrcoef(np.log(ref.ravel() + 1e-3), np.log(ours.ravel() + 1e-3))[0, 1]
    return float(corr), float(np.median(ref / ours))


def test_matches_the_official_test_spectrogram(kaggle_dir):
    corr, ratio = _compare(kaggle_dir, SPEC_EEG_LAG)
    assert corr > 0.9, corr
    assert 0.8 < ratio < 1.3, ratio  # same units (µV²/Hz), not just the same shape


def test_the_eeg_sits_at_the_centre_of_the_spectrogram_window(kaggle_dir):
    scores = {lag: _compare(kaggle_dir, lag)[0] for lag in range(265, 286, 2)}
    scores.update({lag: _compare(kaggle_dir, lag)[0] for lag in (274, 276)})
    assert max(scores, key=scores.get) == SPEC_EEG_LAG


def test_rows_times_and_nan_safety():
    assert row_times(10_000).tolist() == list(range(1, 50, 2))
    x = np.random.default_rng(0).normal(0, 20, (2_000, 20)).astype(np.float32)
    x[100:300, 0] = np.nan
    times, values = kaggle_spectrogram(x)
    assert times.tolist() == [1.0, 3.0, 5.0, 7.0, 9.0]
    assert values.shape == (5, 400) and np.isfinite(values).all() and (values >= 0).all()


def test_power_lands_in_the_right_chain_and_bin():
    t = np.arange(60 * 200) / 200
    x = np.zeros((len(t), 20), dtype=np.float32)
    x[:, 0] = 50 * np.sin(2 * np.pi * 7.03125 * t)  # Fp1: in LL (Fp1-F7) and LP (Fp1-F3) only
    _, values = kaggle_spectrogram(x)
    per_region = values.reshape(len(values), 4, 100).mean(axis=0)  # LL, RL, LP, RP
    # A 50-µV sine in one pair of four: PSD peak (25 * 512)² / (200 * 384) / 4 = 533 µV²/Hz.
    assert 450 < per_region[0].max() < 600 and 450 < per_region[2].max() < 600
    assert per_region[1].max() < 1e-6 and per_region[3].max() < 1e-6
    assert per_region[0].argmax() == 36 - 3  # bin 36 = 7.03 Hz
