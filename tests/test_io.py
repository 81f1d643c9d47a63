"""The readers on the real Kaggle files, and the errors bad input gets."""

from __future__ import annotations

import shutil

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from hms.constants import EEG_CHANNELS, SPEC_COLUMNS, SUBMISSION_COLUMNS, TRAIN_COLUMNS
from hms.data.io import (
    atomic_path,
    read_eeg,
    read_sample_submission,
    read_spectrogram,
    read_test_csv,
    read_train_csv,
)
from hms.errors import HMSDataError


def test_real_kaggle_files_read(kaggle_dir):
    eeg = read_eeg(kaggle_dir / "train_eegs" / "1000913311.parquet")
    assert eeg.shape == (10_000, 20) and eeg.dtype == np.float32
    test_eeg = read_eeg(kaggle_dir / "test_eegs" / "3911565283.parquet")
    assert test_eeg.shape == (10_000, 20)
    # The real values are microvolts of tens, first column Fp1.
    direct = pd.read_parquet(kaggle_dir / "test_eegs" / "3911565283.parquet")
    np.testing.assert_array_equal(test_eeg[:, 0], direct["Fp1"].to_numpy())
    assert 5 < np.nanstd(test_eeg[:, :19]) < 500

    times, values = read_spectrogram(kaggle_dir / "train_spectrograms" / "1000189855.parquet")
    assert values.shape == (690, 400) and times[0] == 1 and np.all(np.diff(times) == 2)
    times, values = read_spectrogram(kaggle_dir / "test_spectrograms" / "853520.parquet")
    assert values.shape == (300, 400) and times[-1] == 599

    test = read_test_csv(kaggle_dir / "test.csv")
    assert test.to_dict("records") == [
        {"spectrogram_id": 853520, "eeg_id": 3911565283, "patient_id": 6885}
    ]
    sub = read_sample_submission(kaggle_dir / "sample_submission.csv")
    assert list(sub.columns) == list(SUBMISSION_COLUMNS) and len(sub) == 1
    train = read_train_csv(kaggle_dir / "train.csv")  # the real header, no rows
    assert list(train.columns) == list(TRAIN_COLUMNS) and train.empty


def test_spectrogram_columns_match_the_real_files(kaggle_dir):
    names = pq.read_schema(kaggle_dir / "test_spectrograms" / "853520.parquet").names
    assert names == ["time", *SPEC_COLUMNS]


def test_missing_file_is_named(tmp_path):
    path = tmp_path / "nope.parquet"
    with pytest.raises(HMSDataError, match=r"nope\.parquet: EEG file not found"):
        read_eeg(path)


def test_renamed_column_is_named(tmp_path, kaggle_dir):
    table = pq.read_table(kaggle_dir / "test_eegs" / "3911565283.parquet")
    renamed = table.rename_columns(["FP1" if n == "Fp1" else n for n in table.column_names])
    path = tmp_path / "renamed.parquet"
    pq.write_table(renamed, path)
    with pytest.raises(HMSDataError) as err:
        read_eeg(path)
    assert "renamed.parquet" in str(err.value)
    assert "missing columns ['Fp1']" in str(err.value) and "FP1" in str(err.value)


def test_unreadable_parquet_is_named(tmp_path):
    path = tmp_path / "broken.parquet"
    path.write_bytes(b"PAR1 this is not a parquet file")
    with pytest.raises(HMSDataError, match=r"broken\.parquet: unreadable parquet"):
        read_eeg(path)


def test_non_numeric_column_is_named(tmp_path):
    cols = {name: pa.array(np.zeros(10, dtype=np.float32)) for name in EEG_CHANNELS}
    cols["Cz"] = pa.array(["a"] * 10)
    path = tmp_path / "text.parquet"
    pq.write_table(pa.table(cols), path)
    with pytest.raises(HMSDataError, match="'Cz' is string, not numeric"):
        read_eeg(path)


def test_short_recording_is_named(tmp_path, kaggle_dir):
    with pytest.raises(HMSDataError, match="fewer than the 20000 needed"):
        read_eeg(kaggle_dir / "test_eegs" / "3911565283.parquet", min_samples=20_000)


def test_train_csv_validation(tmp_path, kaggle_dir):
    header = (kaggle_dir / "train.csv").read_text().strip()
    good = "1,0,0.0,2,0,0.0,3,4,LPD,0,3,0,0,0,1"
    path = tmp_path / "train.csv"
    path.write_text(f"{header}\n{good}\n")
    assert read_train_csv(path)["lpd_vote"].tolist() == [3]

    path.write_text(header.replace("lpd_vote", "lpd_votes") + f"\n{good}\n")
    with pytest.raises(HMSDataError, match=r"train\.csv is missing columns \['lpd_vote'\]"):
        read_train_csv(path)
    path.write_text(f"{header}\n1,0,0.0,2,0,0.0,3,4,LPD,0,0,0,0,0,0\n")
    with pytest.raises(HMSDataError, match="have no votes"):
        read_train_csv(path)
    path.write_text(f"{header}\n{good}\n{good}\n")
    with pytest.raises(HMSDataError, match="repeats label_id"):
        read_train_csv(path)
    path.write_text("")
    with pytest.raises(HMSDataError, match="empty"):
        read_train_csv(path)


def test_test_csv_validation(tmp_path):
    path = tmp_path / "test.csv"
    path.write_text("spectrogram_id,eeg_id,patient_id\n")
    with pytest.raises(HMSDataError, match=r"test\.csv: test\.csv has no rows"):
        read_test_csv(path)
    path.write_text("spectrogram_id,eeg,patient_id\n1,2,3\n")
    with pytest.raises(HMSDataError, match=r"missing columns \['eeg_id'\]"):
        read_test_csv(path)


def test_atomic_write_leaves_nothing_on_failure(tmp_path):
    target = tmp_path / "out.csv"
    target.write_text("old")
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_text("half")
        raise RuntimeError("crash mid-write")
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["out.csv"]
    with atomic_path(target) as tmp:
        tmp.write_text("new")
    assert target.read_text() == "new"


def test_eeg_reader_keeps_nan(tmp_path, kaggle_dir):
    src = kaggle_dir / "train_eegs" / "1000913311.parquet"
    df = pd.read_parquet(src)
    df.loc[100:199, "C3"] = np.nan
    path = tmp_path / "nan.parquet"
    df.to_parquet(path, index=False)
    eeg = read_eeg(path)
    assert np.isnan(eeg[100:200, 2]).all() and np.isfinite(eeg[:100]).all()
    shutil.rmtree(tmp_path, ignore_errors=True)
