"""Reading, validating and atomically writing the files of the HMS layout.

Every reader checks what the rest of hms relies on and raises ``HMSDataError`` naming the file and
the problem: a missing file, an unreadable parquet, a missing or renamed column, a recording too
short for its label offsets, a signal file larger than the limits (``MAX_EEG_ROWS``,
``MAX_SPECTROGRAM_ROWS``: refused from its metadata, before it is read).

Writes: ``atomic_path`` and ``atomic_dir`` (a temporary name, renamed when complete: a reader
never sees half a file) and ``output_lock`` (one command at a time writes an output: a second is
refused, naming the first).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import glob
import hashlib
import os
import shutil
import socket
import tempfile
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from hms.constants import (
    EEG_CHANNELS,
    SAMPLE_RATE,
    SPEC_COLUMNS,
    SPEC_ROW_SECONDS,
    SUBMISSION_COLUMNS,
    TEST_COLUMNS,
    TRAIN_COLUMNS,
    VOTE_COLUMNS,
)
from hms.errors import HMSDataError, HMSRunError

# --------------------------------------------------------------------------- atomic writes

_UMASK = os.umask(0)
os.umask(_UMASK)


_HOST = socket.gethostname().replace(".", "_")


def _owner_tag() -> str:
    """``<host>-<pid>``: which process a temporary file or folder belongs to."""
    return f"{_HOST}-{os.getpid()}"


_SWEPT: set[Path] = set()  # folders whose dead temporary files this process has removed


def _sweep_temporary_files(parent: Path) -> None:
    """Once per folder and process (the synthesis writes thousands of files into one folder: a
    listing per write would cost a listing per file): remove the temporary files
    (``.<name>.<host>-<pid>.<random>.tmp``) that dead processes of this host left there."""
    if parent in _SWEPT:
        return
    marker = f".{_HOST}-"
    with os.scandir(parent) as entries:
        for entry in entries:
            name = entry.name
            if name.startswith(".") and name.endswith(".tmp") and marker in name:
                prefix = name[: name.rindex(marker) + 1]
                _remove_dead_leftovers(parent, prefix, [Path(entry.path)])
    _SWEPT.add(parent)


def _remove_dead_leftovers(parent: Path, prefix: str, found: list[Path] | None = None) -> None:
    """Remove what killed processes of this host left under a temporary name beginning with
    ``prefix`` (``.<name>.<host>-<pid>.``); a live process's own, or another host's, is left.
    ``found``: those paths only, instead of listing ``parent``."""
    candidates = parent.glob(f"{glob.escape(prefix)}{_HOST}-*") if found is None else found
    for leftover in candidates:
        pid = leftover.name[len(prefix) + len(_HOST) + 1 :].split(".", 1)[0]
        if not pid.isdigit() or int(pid) == os.getpid():
            continue
        try:
            os.kill(int(pid), 0)
            continue  # alive: it may still be writing
        except ProcessLookupError:
            pass
        except PermissionError:  # alive, another user's
            continue
        if leftover.is_dir():
            shutil.rmtree(leftover, ignore_errors=True)
        else:
            leftover.unlink(missing_ok=True)


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it onto ``path`` only if the block succeeds.

    A crash or an exception leaves ``path`` as it was (absent or the old file), never half-written.
    The temporary name (``.<name>.<host>-<pid>.<random>.tmp``) says which process writes it: the
    first write of a process into a folder removes what killed processes left there.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    _sweep_temporary_files(path.parent)
    fd, tmp = tempfile.mkstemp(
        prefix=f".{path.name}.{_owner_tag()}.", suffix=".tmp", dir=path.parent
    )
    os.close(fd)
    tmp_path = Path(tmp)
    tmp_path.chmod(0o666 & ~_UMASK)  # mkstemp makes 0600; the final file gets the usual mode
    try:
        yield tmp_path
        tmp_path.replace(path)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


@contextlib.contextmanager
def atomic_dir(path: str | Path) -> Iterator[Path]:
    """Yield a fresh folder beside ``path``; it replaces ``path`` only if the block succeeds.

    A crash or an exception leaves ``path`` as it was (absent or the old folder), never a folder
    with part of the new content; the next build removes what a killed one left beside it.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    for kind in ("building", "old"):
        _remove_dead_leftovers(path.parent, f".{path.name}.{kind}-")
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.building-{_owner_tag()}.", dir=path.parent))
    umask = os.umask(0)
    os.umask(umask)
    tmp.chmod(0o777 & ~umask)  # as a folder made by mkdir would be (mkdtemp makes it private)
    try:
        yield tmp
        old = path.parent / f".{path.name}.old-{_owner_tag()}"
        if path.exists():
            path.rename(old)
        tmp.rename(path)
        shutil.rmtree(old, ignore_errors=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


_HELD: set[Path] = set()  # outputs whose lock this process holds (a nested lock is the same)


def output_lock_file(path: str | Path) -> Path:
    """The lock file of an output: ``.<name>.lock`` beside it."""
    path = Path(path).expanduser()
    return path.parent / f".{path.name}.lock"


@contextlib.contextmanager
def output_lock(path: str | Path, what: str = "output") -> Iterator[None]:
    """Hold the lock of an output (a file or a folder a command writes) for the block: a second
    command writing the same output at once is refused at once (``HMSRunError``, exit status 1),
    naming the process that holds it, instead of interleaving with it.

    The lock is ``flock`` on ``.<name>.lock`` beside the output (created with the folders above
    it, which are removed again when they are left empty); it dies with its process, so a killed
    command never leaves an output locked, and the file is removed when the block ends. Nested
    locks of one output in one process are one lock."""
    path = Path(path).expanduser()
    key = path.parent.resolve() / path.name
    if key in _HELD:
        yield
        return
    created = [a for a in (path.parent, *path.parent.parents) if not a.exists()]
    path.parent.mkdir(parents=True, exist_ok=True)
    lock = output_lock_file(path)
    while True:
        fh = lock.open("a+")
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            fh.seek(0)
            holder = fh.read().strip()[:200] or "another process"
            fh.close()
            raise HMSRunError(
                f"{path}: another hms command is writing this {what} ({holder}); wait for it "
                "to end, or write elsewhere"
            ) from None
        try:  # its last holder may have removed the file between our open and our lock
            same = os.fstat(fh.fileno()).st_ino == lock.stat().st_ino
        except FileNotFoundError:
            same = False
        if same:
            break
        fh.close()
    _HELD.add(key)
    try:
        fh.seek(0)
        fh.truncate()
        fh.write(f"pid {os.getpid()} on {socket.gethostname()}")
        fh.flush()
        yield
    finally:
        _HELD.discard(key)
        lock.unlink(missing_ok=True)  # while still holding it: a waiter then finds a new file
        fcntl.flock(fh, fcntl.LOCK_UN)
        fh.close()
        for folder in created:  # deepest first: what the lock created and nothing filled
            with contextlib.suppress(OSError):
                folder.rmdir()


def check_output_dir(
    out_dir: str | Path,
    source_dir: str | Path,
    what: str,
    marker: str,
    earlier: Callable[[Path], bool] | None = None,
) -> Path:
    """A folder an export replaces whole: writable, never the source folder or inside it, and,
    when it exists, empty or an earlier output of the same kind (its ``marker`` file is there
    and, when given, ``earlier(out_dir)`` says it is one)."""
    out_dir = Path(out_dir).expanduser()
    if not Path(source_dir).expanduser().is_dir():  # the input's error first: a typo there
        raise HMSDataError(source_dir, "weights folder not found")
    check_writable(out_dir, what, folder=True)
    if not Path(source_dir).expanduser().is_dir():
        raise HMSDataError(source_dir, "weights folder not found")
    resolved, source = out_dir.resolve(), Path(source_dir).expanduser().resolve()
    if resolved == source or source in resolved.parents:
        raise HMSDataError(
            out_dir, "out_dir is the weights folder or inside it; choose another folder"
        )
    if resolved in source.parents:
        raise HMSDataError(
            out_dir, "out_dir holds the weights folder, which replacing it would delete; choose "
            "another folder",
        )  # fmt: skip
    if not out_dir.is_dir() or not any(out_dir.iterdir()):
        return out_dir
    if not (out_dir / marker).is_file() or (earlier is not None and not earlier(out_dir)):
        raise HMSDataError(
            out_dir, f"out_dir holds other files (no {marker} of a {what}) and would be "
            "replaced; choose an empty or new folder",
        )  # fmt: skip
    return out_dir


def file_digest(path: str | Path) -> dict[str, Any]:
    """A file's size and SHA-256 (what completion records keep of each output)."""
    path = Path(path)
    h = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return {"size": path.stat().st_size, "sha256": h.hexdigest()}


def check_writable(path: str | Path, what: str = "output", folder: bool | None = None) -> Path:
    """Raise ``HMSDataError`` now, before any work, if ``path`` (a file or folder to be written)
    could not be created: the nearest existing ancestor must be a writable folder. With
    ``folder=True`` (a folder to write) an existing file is refused there, with ``folder=False``
    (a file to write) an existing folder."""
    path = Path(path).expanduser()
    if folder is True and path.exists() and not path.is_dir():
        raise HMSDataError(path, f"cannot write the {what} here: this is a file, not a folder")
    if folder is False and path.is_dir():
        raise HMSDataError(path, f"cannot write the {what} here: this is a folder, not a file")
    parent = path if path.is_dir() else path.parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir():
        raise HMSDataError(path, f"cannot write the {what} here: {parent} is not a folder")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise HMSDataError(path, f"cannot write the {what} here: {parent} is not writable")
    try:  # permission bits do not tell everything (root, read-only or virtual file systems)
        with tempfile.TemporaryFile(prefix=".hms-write-check-", dir=parent):
            pass
    except OSError as exc:
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            raise  # a full disk, not a wrong place: hms.cli reports it as such
        raise HMSDataError(
            path, f"cannot write the {what} here: {parent} is not writable ({exc.strerror})"
        ) from exc
    return path


def write_csv(df: pd.DataFrame, path: str | Path, **kwargs) -> None:
    with atomic_path(path) as tmp:
        df.to_csv(tmp, index=False, **kwargs)


def write_parquet(df: pd.DataFrame, path: str | Path) -> None:
    with atomic_path(path) as tmp:
        df.to_parquet(tmp, index=False)


# Signals are float noise: dictionary encoding and column statistics only cost time and space.
_SIGNAL_PARQUET = {"use_dictionary": False, "write_statistics": False}


def write_eeg_parquet(path: str | Path, signals: np.ndarray) -> None:
    """Write (time, 20) microvolts as an HMS EEG file: float32 columns in ``EEG_CHANNELS`` order."""
    signals = np.asarray(signals, dtype=np.float32)
    if signals.ndim != 2 or signals.shape[1] != len(EEG_CHANNELS):
        raise ValueError(f"EEG must be (time, {len(EEG_CHANNELS)}), got {signals.shape}")
    columns = np.ascontiguousarray(signals.T)  # one contiguous block per column: no copies
    table = pa.table({name: columns[i] for i, name in enumerate(EEG_CHANNELS)})
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp, **_SIGNAL_PARQUET)


