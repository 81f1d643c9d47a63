"""Property-based tests of the readers and validators (issue 25, item 2): each input a stranger
may hand hms (train/test/sample-submission csv, EEG and spectrogram parquet, EDF/BDF headers,
``ensemble.json``, a weights folder's checkpoints) is mutated at random (truncated, wrong types,
NaN and infinities, huge and negative numbers, duplicated or missing ids and columns, other
encodings and line endings), and every call must end in a valid result or in ``HMSDataError``
naming the file, in a message a person can read on one line: never another exception, never a
hang (``_no_hang``: an example running longer than ``HANG_S`` fails).

Every bug found here has a plain example test below the properties (``test_found_*``).
``HMS_FUZZ_SCALE`` multiplies the number of examples (``HMS_FUZZ_SCALE=10`` for a longer
search); the default runs about 3,900 in about a minute on two cores."""

from __future__ import annotations

import contextlib
import io
import json
import os
import signal
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hms.blend import ENSEMBLE_FILE, EnsembleSpec, read_ensemble
from hms.constants import (
    EEG_CHANNELS,
    SPEC_COLUMNS,
    SUBMISSION_COLUMNS,
    TEST_COLUMNS,
    TRAIN_COLUMNS,
    VOTE_COLUMNS,
)
from hms.data.io import (
    read_csv_checked,
    read_eeg,
    read_sample_submission,
    read_spectrogram,
    read_test_csv,
    read_train_csv,
)
from hms.errors import HMSDataError
from hms.inference import member_settings

from .conftest import KAGGLE_SAMPLES, edf_name

# A RuntimeWarning of hms (an overflow in a cast, ...) fails a property: a reader says what it
# does with such values, it does not warn about them.
pytestmark = pytest.mark.filterwarnings("error::RuntimeWarning:hms")

SCALE = float(os.environ.get("HMS_FUZZ_SCALE", "1"))
HANG_S = 30.0  # an example (a few small files) takes milliseconds: this long is a hang
MAX_MESSAGE = 1500  # characters of an error's one line


def fuzz(examples: int) -> settings:
    return settings(
        max_examples=max(1, round(examples * SCALE)),
        deadline=None,  # timing is _no_hang's: a busy CI machine is not a failure
        database=None,  # no example database in the checkout: failures print their blob
        print_blob=True,
        suppress_health_check=[
            HealthCheck.function_scoped_fixture,
            HealthCheck.too_slow,
            HealthCheck.data_too_large,
            HealthCheck.large_base_example,
            HealthCheck.filter_too_much,
        ],
    )


class Hang(BaseException):  # not an Exception: no `except Exception` of hms swallows it
    pass


@contextlib.contextmanager
def _no_hang(seconds: float = HANG_S) -> Iterator[None]:
    def alarm(signum, frame):
        raise Hang(f"still running after {seconds:g} s")

    previous = signal.signal(signal.SIGALRM, alarm)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def outcome(call: Callable[[], Any], *places: Path) -> Any:
    """``call()``'s result, or None when it raised ``HMSDataError`` naming one of ``places`` (a
    file, or a file inside a folder) in a readable line; any other exception propagates."""
    with _no_hang():
        try:
            return call()
        except HMSDataError as exc:
            assert_named(exc, *places)
            return None


def assert_named(exc: HMSDataError, *places: Path) -> None:
    line = " ".join(str(exc).split())  # what hms.cli prints
    assert exc.path is not None, f"the error names no file: {line}"
    assert any(exc.path == p or p in exc.path.parents for p in places), (exc.path, places)
    assert line.startswith(" ".join(str(exc.path).split())), line
    assert len(line) <= MAX_MESSAGE, f"a message of {len(line)} characters: {line[:300]}..."


