"""The prepared cache: memory-mapped signals plus a small index, built once per data folder.

Parsing parquet per sample would starve a GPU, so ``build_cache`` turns one split of an HMS
folder into

    <cache_dir>/<split>-<key>/
        eeg.bin            float16|float32 (samples, 20): filtered referential EEG, the labelled
                           span of every recording one after another
        spec.bin           float32 (rows, 400): Kaggle spectrogram rows (NaN -> 0), likewise
        eegs.parquet       eeg_id -> first row in eeg.bin, length, span start, data quality
        spectrograms.parquet   spectrogram_id -> first row in spec.bin, length, NaN share, and
                           whether the rows were computed from the EEG (``computed``)
        samples.parquet    merged samples (``hms.data.labels``), or the test rows
        windows.parquet    every labelled window with its row in eeg.bin and in spec.bin
        manifest.json      settings, input fingerprint, counts; written last

``key`` hashes the settings that shape the arrays and a fingerprint of the inputs, so changing
either builds a new cache beside the old one. The build writes into a temporary folder under a
file lock and renames it into place at the end: an interrupted build leaves nothing a later run
would trust. The files are streamed (each worker reads one recording and writes its block into
the memory map), so memory does not grow with the number of recordings; the disk does, and a
build that would not fit is refused before any file is read (``check_space``). Readers hold only
numpy index arrays and open the memory maps lazily, so a ``DataLoader`` worker receives a few
small arrays, not the data.

Filtered EEG beyond the storage type's range (+-65504 µV for float16: a recording in other units)
is clipped to it rather than stored as infinity; the window preprocessing clips far below that.

A missing spectrogram file is an error by default. ``missing_spectrograms="compute"`` (what
``hms.predict`` uses for recordings from outside Kaggle) instead computes Kaggle-style rows from
the raw EEG with ``hms.data.spectrogram.kaggle_spectrogram``, the function the built-in dataset's
files are made with: the rows whose time falls inside the EEG recording, zeros elsewhere.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import shutil
import time
from collections.abc import Iterator
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pandas as pd

from hms.constants import (
    EEG_CHANNELS,
    SAMPLE_RATE,
    SPEC_COLUMNS,
    SPEC_EEG_LAG,
    SPEC_ROW_SECONDS,
    SPEC_WINDOW_ROWS,
    WINDOW_SAMPLES,
)
from hms.data.io import HMSLayout, read_eeg, read_spectrogram, write_parquet
from hms.data.labels import merge_samples
from hms.data.preprocess import RecordingSettings, clip_to_dtype, preprocess_recording
from hms.data.spectrogram import kaggle_spectrogram
from hms.errors import HMSDataError, HMSRunError
from hms.parallel import run_jobs

CACHE_VERSION = 1
N_CHANNELS = len(EEG_CHANNELS)
N_SPEC = len(SPEC_COLUMNS)
MISSING_SPECTROGRAMS = ("error", "compute")  # what a build does about absent spectrogram files


def file_sha1(path: Path) -> str:
    h = hashlib.sha1()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


@contextlib.contextmanager
def _locked(lock_path: Path) -> Iterator[None]:
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with lock_path.open("w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


# --------------------------------------------------------------------------- planning


def _plan(layout: HMSLayout, split: str) -> tuple[pd.DataFrame, ...]:
    """From the split's csv: samples, windows, and the span of each eeg and spectrogram needed."""
    table = layout.read_csv(split)
    if split == "train":
        samples, windows = merge_samples(table)
        eeg_of_window = samples["eeg_id"].to_numpy()[
            np.repeat(np.arange(len(samples)), samples["n_windows"].to_numpy())
        ]
        windows.insert(1, "eeg_id", eeg_of_window)
    else:  # test: one 50-s window per eeg_id, at the start of its EEG and spectrogram
        samples = pd.DataFrame(
            {
                "sample_id": np.arange(len(table), dtype=np.int64),
                "eeg_id": table["eeg_id"].to_numpy(np.int64),
                "patient_id": table["patient_id"].to_numpy(np.int64),
                "spectrogram_id": table["spectrogram_id"].to_numpy(np.int64),
                "window_start": np.arange(len(table), dtype=np.int64),
                "n_windows": np.ones(len(table), dtype=np.int64),
            }
        )
        windows = pd.DataFrame(
            {
                "sample_id": samples["sample_id"],
                "eeg_id": samples["eeg_id"],
                "label_id": np.full(len(table), -1, dtype=np.int64),
                "spectrogram_id": samples["spectrogram_id"],
                "eeg_offset_s": 0.0,
                "spec_offset_s": 0.0,
            }
        )
    windows["eeg_start"] = np.round(windows["eeg_offset_s"] * SAMPLE_RATE).astype(np.int64)
    eeg_spans = windows.groupby("eeg_id")["eeg_start"].agg(["min", "max"])
    eeg_spans = pd.DataFrame(
        {
            "eeg_id": eeg_spans.index.to_numpy(np.int64),
            "span_start": eeg_spans["min"].to_numpy(np.int64),
            "n_samples": (eeg_spans["max"] - eeg_spans["min"] + WINDOW_SAMPLES).to_numpy(np.int64),
        }
    )
    spec_spans = windows.groupby("spectrogram_id")["spec_offset_s"].agg(["min", "max"])
    spec_spans = pd.DataFrame(
        {
            "spectrogram_id": spec_spans.index.to_numpy(np.int64),
            "min_offset_s": spec_spans["min"].to_numpy(np.float64),
            "max_offset_s": spec_spans["max"].to_numpy(np.float64),
        }
    )
    return samples, windows, eeg_spans, spec_spans