def write_spectrogram_parquet(path: str | Path, times: np.ndarray, values: np.ndarray) -> None:
    """Write a Kaggle spectrogram file: int64 ``time`` then the 400 float32 region/bin columns."""
    values = np.asarray(values, dtype=np.float32)
    if values.ndim != 2 or values.shape[1] != len(SPEC_COLUMNS) or len(times) != len(values):
        raise ValueError(f"spectrogram must be (rows, {len(SPEC_COLUMNS)}), got {values.shape}")
    columns = np.ascontiguousarray(values.T)
    cols = {"time": pa.array(np.asarray(times, dtype=np.int64))}
    cols.update({name: columns[i] for i, name in enumerate(SPEC_COLUMNS)})
    with atomic_path(path) as tmp:
        pq.write_table(pa.table(cols), tmp, **_SIGNAL_PARQUET)


# --------------------------------------------------------------------------- parquet readers

# A signal file is read whole (its columns as float32): larger ones are refused from their
# metadata before anything is read. The longest real HMS EEG is about an hour (720,000 rows);
# 12 h of 20 channels is 0.7 GB as float32, and the cache's filter holds a few copies of it.
MAX_EEG_ROWS = 12 * 3600 * SAMPLE_RATE
MAX_SPECTROGRAM_ROWS = 100_000  # rows every 2 s: 55 h (0.16 GB as float32)
MAX_CSV_BYTES = 1024**3  # the competition's train.csv is 9 MB; a test.csv of 100,000 ids 3 MB


