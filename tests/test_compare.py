"""Describing HMS folders (hms.data.describe) and comparing real with built-in EEG
(python -m hms.synth.compare)."""

from __future__ import annotations

import shutil
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from hms.constants import CHANNEL_INDEX, SAMPLE_RATE, SPEC_FREQS, WINDOW_SAMPLES
from hms.data.describe import (
    STATS,
    UNLABELLED,
    describe_folder,
    eeg_stats,
    find_units,
    spectrogram_stats,
    summarise,
)
from hms.data.io import read_eeg, read_spectrogram
from hms.data.preprocess import preprocess_recording
from hms.errors import HMSDataError
from hms.synth.compare import compare, comparison_table


def test_real_files_give_the_figures_measured_by_hand(kaggle_dir):
    """The real files' statistics, as measured independently for issue 14 (median over all
    spectrogram rows; bipolar SD of the 50-s EEG after the 0.5-20 Hz band-pass)."""
    _, train_spec = read_spectrogram(kaggle_dir / "train_spectrograms" / "1000189855.parquet")
    s = spectrogram_stats(train_spec)
    assert [round(s[b], 3) for b in ("delta", "theta", "alpha", "beta")] == [
        0.898, 0.063, 0.026, 0.014,
    ]  # fmt: skip
    assert s["spec_power"] == pytest.approx(146.5, abs=0.1)
    _, test_spec = read_spectrogram(kaggle_dir / "test_spectrograms" / "853520.parquet")
    assert spectrogram_stats(test_spec)["beta"] == pytest.approx(0.067, abs=5e-4)
    for split, eeg_id, sd in (("train", 1000913311, 7.70), ("test", 3911565283, 9.61)):
        raw = read_eeg(kaggle_dir / f"{split}_eegs" / f"{eeg_id}.parquet")
        stats = eeg_stats(raw, preprocess_recording(raw)[0])
        assert stats["amplitude_uv"] == pytest.approx(sd, abs=0.01)
        assert stats["eeg_nan"] == 0 and stats["flat_channels"] == 0
        assert 3.0 < stats["kurtosis"] < 6.0


def test_statistics_of_constructed_signals():
    # A spectrogram whose only power is at 10 Hz in every region: all of it is alpha.
    row = np.zeros((3, 4, len(SPEC_FREQS)))
    row[:, :, np.argmin(np.abs(np.asarray(SPEC_FREQS) - 10.0))] = 5.0
    row[1, 2, 0] = np.nan  # an incomplete row is left out of the band shares, counted as missing
    s = spectrogram_stats(row.reshape(3, -1))
    assert s["alpha"] == 1.0 and s["delta"] == s["theta"] == s["beta"] == 0.0
    assert s["spec_power"] == pytest.approx(5.0)
    assert s["spec_nan"] == pytest.approx(1 / row.size)

    # Every electrode a 6-Hz sine of amplitude 10 in one of three phases 120 degrees apart, no
    # two neighbours alike: each derivation is a sine of amplitude 10 * sqrt(3), SD 10 * sqrt(3/2);
    # the kurtosis of a sine is 1.5.
    t = np.arange(WINDOW_SAMPLES) / SAMPLE_RATE
    phases = {name: (i % 3) * 2 * np.pi / 3 for i, name in enumerate(CHANNEL_INDEX)}
    raw = np.stack([10 * np.sin(2 * np.pi * 6 * t + phases[n]) for n in CHANNEL_INDEX], axis=1)
    raw = raw.astype(np.float32)
    raw[:5000, CHANNEL_INDEX["O2"]] = np.nan  # half of one channel missing
    raw[:, CHANNEL_INDEX["Pz"]] = 3.0  # a flat channel (not in the double banana)
    stats = eeg_stats(raw, preprocess_recording(raw)[0])
    assert stats["eeg_nan"] == pytest.approx(0.5 / 19)
    assert stats["flat_channels"] == pytest.approx(1 / 19)
    clean = raw.copy()
    clean[:, CHANNEL_INDEX["O2"]] = 10 * np.sin(2 * np.pi * 6 * t + phases["O2"])
    stats = eeg_stats(clean, preprocess_recording(clean)[0])
    assert stats["amplitude_uv"] == pytest.approx(10 * np.sqrt(1.5), rel=0.02)
    assert stats["kurtosis"] == pytest.approx(1.5, abs=0.05)