def _spec_rows_needed(spans: pd.DataFrame) -> np.ndarray:
    rows = (spans["max_offset_s"] - spans["min_offset_s"]) / SPEC_ROW_SECONDS + SPEC_WINDOW_ROWS
    return np.ceil(rows.to_numpy()).astype(np.int64)


def _check_mode(missing_spectrograms: str) -> None:
    if missing_spectrograms not in MISSING_SPECTROGRAMS:
        raise ValueError(
            f"missing_spectrograms must be one of {MISSING_SPECTROGRAMS}, "
            f"got {missing_spectrograms!r}"
        )


def _check_files(
    layout: HMSLayout, split: str, eeg_ids, spec_ids, missing_spectrograms: str = "error"
) -> list[int]:
    """Raise if files named by the csv are absent; return the absent spectrogram ids.

    Every absent EEG is an error. Absent spectrograms are errors too unless
    ``missing_spectrograms="compute"``, in which case their ids are returned (to be computed).
    """
    _check_mode(missing_spectrograms)
    missing = [layout.eeg(split, i) for i in eeg_ids if not layout.eeg(split, i).is_file()]
    absent = [int(i) for i in spec_ids if not layout.spectrogram(split, i).is_file()]
    if missing_spectrograms == "error":
        missing += [layout.spectrogram(split, i) for i in absent]
        absent = []
    if missing:
        shown = ", ".join(str(p) for p in missing[:5])
        more = f" and {len(missing) - 5} more" if len(missing) > 5 else ""
        raise HMSDataError(
            layout.csv(split),
            f"{len(missing)} file(s) named by {split}.csv do not exist: {shown}{more}",
        )
    return absent


def fingerprint(layout: HMSLayout, split: str) -> str:
    """Inputs' identity: the csv's bytes and the names, sizes and modification times of the
    signal files (a file rewritten with the same size gets a new time, so a new cache; hashing
    every signal file's bytes would cost the time of a build)."""
    h = hashlib.sha1(file_sha1(layout.csv(split)).encode())
    for sub in (f"{split}_eegs", f"{split}_spectrograms"):
        folder = layout.root / sub
        if folder.is_dir():
            with os.scandir(folder) as it:
                entries = sorted(
                    (e.name, e.stat().st_size, e.stat().st_mtime_ns) for e in it if e.is_file()
                )
            h.update(json.dumps(entries).encode())
    return h.hexdigest()[:16]