def shown_names(names: Sequence[Any], limit: int = 20) -> str:
    """Column names for a message: at most ``limit``, each cut to 40 characters, 600 in all (a
    file's header may hold thousands of columns, a whole file read as one name, or the NUL
    bytes of UTF-16 text that Python writes as four characters each)."""
    names = list(names)
    text = str([str(n)[:40] for n in names[:limit]])
    if len(text) > 600:
        text = text[:600] + " ...]"
    return text if len(names) <= limit else f"{text[:-1]}, ...] ({len(names)} in all)"


def _numeric(kind: pa.DataType) -> bool:
    return pa.types.is_floating(kind) or pa.types.is_integer(kind)


def _read_parquet_columns(
    path: Path, required: Sequence[str], what: str, max_rows: int | None = None
) -> pa.Table:
    """The ``required`` columns of a parquet file, after its metadata said they are there, are
    numeric and hold at most ``max_rows`` rows."""
    if not path.is_file():
        raise HMSDataError(path, f"{what} file not found")
    try:
        meta = pq.read_metadata(path)
        schema = meta.schema.to_arrow_schema()
    except Exception as exc:  # pyarrow raises several types for corrupt files
        raise HMSDataError(
            path, f"unreadable parquet ({type(exc).__name__}: {str(exc)[:300]})"
        ) from exc
    kinds: dict[str, list[pa.DataType]] = {}  # one pass: a spectrogram file has 401 columns
    for f in schema:
        kinds.setdefault(f.name, []).append(f.type)
    missing = [c for c in required if c not in kinds]
    if missing:
        extra = [c for c in kinds if c not in required and not c.startswith("__")]
        hint = f"; columns not expected: {shown_names(extra, 10)}" if extra else ""
        raise HMSDataError(path, f"{what} is missing columns {missing}{hint}")
    for name in required:
        if len(kinds[name]) > 1:  # pyarrow's own error would print the whole schema
            raise HMSDataError(path, f"{what} column {name!r} appears {len(kinds[name])} times")
        if not _numeric(kinds[name][0]):
            raise HMSDataError(path, f"{what} column {name!r} is {kinds[name][0]}, not numeric")
    if max_rows is not None and meta.num_rows > max_rows:
        raise HMSDataError(
            path, f"{what} has {meta.num_rows:,} rows, more than the limit of {max_rows:,} "
            "(a signal file is read whole into memory); split the recording",
        )  # fmt: skip
    try:
        return pq.read_table(path, columns=list(required))
    except Exception as exc:
        raise HMSDataError(
            path, f"unreadable parquet ({type(exc).__name__}: {str(exc)[:300]})"
        ) from exc


