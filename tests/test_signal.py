"""Cleaning, filtering, montage and flip."""

from __future__ import annotations

import numpy as np
import pytest

from hms.constants import BIPOLAR_PAIRS, CHAINS, CHANNEL_INDEX, EEG_CHANNELS, MIRROR, SAMPLE_RATE
from hms.data.io import read_eeg
from hms.data.montage import (
    apply_montage,
    bipolar_flip_index,
    bipolar_names,
)
from hms.data.preprocess import (
    RecordingSettings,
    WindowSettings,
    preprocess_recording,
    window_to_bipolar,
)
from hms.data.signal import bandpass, fill_nonfinite


def _sine(freq: float, seconds: float = 20.0) -> np.ndarray:
    t = np.arange(int(seconds * SAMPLE_RATE)) / SAMPLE_RATE
    return np.sin(2 * np.pi * freq * t)[:, None].astype(np.float32)


def test_fill_nonfinite_interpolates_and_zeroes():
    x = np.tile(np.linspace(0, 99, 100, dtype=np.float32)[:, None], (1, 3))
    x[10:20, 0] = np.nan
    x[0:5, 1] = np.inf
    x[:, 2] = np.nan
    y, q = fill_nonfinite(x)
    assert np.isfinite(y).all()
    np.testing.assert_allclose(y[10:20, 0], np.arange(10, 20), atol=1e-4)  # linear in the gap
    np.testing.assert_allclose(y[0:5, 1], 5.0)  # held before the first good sample
    assert (y[:, 2] == 0).all()
    np.testing.assert_allclose(q.bad_fraction, [0.1, 0.05, 1.0])
    assert q.flat.tolist() == [False, False, True]
    assert np.isnan(x[10, 0])  # the input is not modified


@pytest.mark.parametrize(("freq", "passes"), [(0.1, False), (5.0, True), (12.0, True), (40, False)])
def test_bandpass_response(freq, passes):
    y = bandpass(_sine(freq, 60.0), 0.5, 20.0)
    gain = y[2000:-2000].std() / _sine(freq, 60.0)[2000:-2000].std()
    assert (gain > 0.9) if passes else (gain < 0.1), gain


def test_notch_removes_mains():
    x = _sine(60.0) + _sine(10.0)
    y = bandpass(x, None, None, notch_hz=60.0)
    residual = y[400:-400] - _sine(10.0)[400:-400]
    assert residual.std() < 0.05


def test_montage_pairs_and_clip():
    x = np.zeros((5, 20), dtype=np.float32)
    x[:, EEG_CHANNELS.index("Fp1")] = 3000.0
    x[:, EEG_CHANNELS.index("F7")] = 1.0
    y = apply_montage(x, clip_uv=1024)
    assert y.shape == (5, 16)
    assert bipolar_names()[0] == "Fp1-F7" and y[0, 0] == 1024.0  # clipped
    assert y[0, 1] == 1.0  # F7-T3
    assert apply_montage(x, midline=True).shape == (5, 18)
    assert bipolar_names(midline=True)[-2:] == ["Fz-Cz", "Cz-Pz"]
    assert [p for c in CHAINS.values() for p in c] == list(BIPOLAR_PAIRS)


def test_flip_is_consistent_between_referential_and_bipolar(kaggle_dir):
    x = read_eeg(kaggle_dir / "test_eegs" / "3911565283.parquet")
    for midline in (False, True):
        ref_flip = [CHANNEL_INDEX[MIRROR[name]] for name in EEG_CHANNELS]  # each electrode's mirror
        bip_flip = bipolar_flip_index(midline)
        a = apply_montage(x[:, ref_flip], midline, clip_uv=None)
        b = apply_montage(x, midline, clip_uv=None)[:, bip_flip]
        np.testing.assert_array_equal(a, b)
        assert np.array_equal(bip_flip[bip_flip], np.arange(len(bip_flip)))  # an involution
    names = bipolar_names()
    assert names[bipolar_flip_index()[0]] == "Fp2-F8"  # LL <-> RL
    assert names[bipolar_flip_index()[4]] == "Fp2-F4"  # LP <-> RP


def test_real_recording_with_nan_gives_finite_model_input(kaggle_dir):
    x = read_eeg(kaggle_dir / "train_eegs" / "1000913311.parquet")
    x[2000:2600, :5] = np.nan  # a NaN stretch on several channels
    x[:, 10] = np.nan  # a dead channel
    x[5000, 3] = 1e7  # a huge artefact
    filtered, quality = preprocess_recording(x, RecordingSettings())
    assert np.isfinite(filtered).all() and filtered.dtype == np.float32
    assert quality.bad_fraction[10] == 1.0 and quality.any_bad
    window = window_to_bipolar(filtered, WindowSettings(clip_uv=1024.0, scale=0.5))
    assert window.shape == (16, 10_000) and np.isfinite(window).all()
    assert np.abs(window).max() <= 512.0 + 1e-3