# --------------------------------------------------------------------------- workers


def _eeg_job(args) -> tuple[int, np.ndarray, np.ndarray]:
    (i, path, span_start, n_samples, row, bin_path, total, dtype, settings) = args
    raw = read_eeg(path)
    if len(raw) < span_start + n_samples:
        raise HMSDataError(
            path,
            f"recording is too short: {len(raw)} samples ({len(raw) / SAMPLE_RATE:.1f} s), but "
            f"its labels need samples up to {span_start + n_samples} "
            f"({(span_start + n_samples) / SAMPLE_RATE:.1f} s)",
        )
    filtered, quality = preprocess_recording(raw, settings)
    block = clip_to_dtype(filtered[span_start : span_start + n_samples], dtype)
    out = np.memmap(bin_path, dtype=dtype, mode="r+", shape=(total, N_CHANNELS))
    out[row : row + n_samples] = block
    out.flush()
    del out
    return i, quality.bad_fraction, quality.flat


def _spec_job(args) -> tuple[int, float, float]:
    (i, path, min_offset_s, n_rows, row, bin_path, total) = args
    times, values = read_spectrogram(path)
    first = int(np.searchsorted(times, min_offset_s))
    if first + n_rows > len(times):
        raise HMSDataError(
            path,
            f"spectrogram is too short: {len(times)} rows up to {times[-1] if len(times) else 0}"
            f" s, but its labels need {n_rows} rows from offset {min_offset_s:g} s",
        )
    block = values[first : first + n_rows]
    nan_share = float(np.isnan(block).mean())
    out = np.memmap(bin_path, dtype=np.float32, mode="r+", shape=(total, N_SPEC))
    out[row : row + n_rows] = np.nan_to_num(block, nan=0.0, posinf=0.0, neginf=0.0)
    out.flush()
    del out
    return i, float(times[first]) - SPEC_ROW_SECONDS / 2, nan_share


def _computed_spec_job(args) -> tuple[int, float, float]:
    """Kaggle-style rows of an absent spectrogram file, computed from the raw EEG of ``eeg_path``.

    Row k of the block is centred on spectrogram second ``start_s + 1 + 2k``, which is EEG second
    ``start_s + 1 + 2k - lag_s``. Rows whose EEG second lies inside the recording are computed from
    the raw (unfiltered) referential EEG, as the built-in dataset computes its files; the others
    are 0, as NaN rows of real files are. Returns the block's start and the share of rows left 0.
    """
    (i, eeg_path, start_s, lag_s, n_rows, row, bin_path, total) = args
    raw = read_eeg(eeg_path)
    times = start_s + SPEC_ROW_SECONDS / 2 + SPEC_ROW_SECONDS * np.arange(n_rows)
    eeg_times = times - lag_s
    inside = (eeg_times >= 0) & (eeg_times < len(raw) / SAMPLE_RATE)
    block = np.zeros((n_rows, N_SPEC), dtype=np.float32)
    if inside.any():
        _, block[inside] = kaggle_spectrogram(raw, eeg_times[inside], SAMPLE_RATE)
    out = np.memmap(bin_path, dtype=np.float32, mode="r+", shape=(total, N_SPEC))
    out[row : row + n_rows] = block
    out.flush()
    del out
    return i, float(start_s), float(1.0 - inside.mean())


SPACE_MARGIN = 1.05  # the index files and the file system's own