@pytest.fixture(scope="module")
def scratch(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("fuzz")


# --------------------------------------------------------------------------- byte mutations


class Blob(bytes):
    """A file's bytes, shown by their length and first bytes when hypothesis reports an example
    (``@reproduce_failure`` replays it whole)."""

    def __repr__(self) -> str:
        return f"<{len(self)} bytes: {bytes(self[:160])!r}...>"


@st.composite
def mutated_bytes(draw, data: bytes) -> bytes:
    """``data`` as it is, truncated, with bytes flipped, inserted or junk appended."""
    kind = draw(st.sampled_from(["same"] * 6 + ["truncate", "flip", "insert", "append", "empty"]))
    return Blob(_mutate(draw, kind, data))


def _mutate(draw, kind: str, data: bytes) -> bytes:
    n = len(data)
    if kind == "truncate" and n:
        return data[: draw(st.integers(0, n - 1))]
    if kind == "flip" and n:
        out = bytearray(data)
        for _ in range(draw(st.integers(1, 4))):
            i = draw(st.integers(0, n - 1))
            out[i] = draw(st.integers(0, 255))
        return bytes(out)
    if kind == "insert":
        i = draw(st.integers(0, n))
        return data[:i] + draw(st.binary(min_size=1, max_size=16)) + data[i:]
    if kind == "append":
        return data + draw(st.binary(min_size=1, max_size=64))
    if kind == "empty":
        return b""
    return data


# --------------------------------------------------------------------------- csv files


def _sample_lines(name: str) -> list[str]:
    """The real Kaggle file's lines (header first), from tests/data/kaggle_samples."""
    return (KAGGLE_SAMPLES / name).read_text().splitlines()


TEST_LINES = _sample_lines("test.csv")
SUB_LINES = _sample_lines("sample_submission.csv")
TRAIN_LINES = _sample_lines("train.csv")

JUNK_CELLS = ["", "nan", "NaN", "inf", "-inf", "1e400", "-1e400", "NA", "null", "None", "True",
              "false", "1.5", "-0", "0x10", " 7", "7 ", '"3"', "1,000", "١٢", "9223372036854775808",
              "18446744073709551615", "99999999999999999999", "-99999999999999999999", "1e18",
              "-1", "2.0000000000000004", "é", "\x00", '"', "\r", "\n"]  # fmt: skip
JUNK = st.one_of(
    st.sampled_from(JUNK_CELLS),
    st.integers(-(2**80), 2**80).map(str),
    st.floats().map(repr),
    st.text(max_size=6),
)
ID = st.integers(0, 2**33).map(str)
VOTE = st.integers(0, 12).map(str)
OFFSET = st.integers(0, 3000).map(lambda s: f"{2 * s}.0")
CONSENSUS = st.sampled_from(["Seizure", "LPD", "GPD", "LRDA", "GRDA", "Other"])
PROB = st.floats(0, 1).map(repr)
VALID = {
    "eeg_id": ID, "eeg_sub_id": VOTE, "spectrogram_id": ID, "spectrogram_sub_id": VOTE,
    "label_id": ID, "patient_id": ID, "eeg_label_offset_seconds": OFFSET,
    "spectrogram_label_offset_seconds": OFFSET, "expert_consensus": CONSENSUS,
    **dict.fromkeys(VOTE_COLUMNS, VOTE),
}  # fmt: skip
ENCODINGS = ["utf-8", "utf-8", "utf-8", "utf-8-sig", "utf-16", "utf-16-le", "utf-32", "latin-1",
             "cp1252"]  # fmt: skip


@st.composite
def csv_bytes(draw, header: list[str], real_rows: list[str], valid: dict[str, Any]) -> bytes:
    """A csv of ``header`` whose rows are real ones or drawn cell by cell (valid cells, now and
    then junk), with columns dropped, renamed, repeated or added, ids repeated, and written
    with another delimiter, line ending and encoding, its bytes perhaps mutated."""
    columns = list(header)
    rows: list[list[str]] = []
    for _ in range(draw(st.integers(0, 6))):
        if real_rows and draw(st.integers(0, 3)) == 0:
            rows.append(draw(st.sampled_from(real_rows)).split(","))
            continue
        row = []
        for c in columns:
            cell = valid.get(c, PROB)
            row.append(draw(JUNK) if draw(st.integers(0, 9)) == 0 else draw(cell))
        rows.append(row)
    if rows and draw(st.booleans()):
        rows.append(list(draw(st.sampled_from(rows))))  # a repeated row: repeated ids
    for _ in range(draw(st.integers(0, 2))):
        if not columns:
            break
        i = draw(st.integers(0, len(columns) - 1))
        op = draw(st.sampled_from(["drop", "rename", "repeat", "add", "swap"]))
        if op == "drop":
            columns.pop(i)
            rows = [r[:i] + r[i + 1 :] for r in rows]
        elif op == "rename":
            columns[i] = draw(st.sampled_from([columns[i].upper(), f" {columns[i]}", "", "x"]))
        elif op == "repeat":
            columns.append(columns[i])
            rows = [[*r, r[i] if i < len(r) else ""] for r in rows]
        elif op == "add":
            columns.append(draw(st.text(max_size=5)))
            rows = [[*r, draw(JUNK)] for r in rows]
        else:
            j = draw(st.integers(0, len(columns) - 1))
            columns[i], columns[j] = columns[j], columns[i]
    sep = draw(st.sampled_from([",", ",", ",", ";", "\t"]))
    end = draw(st.sampled_from(["\n", "\n", "\r\n", "\r"]))
    lines = [sep.join(columns), *(sep.join(r) for r in rows)]
    text = end.join(lines) + draw(st.sampled_from([end, "", end * 2]))
    data = text.encode(draw(st.sampled_from(ENCODINGS)), errors="replace")
    return draw(mutated_bytes(data))


def _csv(header: str, real: list[str]) -> st.SearchStrategy[bytes]:
    return csv_bytes(header.split(","), real, VALID)


def _integer_columns(df, columns) -> bool:
    return all(str(df[c].dtype) == "int64" for c in columns)


@fuzz(600)
@given(data=_csv(TRAIN_LINES[0], TRAIN_LINES[1:]))
def test_train_csv(data, scratch):
    path = scratch / "train.csv"
    path.write_bytes(data)
    df = outcome(lambda: read_train_csv(path), path)
    if df is None:
        return
    ids = ["eeg_id", "eeg_sub_id", "spectrogram_id", "spectrogram_sub_id", "label_id"]
    assert list(df.columns) == list(TRAIN_COLUMNS)
    assert _integer_columns(df, [*ids, "patient_id", *VOTE_COLUMNS])
    assert not df["label_id"].duplicated().any()
    votes = df[list(VOTE_COLUMNS)].to_numpy()
    assert (votes >= 0).all() and (len(df) == 0 or (votes.sum(axis=1) > 0).all())
    for c in ("eeg_label_offset_seconds", "spectrogram_label_offset_seconds"):
        values = df[c].to_numpy(np.float64)
        assert np.isfinite(values).all() and (values >= 0).all()


@fuzz(600)
@given(data=_csv(TEST_LINES[0], TEST_LINES[1:]))
def test_test_csv(data, scratch):
    path = scratch / "test.csv"
    path.write_bytes(data)
    df = outcome(lambda: read_test_csv(path), path)
    if df is None:
        return
    assert list(df.columns) == list(TEST_COLUMNS) and len(df) > 0
    assert _integer_columns(df, TEST_COLUMNS)
    assert not df["eeg_id"].duplicated().any()


@fuzz(300)
@given(data=_csv(SUB_LINES[0], SUB_LINES[1:]))
def test_sample_submission(data, scratch):
    path = scratch / "sample_submission.csv"
    path.write_bytes(data)
    df = outcome(lambda: read_sample_submission(path), path)
    if df is None:
        return
    assert list(df.columns) == list(SUBMISSION_COLUMNS)
    assert _integer_columns(df, ["eeg_id"])


@fuzz(200)
@given(data=st.binary(max_size=200) | _csv("a,b,c", ["1,2,3"]))
def test_any_csv(data, scratch):
    path = scratch / "any.csv"
    path.write_bytes(data)
    df = outcome(lambda: read_csv_checked(path, ["a", "b"], "a.csv"), path)
    assert df is None or {"a", "b"} <= set(df.columns)


# --------------------------------------------------------------------------- parquet files

SPECIAL = [0.0, 1.0, -1.0, 0.5, 12.0, 200.0, np.nan, np.inf, -np.inf, 1e300, -1e300, 3.5e38,
           2.0**53 + 1, 2.0**63, -(2.0**63), 5e-324]  # fmt: skip
KINDS = ["float32", "float32", "float64", "float16", "int8", "int32", "int64", "uint64", "bool",
         "string", "null", "timestamp", "dictionary", "list", "nullable"]  # fmt: skip


def _column(kind: str, values: np.ndarray) -> pa.Array:
    """``values`` (float64) as an arrow column of ``kind``."""
    finite = np.nan_to_num(values, nan=0.0, posinf=1e300, neginf=-1e300)
    if kind in ("int8", "int32", "int64", "uint64"):
        info = np.iinfo(kind)
        ints = np.clip(finite, float(info.min), float(info.max) // 2).astype(kind)
        return pa.array(ints)
    if kind == "bool":
        return pa.array(finite > 0)
    if kind == "string":
        return pa.array([repr(v) for v in values])
    if kind == "null":
        return pa.nulls(len(values))
    if kind == "timestamp":
        return pa.array(np.clip(finite, -1e15, 1e15).astype(np.int64), pa.timestamp("s"))
    if kind == "dictionary":
        with np.errstate(over="ignore"):
            return pa.array(values.astype(np.float32)).dictionary_encode()
    if kind == "list":
        return pa.array([[v] for v in values], pa.list_(pa.float64()))
    if kind == "nullable":
        return pa.array(values, mask=np.arange(len(values)) % 3 == 0)
    with np.errstate(over="ignore"):
        return pa.array(values.astype(kind))


@st.composite
def parquet_bytes(draw, names: list[str], real: Path | None, rows: st.SearchStrategy[int]) -> bytes:
    """A parquet of the ``names`` columns (some dropped, repeated, renamed or added), of random
    types and special values, written with random options; or the real file; then perhaps
    byte-mutated."""
    if real is not None and draw(st.integers(0, 9)) == 0:
        return draw(mutated_bytes(real.read_bytes()))
    n = draw(rows)
    pattern = np.array(draw(st.lists(st.sampled_from(SPECIAL) | st.floats(), min_size=1,
                                     max_size=8)), np.float64)  # fmt: skip
    base = np.resize(pattern, n)
    default = draw(st.sampled_from(["float32", "float32", "float64", "int64"]))
    columns = list(names)
    for _ in range(draw(st.sampled_from([0, 0, 0, 1, 2]))):
        i = draw(st.integers(0, len(columns) - 1))
        op = draw(st.sampled_from(["drop", "repeat", "rename", "add"]))
        if op == "drop":
            columns.pop(i)
        elif op == "repeat":
            columns.append(columns[i])
        elif op == "rename":
            columns[i] = columns[i].lower() + draw(st.sampled_from(["", " "]))
        else:
            columns.append(draw(st.sampled_from(["__index_level_0__", "extra", ""])))
    odd = {draw(st.integers(0, max(0, len(columns) - 1))): draw(st.sampled_from(KINDS))
           for _ in range(draw(st.integers(0, 2)))}  # fmt: skip
    arrays = []
    for i, _ in enumerate(columns):
        values = np.roll(base, i) if n else base
        if columns[i] == "time" and draw(st.booleans()):
            values = draw(st.sampled_from([1.0, 0.0, -5.0])) + draw(
                st.sampled_from([2.0, 0.5, 1.5, -2.0, 0.0])
            ) * np.arange(n)  # fmt: skip
            kind = odd.get(i, draw(st.sampled_from(["int64", "float64", "float32"])))
        else:
            kind = odd.get(i, default)
        arrays.append(_column(kind, values))
    table = pa.Table.from_arrays(arrays, names=columns)
    sink = io.BytesIO()
    pq.write_table(
        table, sink,
        compression=draw(st.sampled_from(["none", "snappy", "zstd", "gzip"])),
        row_group_size=draw(st.sampled_from([None, 1, 7])),
        use_dictionary=draw(st.booleans()),
        write_statistics=draw(st.booleans()),
        data_page_version=draw(st.sampled_from(["1.0", "2.0"])),
    )  # fmt: skip
    return draw(mutated_bytes(sink.getvalue()))


REAL_EEG = KAGGLE_SAMPLES / "test_eegs" / "3911565283.parquet"
REAL_SPEC = KAGGLE_SAMPLES / "test_spectrograms" / "853520.parquet"


@fuzz(500)
@given(
    data=parquet_bytes(list(EEG_CHANNELS), REAL_EEG, st.integers(0, 40)),
    min_samples=st.sampled_from([1, 1, 10, 40]),
)
def test_eeg_parquet(data, min_samples, scratch):
    path = scratch / "eeg.parquet"
    path.write_bytes(data)
    eeg = outcome(lambda: read_eeg(path, min_samples), path)
    if eeg is None:
        return
    assert eeg.dtype == np.float32 and eeg.ndim == 2
    assert eeg.shape[1] == len(EEG_CHANNELS) and eeg.shape[0] >= min_samples


@fuzz(300)
@given(
    data=parquet_bytes(["time", *SPEC_COLUMNS], REAL_SPEC, st.integers(0, 12)),
    min_rows=st.sampled_from([1, 1, 5]),
)
def test_spectrogram_parquet(data, min_rows, scratch):
    path = scratch / "spec.parquet"
    path.write_bytes(data)
    result = outcome(lambda: read_spectrogram(path, min_rows), path)
    if result is None:
        return
    times, values = result
    assert times.dtype == np.int64 and times.shape == (len(values),) and len(values) >= min_rows
    assert values.dtype == np.float32 and values.shape[1] == len(SPEC_COLUMNS)
    assert (np.diff(times) > 0).all()
    stored = pq.read_table(path, columns=["time"]).column(0).to_numpy(zero_copy_only=False)
    np.testing.assert_array_equal(times, stored)  # the file's seconds, not rounded ones


# --------------------------------------------------------------------------- EDF / BDF headers

SCALP_NAMES = [edf_name(c) for c in EEG_CHANNELS]
EXTRA_NAMES = ["Fp1-F7", "PHOTIC", "EEG FP1-LE", "Fp1", "EEG T7-REF", "ECG II", "", "EEG ???"]
# (offset, width) of the global header fields; then the per-signal fields' widths
GLOBAL_FIELDS = {"version": (0, 8), "patient": (8, 80), "recording": (88, 80), "date": (168, 8),
                 "time": (176, 8), "header_bytes": (184, 8), "reserved": (192, 44),
                 "records": (236, 8), "duration": (244, 8), "signals": (252, 4)}  # fmt: skip
SIGNAL_FIELDS = [("label", 16), ("transducer", 80), ("unit", 8), ("phys_min", 8),
                 ("phys_max", 8), ("dig_min", 8), ("dig_max", 8), ("prefilter", 80),
                 ("samples", 8), ("reserved", 32)]  # fmt: skip
FIELD_VALUES = ["", "0", "-1", "1", "2", "nan", "inf", "-inf", "1e308", "-1e308", "99999999",
                "-9999999", "abc", "1.5", "0.0001", "256", "200", "24BIT", "EDF+C", "EDF+D",
                "uV", "mV", "V", "nV", "32767", "-32768", "8388607", "01.13.24", "25.61.99",
                "\xff\xfe", "   1", "1e-300"]  # fmt: skip


def edf_bytes(
    labels: list[str], rate: int, records: int, bdf: bool, seed: int, annotations: bool = False
) -> bytearray:
    """An EDF (or BDF) file: ``records`` 1-s data records of ``rate`` samples per signal."""
    ns = len(labels) + annotations
    width = 3 if bdf else 2
    top = 2 ** (8 * width - 1)

    def field(value: Any, size: int) -> bytes:
        return str(value).encode("latin-1", "replace")[:size].ljust(size)

    head = (b"\xffBIOSEMI" if bdf else field("0", 8)) + field("X X X X", 80)
    head += field("Startdate 01-MAR-2024 X X X", 80) + field("01.03.24", 8) + field("22.15.00", 8)
    head += field(256 * (ns + 1), 8) + field("24BIT" if bdf else "EDF+C" if annotations else "", 44)
    head += field(records, 8) + field(1, 8) + field(ns, 4)
    names = [*labels, *(["EDF Annotations"] if annotations else [])]
    spr = [rate] * len(labels) + ([30] * annotations)
    per_signal = [
        [field(n, 16) for n in names],
        [field("AgAgCl electrode", 80)] * ns,
        [field("uV", 8)] * ns,
        [field(-3200, 8)] * ns,
        [field(3200, 8)] * ns,
        [field(-top, 8)] * ns,
        [field(top - 1, 8)] * ns,
        [field("HP:0.1Hz LP:70Hz", 80)] * ns,
        [field(s, 8) for s in spr],
        [field("", 32)] * ns,
    ]
    head += b"".join(b"".join(values) for values in per_signal)
    rng = np.random.default_rng(seed)
    body = bytearray()
    for r in range(records):
        for k, s in enumerate(spr):
            if annotations and k == len(labels):
                tal = f"+{r}\x14\x14\x00".encode().ljust(2 * s, b"\x00")
                body += tal[: 2 * s] if not bdf else tal.ljust(3 * s, b"\x00")[: 3 * s]
                continue
            x = rng.integers(-2000, 2000, s)
            if bdf:  # 24-bit little-endian
                body += x.astype("<i4").view(np.uint8).reshape(-1, 4)[:, :3].tobytes()
            else:
                body += x.astype("<i2").tobytes()
    return bytearray(head + body)


def _signal_field_offset(name: str, signal: int, ns: int) -> tuple[int, int]:
    offset = 256
    for field_name, size in SIGNAL_FIELDS:
        if field_name == name:
            return offset + signal * size, size
        offset += size * ns
    raise KeyError(name)


@st.composite
def edf_files(draw) -> tuple[str, bytes]:
    labels = list(SCALP_NAMES)
    if draw(st.booleans()):
        for _ in range(draw(st.integers(1, 3))):
            op = draw(st.sampled_from(["drop", "add", "repeat", "shuffle", "many"]))
            if op == "many":  # a montage of hundreds of channels (a high-density recording)
                labels += [f"E{i}" for i in range(draw(st.integers(100, 400)))]
            elif op == "drop" and labels:
                labels.pop(draw(st.integers(0, len(labels) - 1)))
            elif op == "add":
                labels.append(draw(st.sampled_from(EXTRA_NAMES) | st.text(max_size=16)))
            elif op == "repeat" and labels:
                labels.append(draw(st.sampled_from(labels)))
            else:
                labels = draw(st.permutations(labels))
    bdf = draw(st.booleans())
    rate = draw(st.sampled_from([200, 256, 250, 512, 100, 64, 49, 1000]))
    records = draw(st.integers(1, 4))
    annotations = not bdf and draw(st.integers(0, 3)) == 0
    data = edf_bytes(labels, rate, records, bdf, draw(st.integers(0, 9)), annotations)
    ns = len(labels) + annotations
    for _ in range(draw(st.integers(0, 3))):
        if draw(st.booleans()):
            offset, size = draw(st.sampled_from(list(GLOBAL_FIELDS.values())))
        else:
            name, _ = draw(st.sampled_from(SIGNAL_FIELDS))
            offset, size = _signal_field_offset(name, draw(st.integers(0, max(0, ns - 1))), ns)
        value = draw(st.sampled_from(FIELD_VALUES) | st.text(max_size=size))
        data[offset : offset + size] = value.encode("latin-1", "replace")[:size].ljust(size)
    return (".bdf" if bdf else ".edf"), draw(mutated_bytes(bytes(data)))


@fuzz(500)
@given(file=edf_files(), missing=st.sampled_from(["error", "error", "interpolate"]))
def test_edf_and_bdf_headers(file, missing, scratch):
    from hms.annotation import window_starts
    from hms.data.recording import EEGRecording

    suffix, data = file
    path = scratch / f"recording{suffix}"
    path.write_bytes(data)
    rec = outcome(lambda: EEGRecording(path, missing=missing), path)
    if rec is None:
        return
    n = rec.n_samples
    assert n >= 0 and rec.duration_s >= 0
    for start, stop in ((0, 300), (n - 150, n + 50)):
        span = outcome(lambda a=start, b=stop: rec.read(a, b), path)
        if span is not None:
            assert span.dtype == np.float32 and span.shape == (
                max(0, min(n, stop) - max(0, start)), len(EEG_CHANNELS)
            )  # fmt: skip
    starts = outcome(lambda: window_starts(n, 10.0, path), path)
    assert starts is None or len(starts) >= 1


# --------------------------------------------------------------------------- ensemble.json

PLAIN_STRINGS = ["", "a", "b", "prob", "log", "onnx", "torch", "eeg", "spec", "a/fold0.ckpt",
                 "a/./fold0.ckpt", "../x.ckpt", "/etc/passwd", "a/fold0.onnx", "double_banana",
                 "float16", "x" * 300, "\x00", "é", "a/" + "x" * 5000 + ".ckpt",
                 "../" + "y" * 3000 + ".ckpt"]  # fmt: skip
JSON_LEAF = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**70), 2**70),
    st.sampled_from([10**400, -(10**400), 2**64, 0, 1, 6]),
    st.floats(),  # NaN and infinities: json writes and reads them
    st.sampled_from(PLAIN_STRINGS) | st.text(max_size=8),
)
NUMBER = st.sampled_from([10**400, -(10**400), 2**64, 2**63, -1, 0, 1, 0.5, 1e308, -1e-308, 6])
JSON = st.recursive(
    JSON_LEAF,
    lambda inner: st.lists(inner, max_size=7) | st.dictionaries(st.text(max_size=6), inner,
                                                                max_size=4),
    max_leaves=10,
)  # fmt: skip
GOOD_DATA = {"recording": {"low_hz": 0.5, "high_hz": 20.0, "filter_order": 4, "notch_hz": None,
                           "dtype": "float16"},
             "window": {"montage": "double_banana", "clip_uv": 1024.0, "scale": 1.0}}  # fmt: skip