def test_describe_labelled_and_unlabelled_folders(tiny, kaggle_dir):
    root, _ = tiny
    train = pd.read_csv(root / "train.csv")
    units = find_units(root)
    labelled = [u for u in units if u.split == "train"]
    assert len(labelled) == len(train.drop_duplicates(["eeg_id", "eeg_label_offset_seconds"]))
    assert {u.cls for u in labelled} == set(train["expert_consensus"])
    frame = describe_folder(root, max_units=None)
    assert len(frame) == len(units)
    labelled_rows = frame[frame["split"] == "train"]
    assert labelled_rows[list(STATS)].notna().all().all()  # both views for a labelled window
    real = describe_folder(kaggle_dir)
    # The real folder has no labels: 1 + 1 EEG windows, 690 // 25 + 300 // 25 spectrogram blocks.
    assert (real["class"] == UNLABELLED).all()
    assert real["eeg_id"].notna().sum() == 2 and real["spectrogram_id"].notna().sum() == 27 + 12
    summary = summarise({"real": real, "synth": frame})
    assert set(summary["group"][summary["dataset"] == "synth"]) >= {"all", *train.expert_consensus}
    table = comparison_table(summary)
    assert table.loc[("all", "amplitude_uv"), "real median in synth IQR"] in {"yes", "no"}
    sample = describe_folder(root, max_units=7, seed=1)
    assert len(sample) == 7 and sample.equals(describe_folder(root, max_units=7, seed=1))


def test_compare_command_writes_its_files(tiny, kaggle_dir, tmp_path):
    root, _ = tiny
    out = tmp_path / "cmp"
    result = subprocess.run(
        [sys.executable, "-m", "hms.synth.compare", f"real={kaggle_dir}", f"synth={root}",
         f"out={out}", "max_units=40"],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "real median in synth IQR" in result.stdout and "amplitude_uv" in result.stdout
    summary = pd.read_csv(out / "compare_summary.csv")
    assert set(summary["dataset"]) == {"real", "synth"}
    assert len(pd.read_csv(out / "compare_units.csv")) == 80  # 40 of each folder's units
    assert (out / "compare.png").stat().st_size > 20_000
    assert not list(out.glob(".*tmp"))  # written atomically: no temporary files left


def test_bad_folders_are_named(tmp_path, kaggle_dir):
    with pytest.raises(HMSDataError, match="not a folder"):
        find_units(tmp_path / "missing")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(HMSDataError, match="no EEG or spectrogram files"):
        find_units(empty)
    bad = tmp_path / "bad"
    shutil.copytree(kaggle_dir, bad)
    (bad / "train_eegs" / "notes.parquet").write_bytes(b"x")
    with pytest.raises(HMSDataError, match=r"notes\.parquet.*integer id"):
        find_units(bad)
    (bad / "train_eegs" / "notes.parquet").unlink()
    (bad / "train_eegs" / "123.parquet").write_bytes(b"not parquet")
    with pytest.raises(HMSDataError, match=r"123\.parquet"):
        find_units(bad)
    result = subprocess.run(
        [sys.executable, "-m", "hms.synth.compare", f"real={bad}"],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert result.returncode == 2 and "123.parquet" in result.stderr
    result = subprocess.run(
        [sys.executable, "-m", "hms.synth.compare"], capture_output=True, text=True, check=False
    )
    assert result.returncode == 2 and "real=DIR" in result.stderr
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(HMSDataError, match=r"cannot write the output folder here: .* not a folder"):
        compare({"real": kaggle_dir}, 10, 0, blocker / "out")  # refused before any work


def test_window_past_the_end_of_its_recording_is_reported(tiny, tmp_path):
    root, _ = tiny
    copy = tmp_path / "tiny"
    shutil.copytree(root, copy)
    train = pd.read_csv(copy / "train.csv")
    eeg_id = int(train["eeg_id"].iloc[0])
    raw = read_eeg(copy / "train_eegs" / f"{eeg_id}.parquet")
    train.loc[train["eeg_id"] == eeg_id, "eeg_label_offset_seconds"] = len(raw) / SAMPLE_RATE
    train.to_csv(copy / "train.csv", index=False)
    with pytest.raises(HMSDataError, match=f"{eeg_id}.parquet.*needs"):
        describe_folder(copy, max_units=None)