def check_space(folder: Path, needed: int, split: str) -> None:
    """Refuse a build whose arrays would not fit on the cache's disk, before any file is read:
    the arrays are files as large as their content (a test split of 100,000 EEGs is about 88
    GB), and a disk that fills in the middle of a build ends it there."""
    free = shutil.disk_usage(folder).free
    if needed * SPACE_MARGIN > free:
        raise HMSRunError(
            f"{folder.parent}: the {split} cache needs about {needed * SPACE_MARGIN / 1e9:.1f} "
            f"GB, but this disk has {free / 1e9:.1f} GB free; give cache_dir= a folder on a "
            "larger disk"
        )


def _run(jobs, fn, workers: int, desc: str, progress: bool) -> list:
    start = "fork" if hasattr(os, "fork") else "spawn"
    return run_jobs(fn, jobs, workers, desc, "file", progress, start, chunksize=8, min_jobs=4)


# --------------------------------------------------------------------------- build


def cache_path(cache_dir: str | Path, split: str, settings: RecordingSettings, fp: str) -> Path:
    blob = json.dumps(
        {"v": CACHE_VERSION, "split": split, "settings": asdict(settings), "inputs": fp},
        sort_keys=True,
    ).encode()
    return Path(cache_dir) / f"{split}-{hashlib.sha1(blob).hexdigest()[:12]}"


def build_cache(
    data_dir: str | Path,
    cache_dir: str | Path,
    split: str = "train",
    settings: RecordingSettings | None = None,
    workers: int = 1,
    progress: bool = True,
    rebuild: bool = False,
    missing_spectrograms: str = "error",
) -> Path:
    """Build (or find) the cache of one split; returns its folder. Safe to call concurrently.

    ``missing_spectrograms``: ``"error"`` (default) stops on an absent spectrogram file like on
    any absent file; ``"compute"`` computes its rows from the EEG instead (see the module's
    docstring; the index's ``computed`` column marks them). The cache key needs no extra part:
    the fingerprint lists the files present, so a build with computed rows never shares a key
    with one from the files. An ``"error"`` call that finds a cache built with computed rows
    (the files are still absent) raises as a fresh build would.
    """
    _check_mode(missing_spectrograms)
    settings = settings or RecordingSettings()
    layout = HMSLayout(data_dir)
    fp = fingerprint(layout, split)
    final = cache_path(cache_dir, split, settings, fp)
    with _locked(Path(cache_dir) / f".{final.name}.lock"):
        manifest = final / "manifest.json"
        if manifest.is_file() and not rebuild:
            if missing_spectrograms == "error" and json.loads(manifest.read_text()).get(
                "n_computed_spectrograms", 0
            ):
                spectrograms = pd.read_parquet(final / "spectrograms.parquet")
                _check_files(layout, split, [], spectrograms["spectrogram_id"], "error")
            return final
        for stale in Path(cache_dir).glob(f".{final.name}.building-*"):
            shutil.rmtree(stale, ignore_errors=True)
        tmp = Path(cache_dir) / f".{final.name}.building-{os.getpid()}"
        tmp.mkdir(parents=True)
        try:
            _build_into(tmp, layout, split, settings, fp, workers, progress, missing_spectrograms)
            if final.exists():
                shutil.rmtree(final)
            tmp.rename(final)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return final


