"""Long inputs stay predictable (issue 25, item 4): a test.csv of 100,000 ids, signal files
beyond the readers' limits, a week-long EDF. Each is read or streamed in bounded memory with
progress lines, or refused before any work with the limit named. The limits are monkeypatched
small rather than files written large (no file here is larger than a few MB on disk)."""

from __future__ import annotations

import json
import re
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from hms import annotation
from hms.annotation import annotate
from hms.blend import ENSEMBLE_FILE
from hms.constants import SAMPLE_RATE, WINDOW_SAMPLES
from hms.data import cache as hms_cache
from hms.data import io as hms_io
from hms.data.io import read_eeg, read_spectrogram, read_test_csv
from hms.data.recording import EEGRecording
from hms.errors import HMSDataError, HMSRunError
from hms.submission import predict

from .conftest import copy_kaggle_test, write_member_checkpoint
from .test_fuzz import GLOBAL_FIELDS, GOOD_DATA, SCALP_NAMES, edf_bytes

MEMBER = "resnet1d_gru"
N_IDS = 100_000
WEEK_S = 7 * 24 * 3600


@pytest.fixture(scope="module")
def weights_dir(tmp_path_factory) -> Path:
    """A weights folder of one untrained member (what is under test is the input's length)."""
    folder = tmp_path_factory.mktemp("long") / "weights"
    (folder / MEMBER).mkdir(parents=True)
    write_member_checkpoint(MEMBER, folder / MEMBER / "fold0.ckpt")
    member = {"checkpoints": [f"{MEMBER}/fold0.ckpt"], "data": GOOD_DATA}
    manifest = {"format": 1, "name": "long", "weights": {MEMBER: 1.0}, "members": {MEMBER: member}}
    (folder / ENSEMBLE_FILE).write_text(json.dumps(manifest))
    return folder


def _fail(*args, **kwargs):
    raise AssertionError("read although the input was to be refused first")


def write_test_csv(path: Path, n: int) -> None:
    ids = np.arange(n, dtype=np.int64) + 1_000_000
    frame = pd.DataFrame({"spectrogram_id": ids, "eeg_id": ids, "patient_id": ids % 997})
    path.parent.mkdir(parents=True, exist_ok=True)
    frame.to_csv(path, index=False)


# --------------------------------------------------------------------------- test.csv


def test_a_test_csv_of_100000_ids_is_read_in_seconds(tmp_path):
    path = tmp_path / "test.csv"
    write_test_csv(path, N_IDS)
    t0 = time.perf_counter()
    test = read_test_csv(path)
    elapsed = time.perf_counter() - t0
    assert len(test) == N_IDS and test["eeg_id"].is_unique
    assert elapsed < 10, f"{elapsed:.1f} s"  # about 0.1 s; generous for a busy CI machine


def test_a_csv_over_the_size_limit_is_refused_before_it_is_parsed(tmp_path, monkeypatch):
    path = tmp_path / "test.csv"
    write_test_csv(path, N_IDS)
    size = path.stat().st_size
    monkeypatch.setattr(hms_io, "MAX_CSV_BYTES", 1_000_000)
    monkeypatch.setattr(pd, "read_csv", _fail)
    with pytest.raises(HMSDataError) as caught:
        read_test_csv(path)
    assert str(caught.value) == (
        f"{path}: test.csv is {size:,} bytes, more than the limit of 1,000,000 bytes (a table is "
        "read whole into memory)"
    )


def test_predict_of_100000_ids_checks_every_file_before_any_work(
    weights_dir, tmp_path, monkeypatch
):
    """hms.predict builds its test cache one recording at a time; before it reads any, every
    file the csv names must be there: 100,000 absent ones are one line, in seconds."""
    data = tmp_path / "test"
    write_test_csv(data / "test.csv", N_IDS)
    (data / "test_eegs").mkdir()
    monkeypatch.setattr(hms_cache, "read_eeg", _fail)
    out = tmp_path / "submission.csv"
    t0 = time.perf_counter()
    with pytest.raises(HMSDataError, match=r"test\.csv: 100000 file\(s\) named by test\.csv do "
                       r"not exist: .*1000000\.parquet, .* and 99995 more$"):  # fmt: skip
        predict(data, weights_dir, out, device="cpu", progress=False, cache_dir=tmp_path / "c")
    assert time.perf_counter() - t0 < 120
    assert not out.exists()


