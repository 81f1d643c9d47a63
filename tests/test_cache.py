"""The prepared cache: contents equal the preprocessing of the files, keys, atomic builds."""

from __future__ import annotations

import pickle
import shutil

import numpy as np
import pandas as pd
import pytest

import hms.data.cache as cache_mod
from hms.constants import SPEC_WINDOW_ROWS, TRAIN_COLUMNS, WINDOW_SAMPLES
from hms.data.cache import HMSCache, build_cache
from hms.data.dataset import CacheDataset
from hms.data.io import read_eeg, read_spectrogram, write_eeg_parquet
from hms.data.prepared import load_folds, prepare
from hms.data.preprocess import RecordingSettings, preprocess_recording
from hms.errors import HMSDataError

from .conftest import copy_kaggle_test


def test_windows_equal_preprocessed_files(small_layout, tmp_path):
    root, train = small_layout
    settings = RecordingSettings(dtype="float32")
    cache = HMSCache(build_cache(root, tmp_path / "cache", "train", settings, progress=False))
    assert len(cache.windows) == len(train)
    # Rows 0-1 and row 2 of each EEG carry different votes: two samples per EEG.
    assert len(cache) == 2 * train["eeg_id"].nunique()
    for w in [0, 1, 5, len(cache.windows) - 1]:
        row = cache.windows.iloc[w]
        label = train.set_index("label_id").loc[row["label_id"]]
        filtered, _ = preprocess_recording(
            read_eeg(root / "train_eegs" / f"{int(row.eeg_id)}.parquet")
        )
        start = int(label["eeg_label_offset_seconds"] * 200)
        np.testing.assert_array_equal(cache.eeg_window(w), filtered[start : start + WINDOW_SAMPLES])
        times, values = read_spectrogram(
            root / "train_spectrograms" / f"{label['spectrogram_id']}.parquet"
        )
        first = int(label["spectrogram_label_offset_seconds"] // 2)
        assert times[first] == label["spectrogram_label_offset_seconds"] + 1
        np.testing.assert_array_equal(
            cache.spec_window(w), values[first : first + SPEC_WINDOW_ROWS]
        )


def test_float16_cache_is_close_and_picklable(small_layout, tmp_path):
    root, _ = small_layout
    cache = HMSCache(build_cache(root, tmp_path / "cache", "train", progress=False))
    assert cache.manifest["eeg_dtype"] == "float16"
    x = cache.eeg_window(0)
    assert x.dtype == np.float32 and x.shape == (WINDOW_SAMPLES, 20)
    row = cache.windows.iloc[0]
    filtered, _ = preprocess_recording(read_eeg(root / "train_eegs" / f"{int(row.eeg_id)}.parquet"))
    np.testing.assert_allclose(x, filtered[:WINDOW_SAMPLES], atol=0.05)
    blob = pickle.dumps(cache)  # what a DataLoader worker receives: indices, not data
    assert len(blob) < 100_000
    clone = pickle.loads(blob)
    np.testing.assert_array_equal(clone.eeg_window(3), cache.eeg_window(3))


def test_key_follows_settings_and_inputs(small_layout, tmp_path):
    root, train = small_layout
    a = build_cache(root, tmp_path / "c", "train", RecordingSettings(), progress=False)
    assert build_cache(root, tmp_path / "c", "train", RecordingSettings(), progress=False) == a
    b = build_cache(root, tmp_path / "c", "train", RecordingSettings(high_hz=30.0), progress=False)
    assert b != a and (b / "manifest.json").is_file()
    train.iloc[:-1].to_csv(root / "train.csv", index=False)  # the labels changed
    c = build_cache(root, tmp_path / "c", "train", RecordingSettings(), progress=False)
    assert c not in (a, b)


def test_a_signal_file_rewritten_with_the_same_size_gets_a_new_cache(small_layout, tmp_path):
    root, train = small_layout
    a = HMSCache(build_cache(root, tmp_path / "c", "train", progress=False))
    path = root / "train_eegs" / f"{train['eeg_id'].iloc[0]}.parquet"
    eeg = read_eeg(path)
    size = path.stat().st_size
    write_eeg_parquet(path, eeg[:, [1, 0, *range(2, eeg.shape[1])]])  # two channels swapped
    assert path.stat().st_size == size
    b = HMSCache(build_cache(root, tmp_path / "c", "train", progress=False))
    assert b.path != a.path
    assert not np.array_equal(np.asarray(a.eeg_array), np.asarray(b.eeg_array))


def test_interrupted_build_leaves_nothing_trusted(small_layout, tmp_path, monkeypatch):
    root, _ = small_layout
    calls = {"n": 0}
    real_job = cache_mod._spec_job

    def dying_job(args):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt  # as if the user pressed Ctrl-C mid-build
        return real_job(args)

    monkeypatch.setattr(cache_mod, "_spec_job", dying_job)
    with pytest.raises(KeyboardInterrupt):
        build_cache(root, tmp_path / "cache", "train", progress=False)
    leftovers = [p.name for p in (tmp_path / "cache").iterdir() if not p.name.endswith(".lock")]
    assert leftovers == []
    monkeypatch.setattr(cache_mod, "_spec_job", real_job)
    path = build_cache(root, tmp_path / "cache", "train", progress=False)
    assert HMSCache(path).manifest["n_windows"] > 0


def test_concurrent_builds_of_one_cache_build_it_once(small_layout, tmp_path):
    """Two builds of the same inputs at once (two threads here; processes alike, the lock is a
    file lock): one builds, the other waits for it and returns the same complete cache."""
    from concurrent.futures import ThreadPoolExecutor

    root, _ = small_layout
    with ThreadPoolExecutor(2) as pool:
        paths = list(pool.map(lambda _: build_cache(root, tmp_path / "c", progress=False), [0, 1]))
    assert paths[0] == paths[1] and HMSCache(paths[0]).manifest["n_windows"] > 0
    assert [p.name for p in (tmp_path / "c").iterdir() if not p.name.endswith(".lock")] == [
        paths[0].name
    ]


def test_parallel_build_equals_serial(small_layout, tmp_path):
    root, _ = small_layout
    serial = HMSCache(build_cache(root, tmp_path / "s", "train", workers=1, progress=False))
    parallel = HMSCache(build_cache(root, tmp_path / "p", "train", workers=2, progress=False))
    assert np.array_equal(np.asarray(serial.eeg_array), np.asarray(parallel.eeg_array))
    assert np.array_equal(np.asarray(serial.spec_array), np.asarray(parallel.spec_array))


def test_nan_in_spectrogram_becomes_zero(small_layout, tmp_path):
    root, train = small_layout
    spec_id = train["spectrogram_id"].iloc[0]
    path = root / "train_spectrograms" / f"{spec_id}.parquet"
    df = pd.read_parquet(path)
    df.iloc[20:40, 1:50] = np.nan
    df.to_parquet(path, index=False)
    cache = HMSCache(build_cache(root, tmp_path / "cache", "train", progress=False))
    assert np.isfinite(np.asarray(cache.spec_array)).all()
    info = cache.spectrograms.set_index("spectrogram_id").loc[spec_id]
    assert info["nan_fraction"] > 0


def test_bad_inputs_are_named(small_layout, tmp_path):
    root, train = small_layout
    eeg_id = train["eeg_id"].iloc[-1]
    # Too short for its labels.
    df = pd.read_parquet(root / "train_eegs" / f"{eeg_id}.parquet")
    df.iloc[:12_000].to_parquet(root / "train_eegs" / f"{eeg_id}.parquet", index=False)
    with pytest.raises(HMSDataError, match=rf"{eeg_id}\.parquet: recording is too short"):
        build_cache(root, tmp_path / "c1", "train", progress=False)
    # Missing file: all of them are listed with the csv that names them.
    (root / "train_eegs" / f"{eeg_id}.parquet").unlink()
    with pytest.raises(HMSDataError, match=rf"train\.csv: 1 file\(s\).*{eeg_id}\.parquet"):
        build_cache(root, tmp_path / "c2", "train", progress=False)
    assert not any((tmp_path / "c2").glob("train-*"))


def test_prepare_writes_folds_once(small_layout, tmp_path):
    root, train = small_layout
    prepared = prepare(root, tmp_path / "cache", n_folds=3, fold_seed=7, progress=False)
    folds = load_folds(prepared.folds)
    assert len(folds) == len(train) and set(folds["fold"]) == {0, 1, 2}
    assert (folds.groupby("patient_id")["fold"].nunique() == 1).all()
    mtime = prepared.folds.stat().st_mtime_ns
    again = prepare(root, tmp_path / "cache", n_folds=3, fold_seed=7, progress=False)
    assert again.folds == prepared.folds and prepared.folds.stat().st_mtime_ns == mtime
    assert "test" not in prepared.caches  # no test.csv in this folder
    with pytest.raises(HMSDataError, match="no test cache"):
        prepared.cache("test")


def test_real_kaggle_files_through_the_cache(kaggle_dir, tmp_path):
    """The real train EEG/spectrogram and the public test split, through prepare."""
    data = copy_kaggle_test(kaggle_dir, tmp_path / "data")
    shutil.copytree(kaggle_dir / "train_eegs", data / "train_eegs")
    shutil.copytree(kaggle_dir / "train_spectrograms", data / "train_spectrograms")
    header = (kaggle_dir / "train.csv").read_text().strip().split(",")
    assert header == list(TRAIN_COLUMNS)
    # Labels invented for the real files (Kaggle publishes none for them): one window at 0 s,
    # the spectrogram window at 100 s, for two patients so that folds can be made.
    rows = [
        [1000913311, 0, 0.0, 1000189855, 0, 100.0, 1, 1, "LPD", 0, 3, 0, 0, 0, 1],
        [1000913311, 1, 0.0, 1000189855, 1, 200.0, 2, 1, "LPD", 1, 3, 0, 0, 0, 1],
    ]
    pd.DataFrame(rows, columns=header).to_csv(data / "train.csv", index=False)
    train_cache = HMSCache(build_cache(data, tmp_path / "cache", "train", progress=False))
    raw = read_eeg(kaggle_dir / "train_eegs" / "1000913311.parquet")
    filtered, _ = preprocess_recording(raw)
    np.testing.assert_allclose(train_cache.eeg_window(0), filtered, rtol=1e-3, atol=0.05)  # float16
    _, values = read_spectrogram(kaggle_dir / "train_spectrograms" / "1000189855.parquet")
    assert train_cache.windows["spec_offset_s"].tolist() == [100.0, 200.0]
    np.testing.assert_array_equal(train_cache.spec_window(0), values[50 : 50 + 300])
    np.testing.assert_array_equal(train_cache.spec_window(1), values[100 : 100 + 300])

    test_cache = HMSCache(build_cache(data, tmp_path / "cache", "test", progress=False))
    assert test_cache.samples["eeg_id"].tolist() == [3911565283]
    x = test_cache.eeg_window(0)
    assert x.shape == (10_000, 20) and np.isfinite(x).all()
    _, test_values = read_spectrogram(kaggle_dir / "test_spectrograms" / "853520.parquet")
    np.testing.assert_array_equal(test_cache.spec_window(0), test_values)


def test_missing_test_eeg_is_named(kaggle_dir, tmp_path):
    data = copy_kaggle_test(kaggle_dir, tmp_path / "data")
    (data / "test_eegs" / "3911565283.parquet").unlink()
    with pytest.raises(HMSDataError, match=r"test\.csv: 1 file\(s\).*3911565283\.parquet"):
        prepare(data, tmp_path / "cache", splits=("test",), progress=False)


def test_builtin_dataset_through_prepare_and_dataset(tiny, tmp_path):
    """The tiny built-in dataset, NaN stretches and flat channels included, as model input."""
    root, _ = tiny
    prepared = prepare(root, tmp_path / "cache", n_folds=3, progress=False)
    train, test = prepared.cache("train"), prepared.cache("test")
    assert (train.eegs["n_bad_channels"] > 0).any()  # the files do hold NaN stretches
    assert (train.eegs["n_flat_channels"] > 0).any()
    ds = CacheDataset(train, random_window=True)
    for i in range(len(ds)):
        item = ds[i]
        assert item["eeg"].shape == (16, WINDOW_SAMPLES) and item["spec"].shape == (300, 400)
        assert np.isfinite(item["eeg"]).all() and np.isfinite(item["spec"]).all()
        assert item["target"].sum() == pytest.approx(1.0, abs=1e-5) and item["n_votes"] >= 1
    # Folds are per patient and every fold has validation samples.
    folds = load_folds(prepared.folds)
    assert folds.groupby("patient_id")["fold"].nunique().max() == 1
    assert set(folds["fold"]) == {0, 1, 2}
    test_ds = CacheDataset(test)
    assert len(test_ds) == len(pd.read_csv(root / "test.csv"))
    assert np.isfinite(test_ds[0]["eeg"]).all()


def test_random_windows_cover_a_sample(tiny, tmp_path):
    root, _ = tiny
    cache = prepare(root, tmp_path / "cache", n_folds=3, progress=False).cache("train")
    multi = int(np.flatnonzero(cache.n_windows > 2)[0])
    ds = CacheDataset(cache, indices=[multi], random_window=True, seed=1)
    seen = {ds._pick(multi) for _ in range(200)}
    assert len(seen) == cache.n_windows[multi]
    fixed = CacheDataset(cache, indices=[multi])
    assert len({fixed._pick(multi) for _ in range(10)}) == 1