def _build_into(
    out: Path,
    layout: HMSLayout,
    split: str,
    settings: RecordingSettings,
    fp: str,
    workers: int,
    progress: bool,
    missing_spectrograms: str = "error",
) -> None:
    t0 = time.perf_counter()
    samples, windows, eeg_spans, spec_spans = _plan(layout, split)
    absent = _check_files(
        layout, split, eeg_spans["eeg_id"], spec_spans["spectrogram_id"], missing_spectrograms
    )

    # EEG: one block per recording, in eeg_id order.
    eeg_rows = np.concatenate([[0], np.cumsum(eeg_spans["n_samples"].to_numpy())])
    eeg_spans["row"] = eeg_rows[:-1]
    total = int(eeg_rows[-1])
    dtype = np.dtype(settings.dtype)
    n_rows = _spec_rows_needed(spec_spans)
    check_space(out, total * N_CHANNELS * dtype.itemsize + int(n_rows.sum()) * N_SPEC * 4, split)
    np.memmap(out / "eeg.bin", dtype=dtype, mode="w+", shape=(max(total, 1), N_CHANNELS)).flush()
    jobs = [
        (i, layout.eeg(split, r.eeg_id), r.span_start, r.n_samples, r.row, out / "eeg.bin",
         max(total, 1), dtype, settings)
        for i, r in enumerate(eeg_spans.itertuples(index=False))
    ]  # fmt: skip
    bad = np.zeros((len(jobs), N_CHANNELS), dtype=np.float32)
    flat = np.zeros((len(jobs), N_CHANNELS), dtype=bool)
    for i, bad_fraction, is_flat in _run(jobs, _eeg_job, workers, f"{split} EEGs", progress):
        bad[i], flat[i] = bad_fraction, is_flat
    eeg_spans["bad_fraction"] = bad.max(axis=1)
    eeg_spans["n_bad_channels"] = (bad > 0).sum(axis=1)
    eeg_spans["n_flat_channels"] = flat[:, :-1].sum(axis=1)  # scalp channels only

    # Spectrograms: the rows the labels need, in spectrogram_id order.
    spec_rows = np.concatenate([[0], np.cumsum(n_rows)])
    spec_spans["n_rows"] = n_rows
    spec_spans["row"] = spec_rows[:-1]
    total_rows = int(spec_rows[-1])
    np.memmap(
        out / "spec.bin", dtype=np.float32, mode="w+", shape=(max(total_rows, 1), N_SPEC)
    ).flush()
    computed = spec_spans["spectrogram_id"].isin(absent).to_numpy()
    spec_spans["computed"] = computed
    jobs = [
        (i, layout.spectrogram(split, r.spectrogram_id), r.min_offset_s, r.n_rows, r.row,
         out / "spec.bin", max(total_rows, 1))
        for i, r in enumerate(spec_spans.itertuples(index=False)) if not computed[i]
    ]  # fmt: skip
    # An absent file's rows come from the EEG of the first window that uses the spectrogram:
    # spectrogram second spec_offset_s + SPEC_EEG_LAG + t is EEG second eeg_offset_s + t.
    first = windows.drop_duplicates("spectrogram_id").set_index("spectrogram_id")
    computed_jobs = [
        (i, layout.eeg(split, first.at[r.spectrogram_id, "eeg_id"]), r.min_offset_s,
         first.at[r.spectrogram_id, "spec_offset_s"] + SPEC_EEG_LAG
         - first.at[r.spectrogram_id, "eeg_offset_s"],
         r.n_rows, r.row, out / "spec.bin", max(total_rows, 1))
        for i, r in enumerate(spec_spans.itertuples(index=False)) if computed[i]
    ]  # fmt: skip
    start_s = np.zeros(len(spec_spans))
    nan_share = np.zeros(len(spec_spans))
    results = _run(jobs, _spec_job, workers, f"{split} spectrograms", progress)
    if computed_jobs:
        results += _run(
            computed_jobs, _computed_spec_job, workers, f"{split} spectrograms (computed)", progress
        )
    for i, first_s, nan in results:
        start_s[i], nan_share[i] = first_s, nan
    spec_spans["start_s"] = start_s
    spec_spans["nan_fraction"] = nan_share  # computed: the share of rows outside the EEG

    # Windows -> absolute rows in the two arrays.
    e = eeg_spans.set_index("eeg_id")
    windows["eeg_row"] = (
        e.loc[windows["eeg_id"], "row"].to_numpy()
        + windows["eeg_start"].to_numpy()
        - e.loc[windows["eeg_id"], "span_start"].to_numpy()
    )
    s = spec_spans.set_index("spectrogram_id")
    windows["spec_row"] = s.loc[windows["spectrogram_id"], "row"].to_numpy() + np.round(
        (
            windows["spec_offset_s"].to_numpy()
            - s.loc[windows["spectrogram_id"], "start_s"].to_numpy()
        )
        / SPEC_ROW_SECONDS
    ).astype(np.int64)

    write_parquet(eeg_spans, out / "eegs.parquet")
    write_parquet(spec_spans, out / "spectrograms.parquet")
    write_parquet(samples, out / "samples.parquet")
    write_parquet(windows, out / "windows.parquet")
    manifest = {
        "version": CACHE_VERSION,
        "split": split,
        "data_dir": str(layout.root.resolve()),
        "inputs": fp,
        "settings": asdict(settings),
        "eeg_dtype": dtype.name,
        "eeg_samples": total,
        "spec_rows": total_rows,
        "n_eegs": len(eeg_spans),
        "n_spectrograms": len(spec_spans),
        "n_computed_spectrograms": int(computed.sum()),
        "n_samples": len(samples),
        "n_windows": len(windows),
        "build_seconds": round(time.perf_counter() - t0, 2),
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2))