MANIFEST = {
    "format": 1, "name": "fuzz", "space": "prob", "weights": {"a": 0.6, "b": 0.4},
    "bias": [0.0] * 6,
    "members": {"a": {"checkpoints": ["a/fold0.ckpt", "a/fold1.ckpt"], "data": GOOD_DATA},
                "b": {"checkpoints": ["b/fold0.ckpt"], "data": GOOD_DATA}},
    "cv": {"score": 0.5}, "hms_version": "0.1.0",
}  # fmt: skip


def _paths(tree: Any, prefix: tuple = ()) -> list[tuple]:
    """Every place in a JSON tree: dict keys and list indices, the root excluded."""
    found = []
    if isinstance(tree, dict):
        items = list(tree.items())
    else:
        items = list(enumerate(tree)) if isinstance(tree, list) else []
    for key, value in items:
        found.append((*prefix, key))
        found.extend(_paths(value, (*prefix, key)))
    return found


@st.composite
def json_mutations(draw, base: dict) -> Any:
    """``base`` with values replaced, removed or added at random places (a new top level now
    and then)."""
    tree = json.loads(json.dumps(base))
    if draw(st.integers(0, 19)) == 0:
        return draw(JSON)
    for _ in range(draw(st.integers(0, 3))):
        places = _paths(tree)
        if not places:
            break
        place = draw(st.sampled_from(places))
        parent = tree
        for key in place[:-1]:
            parent = parent[key]
        op = draw(st.sampled_from(["set", "set", "delete", "add", "copy"]))
        if op == "set":
            parent[place[-1]] = draw(NUMBER | st.floats() | JSON)
        elif op == "delete":
            del parent[place[-1]]
        elif op == "add" and isinstance(parent, dict):
            parent[draw(st.sampled_from(["c", "a", "x" * 80, "../m", "recording"]))] = draw(JSON)
        elif op == "copy":  # a value of one place at another: a member twice, a file twice
            other = draw(st.sampled_from(places))
            source = tree
            for key in other:
                source = source[key]
            parent[place[-1]] = json.loads(json.dumps(source))
    return tree