def test_predict_of_100000_ids_refuses_a_cache_its_disk_cannot_hold_before_reading(
    weights_dir, tmp_path, monkeypatch, kaggle_dir
):
    """100,000 test recordings (links to the real one) need a test cache of about 92 GB: on a
    disk with less free, predict says so before it reads a recording."""
    data = tmp_path / "test"
    write_test_csv(data / "test.csv", N_IDS)
    eegs = data / "test_eegs"
    eegs.mkdir()
    real = kaggle_dir / "test_eegs" / "3911565283.parquet"
    for eeg_id in pd.read_csv(data / "test.csv")["eeg_id"]:
        (eegs / f"{eeg_id}.parquet").symlink_to(real)  # spectrograms absent: computed
    monkeypatch.setattr(hms_cache, "read_eeg", _fail)
    empty_disk = SimpleNamespace(total=10**12, used=10**12, free=0)
    monkeypatch.setattr(hms_cache.shutil, "disk_usage", lambda folder: empty_disk)
    with pytest.raises(HMSRunError, match=r"the test cache needs about 9\d\.\d GB, but this disk "
                       r"has 0\.0 GB free; give cache_dir= a folder on a larger disk"):  # fmt: skip
        predict(data, weights_dir, tmp_path / "s.csv", device="cpu", progress=False,
                cache_dir=tmp_path / "c")  # fmt: skip
    assert not (tmp_path / "s.csv").exists()


# --------------------------------------------------------------------------- signal files


@pytest.mark.parametrize("kind", ["EEG", "spectrogram"])
def test_a_signal_file_over_the_row_limit_is_refused_from_its_metadata(
    kind, kaggle_dir, monkeypatch
):
    """A real file (10,000 EEG samples, 300 spectrogram rows) with the limit set below it: the
    footer says how many rows, and nothing else is read."""
    if kind == "EEG":
        path, reader, limit = kaggle_dir / "test_eegs" / "3911565283.parquet", read_eeg, 5_000
        monkeypatch.setattr(hms_io, "MAX_EEG_ROWS", limit)
        rows = 10_000
    else:
        path, reader, limit = (
            kaggle_dir / "test_spectrograms" / "853520.parquet",
            read_spectrogram,
            100,
        )
        monkeypatch.setattr(hms_io, "MAX_SPECTROGRAM_ROWS", limit)
        rows = 300
    monkeypatch.setattr(pq, "read_table", _fail)
    with pytest.raises(HMSDataError) as caught:
        reader(path)
    assert str(caught.value) == (
        f"{path}: {kind} has {rows:,} rows, more than the limit of {limit:,} (a signal file is "
        "read whole into memory); split the recording"
    )


def test_predict_names_the_limit_of_a_recording_too_long(weights_dir, kaggle_dir, tmp_path,
                                                         monkeypatch):  # fmt: skip
    data = copy_kaggle_test(kaggle_dir, tmp_path / "test")
    monkeypatch.setattr(hms_io, "MAX_EEG_ROWS", 5_000)
    out = tmp_path / "submission.csv"
    with pytest.raises(HMSDataError, match=r"3911565283\.parquet: EEG has 10,000 rows, more "
                       r"than the limit of 5,000"):  # fmt: skip
        predict(data, weights_dir, out, device="cpu", progress=False, cache_dir=tmp_path / "c")
    assert not out.exists()


# --------------------------------------------------------------------------- a week-long EDF

EDF_RATE = 50  # Hz: the lowest rate hms reads


