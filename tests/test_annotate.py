"""hms.annotate and hms.data.recording: EDF files written here (from built-in dataset signals, with
non-HMS channel names and another sampling rate) through MNE, channel mapping, interpolation, the
timeline, the exported windows, and bad input."""

from __future__ import annotations

import datetime as dt
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from hms.annotation import annotate, window_starts
from hms.constants import CLASSES, CONSENSUS_NAMES, EEG_CHANNELS, SAMPLE_RATE, VOTE_COLUMNS
from hms.data.io import read_eeg, write_eeg_parquet
from hms.data.recording import EEGRecording, canonical_channel, map_channels
from hms.errors import HMSDataError
from hms.submission import predict
from tests.conftest import EDF_RATE, START, write_edf


@pytest.fixture(scope="module")
def segments(tiny, tmp_path_factory) -> tuple[Path, np.ndarray]:
    """Four clean 50-s EEGs of the tiny dataset as an HMS test split of their own (eeg_id 0-3),
    and their concatenation (200 s). The tiny preset draws artefacts often (NaN stretches, flat
    electrodes), so its test split may hold fewer than four clean files; the first 50 s of clean
    training EEGs make up the rest."""
    root, _ = tiny
    test_ids = pd.read_csv(root / "test.csv")["eeg_id"]
    train_ids = pd.read_csv(root / "train.csv")["eeg_id"].unique()
    candidates = [root / "test_eegs" / f"{i}.parquet" for i in test_ids]
    candidates += [root / "train_eegs" / f"{i}.parquet" for i in train_ids]
    folder = tmp_path_factory.mktemp("segments")
    (folder / "test_eegs").mkdir()
    parts = []
    for path in candidates:
        x = read_eeg(path)[: 50 * SAMPLE_RATE]
        if np.isfinite(x).all() and (x.std(axis=0)[:19] > 1).all():
            write_eeg_parquet(folder / "test_eegs" / f"{len(parts)}.parquet", x)
            parts.append(x)
        if len(parts) == 4:
            break
    assert len(parts) == 4, "the tiny dataset should hold four clean EEGs"
    ids = np.arange(4)
    pd.DataFrame({"spectrogram_id": ids, "eeg_id": ids, "patient_id": ids}).to_csv(
        folder / "test.csv", index=False
    )
    return folder, np.concatenate(parts)


@pytest.fixture(scope="module")
def edf(segments, tmp_path_factory) -> Path:
    return write_edf(tmp_path_factory.mktemp("edf") / "night.edf", segments[1])


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("Fp1", "Fp1"), ("EEG Fp1-REF", "Fp1"), ("FP1-LE", "Fp1"), ("eeg fz-ref", "Fz"),
        ("EEG T7-REF", "T3"), ("T8", "T4"), ("P7-A1", "T5"), ("EEG P8-AVG", "T6"),
        ("O2", "O2"), ("ECG EKG", "EKG"), ("EKG1-REF", "EKG"), ("FP1-F7", None),
        ("PHOTIC", None), ("EEG A1-REF", None), ("", None),
    ],
)  # fmt: skip
def test_channel_names(name, expected):
    assert canonical_channel(name) == expected


def test_two_channels_for_one_electrode_is_an_error():
    with pytest.raises(HMSDataError, match="'T3' and 'EEG T7-REF' are both T3"):
        map_channels(["Fp1", "T3", "EEG T7-REF"], "x.edf")


def test_recording_reads_edf_as_hms_microvolts(edf, segments):
    _, truth = segments
    rec = EEGRecording(edf)
    assert rec.sfreq == EDF_RATE
    assert rec.n_samples == len(truth)
    assert rec.start_time == START
    assert rec.mapping["T3"] == "EEG T7-REF" and "EKG" not in rec.mapping
    assert rec.interpolated == [] and rec.zero_filled == ["EKG"]  # only the scalp is read
    got = rec.read(0, rec.n_samples)
    assert got.shape == truth.shape and got.dtype == np.float32
    inner = slice(SAMPLE_RATE, -SAMPLE_RATE)  # away from the file's first and last second
    for c in range(19):
        a, b = got[inner, c], truth[inner, c]
        assert np.corrcoef(a, b)[0, 1] > 0.999, EEG_CHANNELS[c]
        assert abs(a.std() / b.std() - 1) < 0.01, EEG_CHANNELS[c]  # µV in, µV out
    # A span read on its own equals the same samples of a whole read (chunks join seamlessly).
    np.testing.assert_allclose(rec.read(12_345, 20_000), got[12_345:20_000], atol=1e-3)