@st.composite
def manifest_bytes(draw, base: dict) -> bytes:
    tree = draw(json_mutations(base))
    text = json.dumps(tree, indent=draw(st.sampled_from([None, 2])))
    encoding = draw(st.sampled_from(["utf-8"] * 4 + ["utf-8-sig", "utf-16", "utf-32", "latin-1"]))
    return draw(mutated_bytes(text.encode(encoding, errors="replace")))


@pytest.fixture(scope="module")
def manifest_folder(scratch) -> Path:
    folder = scratch / "weights"
    for rel in ("a/fold0.ckpt", "a/fold1.ckpt", "b/fold0.ckpt", "a/fold0.onnx"):
        (folder / rel).parent.mkdir(parents=True, exist_ok=True)
        (folder / rel).write_bytes(b"x")
    return folder


@fuzz(600)
@given(data=manifest_bytes(MANIFEST))
def test_ensemble_manifest(data, manifest_folder):
    path = manifest_folder / ENSEMBLE_FILE
    path.write_bytes(data)
    spec = outcome(lambda: read_ensemble(manifest_folder), manifest_folder)
    if spec is None:
        return
    assert isinstance(spec, EnsembleSpec) and spec.members == list(spec.checkpoints)
    weights = np.array(list(spec.weights.values()))
    assert np.isfinite(weights).all() and (weights >= 0).all() and 0 < weights.sum() < np.inf
    for files in spec.checkpoints.values():
        assert files and all((manifest_folder / f).is_file() for f in files)
    assert spec.bias is None or (len(spec.bias) == 6 and np.isfinite(spec.bias).all())
    outcome(lambda: member_settings(spec, manifest_folder), manifest_folder)


