"""Recordings as EEG systems write them: signals hms does not use (an ECG, an SpO2, a photic or
trigger channel, at rates of their own) change nothing of what hms reads, nor the rate it reads
at; EEG channels of different rates are refused in one line."""

from __future__ import annotations

import string

import edfio
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hms.constants import SCALP_CHANNELS
from hms.data.recording import EEGRecording, canonical_channel
from hms.errors import HMSDataError

RATE, SECONDS = 256, 12
EEG = np.random.default_rng(0).normal(0, 20, (len(SCALP_CHANNELS), RATE * SECONDS))


def eeg_signals(rates: dict[str, int] | None = None) -> list[edfio.EdfSignal]:
    rates = rates or {}
    signals = []
    for name, x in zip(SCALP_CHANNELS, EEG, strict=True):
        rate = rates.get(name, RATE)
        x = x if rate == RATE else np.resize(x, rate * SECONDS)
        signals.append(edfio.EdfSignal(x, sampling_frequency=rate, label=f"EEG {name}-REF",
                                       physical_range=(-500, 500)))  # fmt: skip
    return signals


def aux_signal(label: str, rate: float, seed: int = 1) -> edfio.EdfSignal:
    n = max(1, round(rate * SECONDS))
    x = np.random.default_rng(seed).normal(0, 100, n)
    return edfio.EdfSignal(x, sampling_frequency=rate, label=label, physical_range=(-800, 800))


@pytest.fixture(scope="module")
def alone(tmp_path_factory):
    path = tmp_path_factory.mktemp("alone") / "eeg.edf"
    edfio.Edf(eeg_signals()).write(path)
    recording = EEGRecording(path)
    return recording.read(0, recording.n_samples)


def test_the_issues_recording_reads_as_the_eeg_alone(alone, tmp_path):
    """The EEG at 256 Hz beside an ECG at 512 Hz, an SpO2 at 1 Hz and a photic channel at 64 Hz:
    the same samples, read at the EEG's rate, and the file says what was read."""
    path = tmp_path / "with aux.edf"
    aux = [aux_signal("ECG", 512), aux_signal("SpO2", 1), aux_signal("Photic", 64)]
    edfio.Edf([*eeg_signals(), *aux]).write(path)
    recording = EEGRecording(path)
    assert recording.sfreq == RATE
    assert np.array_equal(recording.read(0, recording.n_samples), alone)
    described = recording.describe()
    assert described["sfreq_hz"] == RATE
    assert described["eeg_channels_read"] == [f"EEG {c}-REF" for c in SCALP_CHANNELS]
    assert "EKG" in described["zero_filled"]  # the ECG is not read: no montage uses it


labels = st.text(string.ascii_letters + string.digits + " _-", min_size=1, max_size=16).filter(
    lambda s: s.strip() and canonical_channel(s) in (None, "EKG")
)
AUX_RATES = [1, 2, 8, 50, 64, 100, 128, 200, 500, 512, 1000, 1024, 2048]
signals = st.lists(
    st.tuples(labels, st.sampled_from(AUX_RATES)),
    min_size=1, max_size=4, unique_by=lambda t: t[0].strip().upper(),
)  # fmt: skip


@settings(
    max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(aux=signals, first=st.booleans())
def test_any_auxiliary_signals_change_nothing(alone, tmp_path, aux, first):
    """Random signals beside the EEG (rates 1 to 2,048 Hz, any labels that are not scalp
    electrodes, before or after the EEG): the same samples, bit for bit, at the EEG's rate."""
    extra = [aux_signal(label, rate, seed=i) for i, (label, rate) in enumerate(aux)]
    path = tmp_path / "any.edf"
    edfio.Edf([*extra, *eeg_signals()] if first else [*eeg_signals(), *extra]).write(path)
    recording = EEGRecording(path)
    assert recording.sfreq == RATE
    assert np.array_equal(recording.read(0, recording.n_samples), alone)


def test_eeg_channels_of_different_rates_are_refused_in_one_line(tmp_path):
    path = tmp_path / "mixed.edf"
    edfio.Edf(eeg_signals({"Cz": 512, "O2": 128})).write(path)
    with pytest.raises(HMSDataError) as info:
        EEGRecording(path)
    message = str(info.value)
    assert "\n" not in message and str(path) in message
    assert "sampled at different rates" in message
    assert "'EEG Cz-REF': '512 Hz'" in message and "'EEG O2-REF': '128 Hz'" in message