def test_missing_channel_is_an_error_or_interpolated(segments, tmp_path):
    path = write_edf(tmp_path / "no_o1.edf", segments[1], drop=("O1",))
    with pytest.raises(HMSDataError, match=r"no_o1.edf: missing channel\(s\) \['O1'\]"):
        EEGRecording(path)
    rec = EEGRecording(path, missing="interpolate")
    assert rec.interpolated == ["O1"]
    got = rec.read(0, rec.n_samples)
    o1 = EEG_CHANNELS.index("O1")
    assert np.isfinite(got).all() and got[:, o1].std() > 1.0


def test_windows():
    assert window_starts(60 * SAMPLE_RATE, 10.0).tolist() == [0, 2000]
    with pytest.raises(HMSDataError, match="shorter than one 50-s window"):
        window_starts(49 * SAMPLE_RATE, 10.0)


def test_annotate_finds_each_segment(edf, segments, weights, tmp_path):
    """Windows that line up with a segment get the probabilities predict gives that segment's
    own HMS file, and each is closer to its own segment's than to any other's."""
    torch.set_num_threads(1)
    folder, _ = segments
    out = tmp_path / "out"
    timeline = annotate(edf, weights, out, step_s=10.0, export_windows=True, progress=False)
    assert len(timeline) == 16  # (200 s - 50 s) / 10 s + 1
    np.testing.assert_allclose(timeline["start_s"], np.arange(16) * 10.0)
    assert timeline["start_time"].iloc[5] == (START + dt.timedelta(seconds=50)).isoformat()
    probs = timeline[list(CLASSES)].to_numpy()
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-6)
    assert set(timeline["top_class"]) <= set(CONSENSUS_NAMES)
    assert (out / "timeline.png").stat().st_size > 10_000
    summary = json.loads((out / "annotate.json").read_text())
    assert summary["windows"] == 16 and summary["recording"]["channels"]["T5"] == "EEG P7-REF"

    # predict on the segments' own HMS files
    own = predict(folder, weights, out=None, progress=False)[list(VOTE_COLUMNS)].to_numpy()
    aligned = probs[[0, 5, 10, 15]]  # windows starting at 0, 50, 100, 150 s
    # Not equal: annotate filters each window with the recording around it, predict with the
    # segment's own file only (measured: at most 0.0013 apart per class).
    np.testing.assert_allclose(aligned, own, atol=0.005)
    dist = np.abs(aligned[:, None] - own[None]).sum(-1)  # (window, segment), L1
    spread = np.abs(own[:, None] - own[None]).sum(-1)
    # measured on the tiny test model: windows 0.0012-0.0022 from their own segment, segments
    # at least 0.0032 apart
    assert dist.diagonal().max() < spread[~np.eye(4, dtype=bool)].min(), "segments too alike"
    assert dist.argmin(axis=1).tolist() == [0, 1, 2, 3]

    # the exported windows are an HMS test split that predict reads as it is
    windows = out / "windows"
    exported = predict(windows, weights, out=None, progress=False)
    assert exported["eeg_id"].tolist() == list(range(16))
    eeg5 = read_eeg(windows / "test_eegs" / "5.parquet")
    rec = EEGRecording(edf)
    np.testing.assert_allclose(eeg5, rec.read(50 * SAMPLE_RATE, 100 * SAMPLE_RATE), atol=1e-3)
    times = pd.read_csv(windows / "windows.csv")
    assert times["start_s"].tolist() == timeline["start_s"].tolist()


def test_bad_input_writes_nothing(weights, segments, tmp_path):
    short = write_edf(tmp_path / "short.edf", segments[1][: 30 * SAMPLE_RATE])
    out = tmp_path / "out"
    with pytest.raises(HMSDataError, match=r"short.edf: recording lasts 30.0 s"):
        annotate(short, weights, out, progress=False)
    with pytest.raises(HMSDataError, match="recording not found"):
        annotate(tmp_path / "absent.edf", weights, out, progress=False)
    not_eeg = tmp_path / "notes.edf"
    not_eeg.write_text("not an EDF file")
    with pytest.raises(HMSDataError, match="MNE cannot read this recording"):
        annotate(not_eeg, weights, out, progress=False)
    assert not out.exists()


def test_cli_reports_missing_channels(weights, segments, tmp_path):
    path = write_edf(tmp_path / "no_c3.edf", segments[1][: 60 * SAMPLE_RATE], drop=("C3", "Fz"))
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "hms.annotate", f"recording={path}", f"weights_dir={weights}",
           f"out_dir={out}", "progress=false"]  # fmt: skip
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert done.returncode == 2, done.stderr
    assert "missing channel(s) ['C3']" in done.stderr and not out.exists()
    done = subprocess.run(
        [*cmd, "missing=interpolate"], capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr
    timeline = pd.read_csv(out / "timeline.csv")
    assert len(timeline) == 2 and (timeline["interpolated"] == "C3").all()