# --------------------------------------------------------------------------- weights folders

MEMBER = "resnet1d_gru"


@pytest.fixture(scope="module")
def checkpoint_bytes(scratch) -> bytes:
    """A real checkpoint of an untrained member, as ``hms.ensemble`` copies it."""
    from .conftest import write_member_checkpoint

    return write_member_checkpoint(MEMBER, scratch / "member.ckpt").read_bytes()


def _edited_checkpoint(raw: bytes, draw) -> bytes:
    """The checkpoint with a hyperparameter, a tensor or the structure changed."""
    import torch

    ckpt = torch.load(io.BytesIO(raw), map_location="cpu", weights_only=True)
    state, hparams = ckpt["state_dict"], ckpt["hyper_parameters"]
    op = draw(st.sampled_from(["hparam", "hparam", "tensor", "drop", "rename", "structure"]))
    if op == "hparam":
        places = _paths(hparams)
        place = draw(st.sampled_from(places))
        parent = hparams
        for key in place[:-1]:
            parent = parent[key]
        parent[place[-1]] = draw(JSON)
    elif op in ("tensor", "drop", "rename"):
        key = draw(st.sampled_from(sorted(state)))
        if op == "drop":
            del state[key]
        elif op == "rename":
            state[key + draw(st.sampled_from(["_", ".x", ""]))] = state.pop(key)
        else:
            t = state[key]
            change = draw(st.sampled_from(["nan", "dtype", "shape", "empty", "huge"]))
            if change == "nan" and t.is_floating_point() and t.numel():
                t = t.clone()
                t.view(-1)[0] = draw(st.sampled_from([float("nan"), float("inf"), 1e38]))
            elif change == "dtype":
                t = t.to(draw(st.sampled_from([torch.float64, torch.int64, torch.bfloat16])))
            elif change == "shape":
                t = t.reshape(-1)
            elif change == "empty":
                t = torch.zeros(0)
            else:
                t = torch.zeros(t.numel() + 1)
            state[key] = t
    else:
        where = draw(st.sampled_from(["state_dict", "hyper_parameters", None]))
        value = draw(st.sampled_from([[], {}, 1, "x", None]))
        if where is None:
            ckpt = value
        else:
            ckpt[where] = value
    sink = io.BytesIO()
    torch.save(ckpt, sink)
    return sink.getvalue()