# --------------------------------------------------------------------------- reading


class HMSCache:
    """Random access to a built cache. Picklable and cheap to send to DataLoader workers."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        manifest = self.path / "manifest.json"
        if not manifest.is_file():
            raise HMSDataError(self.path, "not a complete hms cache (no manifest.json)")
        self.manifest = json.loads(manifest.read_text())
        if self.manifest.get("version") != CACHE_VERSION:
            raise HMSDataError(self.path, "cache from another hms version; run prepare again")
        self.samples = pd.read_parquet(self.path / "samples.parquet")
        self.windows = pd.read_parquet(self.path / "windows.parquet")
        self.eegs = pd.read_parquet(self.path / "eegs.parquet")
        self.spectrograms = pd.read_parquet(self.path / "spectrograms.parquet")
        if "computed" not in self.spectrograms:  # built before rows could be computed
            self.spectrograms["computed"] = False
        # The hot path uses plain arrays only.
        self.window_start = self.samples["window_start"].to_numpy(np.int64)
        self.n_windows = self.samples["n_windows"].to_numpy(np.int64)
        self.eeg_row = self.windows["eeg_row"].to_numpy(np.int64)
        self.spec_row = self.windows["spec_row"].to_numpy(np.int64)
        self._eeg: np.memmap | None = None
        self._spec: np.memmap | None = None

    def __len__(self) -> int:
        return len(self.samples)

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state["_eeg"] = state["_spec"] = None
        return state

    @property
    def eeg_array(self) -> np.memmap:
        if self._eeg is None:
            self._eeg = np.memmap(
                self.path / "eeg.bin",
                dtype=np.dtype(self.manifest["eeg_dtype"]),
                mode="r",
                shape=(max(self.manifest["eeg_samples"], 1), N_CHANNELS),
            )
        return self._eeg

    @property
    def spec_array(self) -> np.memmap:
        if self._spec is None:
            self._spec = np.memmap(
                self.path / "spec.bin",
                dtype=np.float32,
                mode="r",
                shape=(max(self.manifest["spec_rows"], 1), N_SPEC),
            )
        return self._spec

    def window_index(self, sample: int, k: int = 0) -> int:
        """Row in ``windows`` of the k-th window of a sample (k wraps around)."""
        return int(self.window_start[sample] + k % self.n_windows[sample])

    def eeg_window(self, window: int, n_samples: int = WINDOW_SAMPLES) -> np.ndarray:
        """Filtered referential EEG (n_samples, 20) float32 of one window."""
        row = self.eeg_row[window]
        return np.asarray(self.eeg_array[row : row + n_samples], dtype=np.float32)

    def spec_window(self, window: int, n_rows: int = SPEC_WINDOW_ROWS) -> np.ndarray:
        """Kaggle spectrogram rows (n_rows, 400) float32 of one window (NaN already 0)."""
        row = self.spec_row[window]
        return np.array(self.spec_array[row : row + n_rows], dtype=np.float32)