@pytest.fixture(scope="module")
def week_edf(tmp_path_factory) -> Path:
    """A week-long EDF at 50 Hz, 20 signals (1.2 GB as a file): its header and first second
    written, the rest a hole of the file system (zeros; a few kB on disk)."""
    path = tmp_path_factory.mktemp("week") / "week.edf"
    data = edf_bytes(SCALP_NAMES, EDF_RATE, 1, bdf=False, seed=0)
    header = 256 * (len(SCALP_NAMES) + 1)
    offset, width = GLOBAL_FIELDS["records"]
    data[offset : offset + width] = str(WEEK_S).encode().ljust(width)
    with path.open("wb") as fh:
        fh.write(data)
        fh.truncate(header + WEEK_S * EDF_RATE * len(SCALP_NAMES) * 2)
    if path.stat().st_blocks * 512 > 200 * 1024**2:
        path.unlink()
        pytest.skip("this file system does not keep holes in files: the file would be 1.2 GB")
    return path


def test_a_week_long_edf_is_annotated_chunk_by_chunk(week_edf, weights_dir, tmp_path,
                                                     monkeypatch, capsys):  # fmt: skip
    """60,476 windows: the recording is read chunk by chunk (each span a few minutes, whatever
    the length), with a progress line as it goes. The run is stopped after three chunks."""
    spans: list[tuple[int, int]] = []
    read = EEGRecording.read

    class Stop(Exception):
        pass

    def counted(self, start, stop):
        if len(spans) == 3:
            raise Stop
        spans.append((start, stop))
        return read(self, start, stop)

    monkeypatch.setattr(EEGRecording, "read", counted)
    monkeypatch.setenv("HMS_PROGRESS", "lines")
    monkeypatch.setenv("HMS_PROGRESS_INTERVAL", "0.001")
    out = tmp_path / "timeline"
    chunk, step_s = 20, 10.0
    with pytest.raises(Stop):
        annotate(week_edf, weights_dir, out, step_s=step_s, chunk_windows=chunk, device="cpu",
                 figure=False, progress=True)  # fmt: skip
    n_samples = WEEK_S * SAMPLE_RATE
    n_windows = (n_samples - WINDOW_SAMPLES) // round(step_s * SAMPLE_RATE) + 1
    context = round(max(annotation.FILTER_CONTEXT_S, annotation.SPEC_CONTEXT_S) * SAMPLE_RATE)
    longest = (chunk - 1) * round(step_s * SAMPLE_RATE) + WINDOW_SAMPLES + 2 * context
    assert len(spans) == 3 and all(0 < b - a <= longest for a, b in spans), spans
    assert longest < n_samples / 500  # a chunk is minutes of a week
    assert [a for a, _ in spans] == sorted(a for a, _ in spans)  # forward, once
    lines = capsys.readouterr().err.splitlines()
    assert any(re.fullmatch(rf"windows: {chunk}/{n_windows} windows in .*, about .* left", line)
               for line in lines), lines  # fmt: skip
    assert not (out / annotation.TIMELINE_FILE).exists()


def test_a_week_long_edf_at_a_step_beyond_the_window_limit_is_refused_first(
    week_edf, weights_dir, tmp_path, monkeypatch
):
    """At step_s=0.5 a week is 1.2 million windows, more than ``MAX_WINDOWS``: refused with the
    limit named, before the weights' backend is opened or a sample read."""
    monkeypatch.setattr(annotation, "open_weights", _fail)
    monkeypatch.setattr(EEGRecording, "read", _fail)
    out = tmp_path / "timeline"
    with pytest.raises(HMSDataError, match=r"week\.edf: recording of 168\.0 h at step_s=0\.5 "
                       r"gives 1,209,501 windows, more than the limit of 1,000,000 .* give a "
                       r"larger step_s"):  # fmt: skip
        annotate(week_edf, weights_dir, out, step_s=0.5, device="cpu", progress=False)
    assert not out.exists()