@st.composite
def weights_folders(draw, raw: bytes) -> tuple[bytes, bytes, bool]:
    """(ensemble.json, fold0.ckpt, a second fold present): the manifest perhaps mutated, the
    checkpoint edited, byte-mutated or as it is."""
    both = draw(st.booleans())
    manifest = _base_manifest()
    if both:
        manifest["members"][MEMBER]["checkpoints"].append(f"{MEMBER}/fold1.ckpt")
    text = json.dumps(draw(json_mutations(manifest)) if draw(st.integers(0, 3)) == 0 else manifest)
    kind = draw(st.sampled_from(["edit", "edit", "bytes", "same"]))
    if kind == "edit":
        ckpt = _edited_checkpoint(raw, draw)
    elif kind == "bytes":
        ckpt = draw(mutated_bytes(raw))
    else:
        ckpt = raw
    return Blob(text.encode()), Blob(ckpt), both


def test_the_weights_folder_fuzz_starts_from_a_folder_that_passes(checkpoint_bytes, scratch):
    """The unmutated folder of ``test_weights_folder`` opens (the property is not vacuous)."""
    manifest = json.dumps(_base_manifest()).encode()
    opened = _check_weights_folder(scratch / "w0", manifest, checkpoint_bytes, None)
    assert opened is not None and opened.members[MEMBER].files