def _table_to_float32(table: pa.Table, path: Path, what: str) -> np.ndarray:
    out = np.empty((table.num_rows, table.num_columns), dtype=np.float32)
    for i, name in enumerate(table.column_names):
        col = table.column(i)
        if not _numeric(col.type):
            raise HMSDataError(path, f"{what} column {name!r} is {col.type}, not numeric")
        with np.errstate(over="ignore"):  # beyond float32's range: infinite, as NaN is kept
            out[:, i] = col.to_numpy(zero_copy_only=False).astype(np.float32, copy=False)
    return out


def read_eeg(path: str | Path, min_samples: int = 1) -> np.ndarray:
    """Read an HMS EEG parquet: float32 (time, 20) µV in ``EEG_CHANNELS`` order, may hold NaN.
    A file of more than ``MAX_EEG_ROWS`` rows is refused before it is read."""
    path = Path(path)
    table = _read_parquet_columns(path, EEG_CHANNELS, "EEG", MAX_EEG_ROWS)
    if table.num_rows < min_samples:
        raise HMSDataError(
            path, f"EEG has {table.num_rows} samples, fewer than the {min_samples} needed"
        )
    return _table_to_float32(table, path, "EEG")


def read_spectrogram(path: str | Path, min_rows: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """Read a Kaggle spectrogram parquet: ``(time (rows,) int64, values (rows, 400) float32)``.
    Times must be finite whole seconds, increasing; a file of more than
    ``MAX_SPECTROGRAM_ROWS`` rows is refused before it is read."""
    path = Path(path)
    table = _read_parquet_columns(
        path, ("time", *SPEC_COLUMNS), "spectrogram", MAX_SPECTROGRAM_ROWS
    )
    if table.num_rows < min_rows:
        raise HMSDataError(
            path, f"spectrogram has {table.num_rows} rows, fewer than the {min_rows} needed"
        )
    raw = table.column(0).to_numpy(zero_copy_only=False)
    with np.errstate(invalid="ignore"):
        finite = np.isfinite(raw.astype(np.float64))
        if not finite.all() or (np.abs(raw.astype(np.float64)) > 2**53).any():
            raise HMSDataError(path, "spectrogram column 'time' holds empty or huge values")
        if (np.floor(raw) != raw).any():  # cut to whole seconds, rows would move
            raise HMSDataError(
                path, "spectrogram column 'time' holds values that are not whole seconds"
            )
    times = raw.astype(np.int64)
    if len(times) > 1 and not (np.diff(times) > 0).all():
        raise HMSDataError(path, "spectrogram column 'time' is not increasing")
    return times, _table_to_float32(table.drop_columns(["time"]), path, "spectrogram")


# --------------------------------------------------------------------------- csv readers


def read_csv_checked(path: str | Path, required: Sequence[str], what: str) -> pd.DataFrame:
    """Read a CSV; a missing or unreadable file or missing columns raise ``HMSDataError``."""
    path = Path(path)
    if not path.is_file():
        raise HMSDataError(path, f"{what} not found")
    size = path.stat().st_size
    if size > MAX_CSV_BYTES:
        raise HMSDataError(
            path, f"{what} is {size:,} bytes, more than the limit of {MAX_CSV_BYTES:,} bytes "
            "(a table is read whole into memory)",
        )  # fmt: skip
    try:
        df = pd.read_csv(path)
    except pd.errors.EmptyDataError as exc:
        raise HMSDataError(path, f"{what} is empty (no header)") from exc
    except Exception as exc:
        raise HMSDataError(path, f"unreadable CSV ({type(exc).__name__}: {exc})") from exc
    missing = [c for c in required if c not in df.columns]
    if missing:
        raise HMSDataError(
            path, f"{what} is missing columns {missing}; found {shown_names(df.columns)}"
        )
    return df


def _check_integer(df: pd.DataFrame, cols: Sequence[str], path: Path, what: str) -> None:
    for c in cols:
        if df[c].isna().any():
            rows = df.index[df[c].isna()].tolist()[:5]
            raise HMSDataError(path, f"{what} column {c!r} is empty in rows {rows}")
        if pd.api.types.is_bool_dtype(df[c]):  # True and False are no ids or votes
            raise HMSDataError(path, f"{what} column {c!r} is not integer")
        if df[c].dtype != np.int64:  # floats, strings, uint64: each value must be an int64's
            try:
                as_int = df[c].astype(np.int64)
            except (TypeError, ValueError, OverflowError) as exc:
                raise HMSDataError(path, f"{what} column {c!r} is not integer") from exc
            if not np.array_equal(as_int.to_numpy(), df[c].to_numpy()):
                raise HMSDataError(path, f"{what} column {c!r} is not integer")
            df[c] = as_int


def check_unique(df: pd.DataFrame, column: str, path: Path | None, what: str) -> None:
    """Refuse a table in which ``column`` (an id) repeats, naming a few of the repeats."""
    if df[column].duplicated().any():
        dup = df.loc[df[column].duplicated(), column].head(5).tolist()
        raise HMSDataError(path, f"{what} repeats {column} {dup}")


def read_train_csv(path: str | Path) -> pd.DataFrame:
    """Read and validate ``train.csv`` (the 15 HMS columns, non-negative integer votes)."""
    path = Path(path)
    df = read_csv_checked(path, TRAIN_COLUMNS, "train.csv")
    ids = ["eeg_id", "eeg_sub_id", "spectrogram_id", "spectrogram_sub_id", "label_id", "patient_id"]
    if df.empty:  # a header alone is valid (the real sample file is one)
        offsets = ["eeg_label_offset_seconds", "spectrogram_label_offset_seconds"]
        df = df.astype(
            {**dict.fromkeys([*ids, *VOTE_COLUMNS], "int64"), **dict.fromkeys(offsets, "float64")}
        )
        return df[list(TRAIN_COLUMNS)]
    _check_integer(df, [*ids, *VOTE_COLUMNS], path, "train.csv")
    # An offset must lie inside a recording the readers accept (beyond, its window's first
    # sample is no int64: the cache's arithmetic would overflow).
    longest = {
        "eeg_label_offset_seconds": MAX_EEG_ROWS / SAMPLE_RATE,
        "spectrogram_label_offset_seconds": MAX_SPECTROGRAM_ROWS * SPEC_ROW_SECONDS,
    }
    for c, limit in longest.items():
        if (
            not pd.api.types.is_numeric_dtype(df[c])
            or pd.api.types.is_bool_dtype(df[c])
            or not df[c].between(0, limit).all()  # NaN is not between
        ):
            raise HMSDataError(
                path, f"train.csv column {c!r} must be numbers of seconds from 0 to {limit:g} "
                "(the longest recording hms reads)",
            )  # fmt: skip
    votes = df[list(VOTE_COLUMNS)].to_numpy()
    if (votes < 0).any():
        raise HMSDataError(path, "train.csv has negative votes")
    empty = np.flatnonzero(votes.sum(axis=1) == 0)
    if len(empty):
        raise HMSDataError(path, f"train.csv rows {empty[:5].tolist()} have no votes at all")
    check_unique(df, "label_id", path, "train.csv")
    return df[list(TRAIN_COLUMNS)].reset_index(drop=True)


def read_test_csv(path: str | Path) -> pd.DataFrame:
    """Read and validate ``test.csv`` (spectrogram_id, eeg_id, patient_id; one row per eeg_id)."""
    path = Path(path)
    df = read_csv_checked(path, TEST_COLUMNS, "test.csv")
    if df.empty:
        raise HMSDataError(path, "test.csv has no rows")
    _check_integer(df, TEST_COLUMNS, path, "test.csv")
    check_unique(df, "eeg_id", path, "test.csv")
    return df[list(TEST_COLUMNS)].reset_index(drop=True)


def read_sample_submission(path: str | Path) -> pd.DataFrame:
    """Read ``sample_submission.csv``: eeg_id and the six *_vote columns, in that order."""
    path = Path(path)
    df = read_csv_checked(path, SUBMISSION_COLUMNS, "sample_submission.csv")
    if list(df.columns) != list(SUBMISSION_COLUMNS):
        raise HMSDataError(
            path,
            f"columns must be {list(SUBMISSION_COLUMNS)} in order, found {shown_names(df.columns)}",
        )
    _check_integer(df, ["eeg_id"], path, "sample_submission.csv")
    return df


# --------------------------------------------------------------------------- the HMS layout


class HMSLayout:
    """Paths of an HMS-layout folder: {split}.csv, {split}_eegs/, {split}_spectrograms/."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)

    def csv(self, split: str) -> Path:
        return self.root / f"{split}.csv"

    def eeg(self, split: str, eeg_id: int) -> Path:
        return self.root / f"{split}_eegs" / f"{int(eeg_id)}.parquet"

    def spectrogram(self, split: str, spectrogram_id: int) -> Path:
        return self.root / f"{split}_spectrograms" / f"{int(spectrogram_id)}.parquet"

    @property
    def sample_submission(self) -> Path:
        return self.root / "sample_submission.csv"

    def read_csv(self, split: str) -> pd.DataFrame:
        if split == "train":
            return read_train_csv(self.csv(split))
        if split == "test":
            return read_test_csv(self.csv(split))
        raise ValueError(f"unknown split {split!r}; expected 'train' or 'test'")