def _base_manifest() -> dict:
    return {  # a new dict each time: callers change it
        "format": 1,
        "name": "fuzz",
        "space": "prob",
        "weights": {MEMBER: 1.0},
        "members": {MEMBER: {"checkpoints": [f"{MEMBER}/fold0.ckpt"], "data": GOOD_DATA}},
        "bias": None,
    }


def _check_weights_folder(folder: Path, manifest: bytes, fold0: bytes, fold1: bytes | None):
    from hms.inference import open_weights

    (folder / MEMBER).mkdir(parents=True, exist_ok=True)
    (folder / ENSEMBLE_FILE).write_bytes(manifest)
    (folder / MEMBER / "fold0.ckpt").write_bytes(fold0)
    second = folder / MEMBER / "fold1.ckpt"
    second.unlink(missing_ok=True)
    if fold1 is not None:
        second.write_bytes(fold1)
    opened = outcome(lambda: open_weights(folder, "cpu", "32"), folder)
    if opened is not None:
        assert set(opened.members) == set(opened.ensemble.members)
        for info in opened.members.values():
            assert all(f.is_file() for f in info.files)
    return opened


@pytest.mark.filterwarnings("error::UserWarning")  # the check prints one line, nothing else
@fuzz(300)
@given(data=st.data())
def test_weights_folder(data, checkpoint_bytes, scratch):
    manifest, fold0, both = data.draw(weights_folders(checkpoint_bytes))
    _check_weights_folder(scratch / "w", manifest, fold0, checkpoint_bytes if both else None)


# --------------------------------------------------------------------------- bugs found


def test_found_csv_ids_beyond_int64_are_refused(tmp_path):
    """An id too large for int64 ended in OverflowError (a traceback); an id of uint64 range was
    read as uint64, which the submission's int64 ids wrap."""
    path = tmp_path / "test.csv"
    for big in ("99999999999999999999", "-99999999999999999999", "18446744073709551615"):
        path.write_text(f"spectrogram_id,eeg_id,patient_id\n1,{big},3\n")
        with pytest.raises(HMSDataError, match=r"test\.csv column 'eeg_id' is not integer"):
            read_test_csv(path)


def test_found_a_csv_of_booleans_is_not_read_as_ids(tmp_path):
    """``True``/``False`` read as ids 1 and 0."""
    path = tmp_path / "test.csv"
    path.write_text("spectrogram_id,eeg_id,patient_id\n1,True,3\n2,False,3\n")
    with pytest.raises(HMSDataError, match="column 'eeg_id' is not integer"):
        read_test_csv(path)


def test_found_infinite_or_huge_label_offsets_are_refused(tmp_path):
    """Offsets of ``inf`` and ``1e300`` passed the check ("non-negative numbers"); the cache
    build then ended in pandas' IntCastingNaNError (a traceback) or cast 1e300 s to a garbage
    int64 window start."""
    header = ",".join(TRAIN_COLUMNS)
    for offset in ("inf", "1e300"):
        row = f"1,0,{offset},2,0,0.0,3,4,Seizure,1,0,0,0,0,0"
        path = tmp_path / "train.csv"
        path.write_text(f"{header}\n{row}\n")
        with pytest.raises(HMSDataError, match="'eeg_label_offset_seconds' must be"):
            read_train_csv(path)


def test_found_ensemble_weights_beyond_float_range_are_refused(manifest_folder, tmp_path):
    """A weight of 10**400 (JSON integers have no limit) ended in numpy's TypeError."""
    folder = tmp_path / "w"
    (folder / "a").mkdir(parents=True)
    (folder / "a" / "fold0.ckpt").write_bytes(b"x")
    for weight in ("1" + "0" * 400, str(2**64)):
        text = json.dumps({**_base_manifest(), "weights": {"a": 0}, "members": {"a": {
            "checkpoints": ["a/fold0.ckpt"]}}}).replace('"a": 0', f'"a": {weight}', 1)  # fmt: skip
        (folder / ENSEMBLE_FILE).write_text(text)
        if weight == str(2**64):
            assert read_ensemble(folder).weights == {"a": float(2**64)}
            continue
        with pytest.raises(HMSDataError, match="weights must be numbers"):
            read_ensemble(folder)


def test_found_settings_beyond_float_range_are_one_line(manifest_folder, tmp_path):
    """A member's ``low_hz`` or ``clip_uv`` of 10**400 ended in OverflowError."""
    folder = tmp_path / "w"
    (folder / "a").mkdir(parents=True)
    (folder / "a" / "fold0.ckpt").write_bytes(b"x")
    huge = "1" + "0" * 400
    for block, key in (("recording", "low_hz"), ("window", "clip_uv")):
        data = {"recording": {}, "window": {}}
        data[block][key] = 12345
        manifest = {**_base_manifest(), "weights": {"a": 1.0},
                    "members": {"a": {"checkpoints": ["a/fold0.ckpt"], "data": data}}}  # fmt: skip
        (folder / ENSEMBLE_FILE).write_text(json.dumps(manifest).replace("12345", huge))
        with pytest.raises(HMSDataError, match=f"{key} must be"):
            member_settings(read_ensemble(folder), folder)


def test_found_a_repeated_parquet_column_is_named_in_one_short_line(tmp_path):
    """A column present twice made pyarrow's error, which prints the whole schema (two dozen
    lines for an EEG file)."""
    path = tmp_path / "eeg.parquet"
    columns = [pa.array(np.ones(10, np.float32)) for _ in range(21)]
    pq.write_table(pa.table(columns, names=[*EEG_CHANNELS, "Fp1"]), path)
    with pytest.raises(HMSDataError) as caught:
        read_eeg(path)
    assert str(caught.value) == f"{path}: EEG column 'Fp1' appears 2 times"


def test_found_spectrogram_times_that_are_not_whole_seconds_are_refused(tmp_path):
    """Times 1.5, 3.5, ... were cut to 1, 3, ...: rows placed at other seconds than the file's."""
    path = tmp_path / "spec.parquet"
    columns = {"time": pa.array(np.arange(4) * 2 + 1.5)}
    columns.update({c: pa.array(np.ones(4, np.float32)) for c in SPEC_COLUMNS})
    pq.write_table(pa.table(columns), path)
    with pytest.raises(HMSDataError, match="'time' holds values that are not whole seconds"):
        read_spectrogram(path)


@pytest.mark.filterwarnings("error::RuntimeWarning")
def test_found_a_recording_of_values_beyond_float32_reads_as_non_finite_samples(tmp_path):
    """A header whose physical range is 1e308 µV made samples beyond float32's range: numpy's
    overflow warnings, where the reader returns them as non-finite samples (which the
    preprocessing fills and reports, as NaN in a parquet file)."""
    from hms.data.recording import EEGRecording

    data = edf_bytes(SCALP_NAMES, 256, 2, bdf=False, seed=0)
    for k in range(len(SCALP_NAMES)):
        offset, size = _signal_field_offset("phys_max", k, len(SCALP_NAMES))
        data[offset : offset + size] = b"1e308".ljust(size)
    path = tmp_path / "huge.edf"
    path.write_bytes(bytes(data))
    span = EEGRecording(path).read(0, 300)
    assert span.shape == (300, len(EEG_CHANNELS)) and span.dtype == np.float32
    assert not np.isfinite(span).all()


def test_found_long_values_in_a_manifest_are_cut_short_in_its_message(manifest_folder, tmp_path):
    """A weight of a list of huge integers, a path of 5,000 characters: each message printed
    them whole (thousands of characters on the error's line)."""
    folder = tmp_path / "w"
    (folder / "a").mkdir(parents=True)
    (folder / "a" / "fold0.ckpt").write_bytes(b"x")
    member = {"checkpoints": ["a/fold0.ckpt"]}
    long_path = "../" + "y" * 5000 + ".ckpt"
    for manifest, message in [
        ({"weights": {"a": [10**400] * 10}}, "weights must be numbers"),
        ({"members": {"a": {"checkpoints": [long_path]}}}, "checkpoints outside the weights"),
    ]:
        base = {"format": 1, "weights": {"a": 1.0}, "members": {"a": member}}
        (folder / ENSEMBLE_FILE).write_text(json.dumps({**base, **manifest}))
        with pytest.raises(HMSDataError, match=message) as caught:
            read_ensemble(folder)
        assert len(str(caught.value)) < 400 + len(str(folder))


def test_found_a_long_setting_is_cut_short_in_its_message(tmp_path):
    """A member's ``dtype`` (or ``low_hz``, ...) of 5,000 characters: the settings' message
    quoted it whole."""
    folder = tmp_path / "w"
    (folder / "a").mkdir(parents=True)
    (folder / "a" / "fold0.ckpt").write_bytes(b"x")
    long_value = "x" * 5000
    for data in ({"recording": {"dtype": long_value}}, {"window": {long_value: 1}}):
        member = {"checkpoints": ["a/fold0.ckpt"], "data": data}
        manifest = {"format": 1, "weights": {"a": 1.0}, "members": {"a": member}}
        (folder / ENSEMBLE_FILE).write_text(json.dumps(manifest))
        with pytest.raises(HMSDataError, match="member 'a'") as caught:
            member_settings(read_ensemble(folder), folder)
        assert len(str(caught.value)) < 600 + len(str(folder))


def test_found_a_recording_of_hundreds_of_channels_is_named_in_a_short_line(tmp_path):
    """A high-density EDF without an electrode of the montage: its message listed every one of
    its channels."""
    from hms.data.recording import EEGRecording

    labels = [*SCALP_NAMES[1:], *(f"E{i}" for i in range(300))]
    path = tmp_path / "dense.edf"
    path.write_bytes(bytes(edf_bytes(labels, 200, 1, bdf=False, seed=0)))
    with pytest.raises(HMSDataError, match=r"missing channel\(s\) \['Fp1'\]") as caught:
        EEGRecording(path)
    assert "(319 channels)" in str(caught.value) and len(str(caught.value)) < 1000


def test_found_a_negative_count_of_samples_per_record_is_refused(tmp_path):
    """A signal of -32768 samples per record: MNE counted -200 samples, and the recording was
    opened with a negative length."""
    from hms.data.recording import EEGRecording

    data = edf_bytes(SCALP_NAMES, 200, 1, bdf=False, seed=0)
    offset, size = _signal_field_offset("samples", 0, len(SCALP_NAMES))
    data[offset : offset + size] = b"-32768".ljust(size)
    path = tmp_path / "negative.edf"
    path.write_bytes(bytes(data))
    with pytest.raises(HMSDataError, match="the header's sample counts are damaged"):
        EEGRecording(path)


def test_found_a_utf16_csv_without_its_mark_is_named_in_a_short_line(tmp_path):
    """A train.csv saved as UTF-16 without a byte-order mark reads as columns full of NUL
    bytes, which the message quoted at four characters each (1,500 characters)."""
    path = tmp_path / "train.csv"
    header = ",".join(TRAIN_COLUMNS[1:] + TRAIN_COLUMNS[:1])
    path.write_bytes(f"{header}\n{'0,' * 14}0\n".encode("utf-16-le"))
    with pytest.raises(HMSDataError, match=r"train\.csv is missing columns") as caught:
        read_train_csv(path)
    assert len(str(caught.value)) < 1000 + len(str(path))
