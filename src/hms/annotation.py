"""A clinical recording -> its timeline of the six probabilities: the work of ``hms.annotate``.

``annotate(recording, weights_dir, out_dir)`` reads a clinical recording (EDF, EDF+, BDF, or any
format MNE reads; see ``hms.data.recording``), slides the 50-s model window along it by
``step_s`` (default 10 s), runs the ensemble of ``weights_dir`` (written by ``hms.ensemble``) on
every window and writes to ``out_dir``:

- ``timeline.csv``: one row per window: ``start_s``/``end_s`` of the 50-s window and ``centre_s``
  (the model classifies the central 10 s, as in the competition), wall-clock ``start_time`` /
  ``end_time`` when the file records its start, the six probabilities, the top class and its
  probability, and ``interpolated`` (electrodes filled by interpolation, else empty);
- ``timeline.png``: the probabilities stacked over time above a spectrogram strip of the four
  chains (``hms.report.timeline_figure``);
- ``annotate.json``: the recording (channel mapping, sampling rate, units), the ensemble and the
  run's settings and timing;
- with ``export_windows=true``, ``windows/``: the windows as an HMS test split (``test.csv``,
  ``test_eegs/``, ``test_spectrograms/`` and ``windows.csv`` with each window's times), which
  ``hms.predict`` and the Kaggle tooling read as they are. Each window costs about 0.4 MB there.

Preprocessing is the training code: each member's filters with the values rounded as the cache
stores them (``filtered_as_stored``), each window made into the model input as ``CacheDataset``
makes it (``hms.data.dataset.RecordingWindows``), and the Kaggle-style spectrogram rows of
``kaggle_spectrogram`` around each window's centre (rows outside the recording are zero, as for
predict's computed spectrograms); the ensemble runs through ``hms.inference``. The recording is
read in chunks of ``chunk_windows`` windows with enough context on each side for the filters and
the 10-min spectrogram, so memory depends on the chunk, not on the recording's length.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import math
import numbers
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from hms.backends.base import check_device
from hms.blend import read_ensemble
from hms.constants import (
    CLASSES,
    CONSENSUS_NAMES,
    SAMPLE_RATE,
    SPEC_ROW_SECONDS,
    SPEC_WINDOW_ROWS,
    WINDOW_SAMPLES,
)
from hms.data.dataset import RecordingWindows
from hms.data.io import (
    atomic_dir,
    atomic_path,
    check_writable,
    output_lock,
    write_csv,
    write_eeg_parquet,
    write_spectrogram_parquet,
)
from hms.data.preprocess import RecordingSettings, filtered_as_stored
from hms.data.recording import MISSING_MODES, EEGRecording
from hms.data.spectrogram import kaggle_spectrogram, window_row_times
from hms.errors import HMSDataError, check_choice, check_int
from hms.inference import load_members, member_settings, open_weights
from hms.progress import progress as progress_display
from hms.report import timeline_figure

FILTER_CONTEXT_S = 30.0  # filtered signal read on each side of a chunk (the 0.5-Hz high-pass)
SPEC_HALF_S = SPEC_WINDOW_ROWS * SPEC_ROW_SECONDS / 2  # 300 s of spectrogram each side of centre
SPEC_CONTEXT_S = SPEC_HALF_S + 3.0  # plus half a 1024-sample FFT window
STRIP_OFFSETS_S = np.array([-4.0, -2.0, 0.0, 2.0, 4.0])
# Windows of one timeline at most: 116 days at the default 10-s step (a week is 60,480).
MAX_WINDOWS = 1_000_000  # the strip: rows over the central 10 s
TIMELINE_FILE, FIGURE_FILE, SUMMARY_FILE, WINDOWS_DIR = (
    "timeline.csv", "timeline.png", "annotate.json", "windows",
)  # fmt: skip


def window_starts(n_samples: int, step_s: float, path: Path | None = None) -> np.ndarray:
    """Start samples (200 Hz) of the 50-s windows, every ``step_s`` from the recording's start."""
    step = round(step_s * SAMPLE_RATE)
    if step < 1:
        raise HMSDataError(None, f"step_s must be at least {1 / SAMPLE_RATE} s, got {step_s}")
    if n_samples < WINDOW_SAMPLES:
        raise HMSDataError(
            path,
            f"recording lasts {n_samples / SAMPLE_RATE:.1f} s, shorter than one "
            f"{WINDOW_SAMPLES // SAMPLE_RATE}-s window",
        )
    n_windows = (n_samples - WINDOW_SAMPLES) // step + 1
    if n_windows > MAX_WINDOWS:
        raise HMSDataError(
            path, f"recording of {n_samples / SAMPLE_RATE / 3600:.1f} h at step_s={step_s:g} "
            f"gives {n_windows:,} windows, more than the limit of {MAX_WINDOWS:,} (a timeline "
            f"keeps about 2 kB per window); give a larger step_s",
        )  # fmt: skip
    return np.arange(0, n_samples - WINDOW_SAMPLES + 1, step, dtype=np.int64)


def _spectrogram_rows(
    raw: np.ndarray, span_start_s: float, times: np.ndarray, duration_s: float
) -> tuple[np.ndarray, np.ndarray]:
    """Kaggle-style rows at the unique ``times`` (s in the recording) from a raw span.

    Returns ``(values (unique rows, 400), index)`` with ``values[index]`` the rows of ``times``;
    rows centred outside the recording are 0, as ``hms.predict`` leaves them.
    """
    flat = np.round(times.ravel(), 6)
    unique, index = np.unique(flat, return_inverse=True)
    values = np.zeros((len(unique), 400), np.float32)
    inside = (unique >= 0) & (unique < duration_s)
    if inside.any():
        _, values[inside] = kaggle_spectrogram(raw, unique[inside] - span_start_s, SAMPLE_RATE)
    return values, index.reshape(times.shape)


def _wall_clock(start: dt.datetime | None, seconds: np.ndarray) -> list[str] | None:
    if start is None:
        return None
    return [(start + dt.timedelta(seconds=float(s))).isoformat() for s in seconds]


def _export_windows(
    folder: Path, raw: np.ndarray, span_start: int, starts: np.ndarray, first_id: int,
    spec_values: np.ndarray, spec_index: np.ndarray, spec_inside: np.ndarray,
) -> None:  # fmt: skip
    """Write one chunk's windows into an HMS test split (EEG files and 10-min spectrograms)."""
    times = (SPEC_ROW_SECONDS / 2 + SPEC_ROW_SECONDS * np.arange(SPEC_WINDOW_ROWS)).astype(np.int64)
    for i, s in enumerate(starts):
        eeg_id = first_id + i
        o = int(s - span_start)
        write_eeg_parquet(folder / "test_eegs" / f"{eeg_id}.parquet", raw[o : o + WINDOW_SAMPLES])
        rows = spec_values[spec_index[i]].copy()
        rows[~spec_inside[i]] = np.nan  # outside the recording: NaN, as in the Kaggle files
        write_spectrogram_parquet(folder / "test_spectrograms" / f"{eeg_id}.parquet", times, rows)


def annotate(
    recording: str | Path,
    weights_dir: str | Path,
    out_dir: str | Path,
    step_s: float = 10.0,
    missing: str = "error",
    unit_scale: float | None = None,
    export_windows: bool = False,
    device: str = "auto",
    precision: str | None = "auto",
    batch_size: int = 32,
    chunk_windows: int = 180,
    tta_flip: bool | None = None,
    figure: bool = True,
    progress: bool = True,
) -> pd.DataFrame:
    """Annotate ``recording`` with the ensemble in ``weights_dir``; write ``out_dir``.

    Returns the timeline (one row per window). Bad input (an unreadable file, missing channels,
    a recording shorter than one window, a weights folder without an ensemble) raises
    ``HMSDataError`` naming the file and the problem before anything is written; every output
    file is written under a temporary name and renamed.
    """
    t0 = time.perf_counter()
    weights_dir, out_dir = Path(weights_dir), Path(out_dir)
    # Arguments and the output location first: nothing is read or computed for a run that
    # could not finish.
    if (
        isinstance(step_s, bool)
        or not isinstance(step_s, numbers.Real)
        or not round(step_s * SAMPLE_RATE) >= 1
    ):
        raise HMSDataError(None, f"step_s must be at least {1 / SAMPLE_RATE} s, got {step_s!r}")
    check_int("batch_size", batch_size, 1)
    check_int("chunk_windows", chunk_windows, 1)
    check_choice("missing", missing, MISSING_MODES)
    if unit_scale is not None and (
        isinstance(unit_scale, bool)
        or not isinstance(unit_scale, numbers.Real)
        or not 0 < unit_scale < math.inf
    ):
        raise HMSDataError(
            None, f"unit_scale must be a positive number (µV per stored unit) or null, got "
            f"{unit_scale!r}",
        )  # fmt: skip
    if tta_flip is not None and not isinstance(tta_flip, bool):
        raise HMSDataError(None, f"tta_flip must be true, false or null, got {tta_flip!r}")
    check_device(device, precision)
    check_writable(out_dir, "annotation folder", folder=True)
    # Cheap checks first: the weights folder's manifest, the recording's channels and length;
    # then the backend on its device and every fold file.
    ensemble = read_ensemble(weights_dir)
    _, windows = member_settings(ensemble, weights_dir)
    blended = [m for m in ensemble.members if ensemble.weights[m] > 0]
    montages = sorted({windows[m].montage for m in blended})
    rec = EEGRecording(recording, montages, missing=missing, unit_scale=unit_scale)
    starts = window_starts(rec.n_samples, step_s, rec.path)
    weights = open_weights(weights_dir, device, precision, ensemble)
    _, members = load_members(weights, tta_flip=tta_flip, blended_only=True)
    backend = weights.backend
    needs_spec = any(m.needs_spec for m in members)
    if rec.interpolated:
        print(f"note: {rec.path}: electrodes {rec.interpolated} absent, interpolated from others")

    with output_lock(out_dir, "annotation folder"):  # one command writes it at a time
        with_spec = needs_spec or export_windows  # the exported windows carry their 10-min rows
        before = round(max(FILTER_CONTEXT_S, SPEC_CONTEXT_S if with_spec else 0.0) * SAMPLE_RATE)
        after = before
        n = len(starts)
        probs = np.zeros((n, len(CLASSES)), np.float64)
        strip = np.zeros((n, 400), np.float32)
        member_probs = {m.name: np.zeros((n, len(CLASSES))) for m in members}
        amplitude: list[float] = []
        with contextlib.ExitStack() as stack:
            export_folder = (
                stack.enter_context(atomic_dir(out_dir / WINDOWS_DIR)) if export_windows else None
            )  # renamed into place only when every window is written
            bar = progress_display(total=n, desc="windows", unit="window", enabled=progress)
            for k0 in range(0, n, chunk_windows):
                ks = np.arange(k0, min(k0 + chunk_windows, n))
                s = starts[ks]
                a = max(0, int(s[0]) - before)
                b = min(rec.n_samples, int(s[-1]) + WINDOW_SAMPLES + after)
                raw = rec.read(a, b)
                sd = raw.std(axis=0)
                if not amplitude and (sd > 0).any():  # units check on the first chunk with signal
                    amplitude.append(float(np.median(sd[sd > 0])))
                centres_s = (s + WINDOW_SAMPLES // 2) / SAMPLE_RATE
                row_times = [centres_s[:, None] + STRIP_OFFSETS_S[None, :]]
                rows_s = window_row_times(centres_s) if with_spec else None
                if rows_s is not None:
                    row_times.append(rows_s)
                times = np.concatenate(row_times, axis=1)
                values, index = _spectrogram_rows(raw, a / SAMPLE_RATE, times, rec.duration_s)
                n_strip = len(STRIP_OFFSETS_S)
                strip[ks] = values[index[:, :n_strip]].mean(axis=1)
                spec_index = index[:, n_strip:] if times.shape[1] > n_strip else None
                filtered: dict[RecordingSettings, np.ndarray] = {}
                for m in members:
                    if m.recording not in filtered:
                        filtered[m.recording] = filtered_as_stored(raw, m.recording)
                    windows = RecordingWindows(
                        filtered[m.recording], s - a, m.window,
                        values if m.needs_spec else None, spec_index,
                    )  # fmt: skip
                    member_probs[m.name][ks] = m.predict(windows, batch_size)
                probs[ks] = ensemble.blend({m.name: member_probs[m.name][ks] for m in members})
                if export_folder is not None:
                    inside = (rows_s >= 0) & (rows_s < rec.duration_s)
                    _export_windows(
                        export_folder, raw, a, s, int(ks[0]), values, index[:, n_strip:], inside
                    )
                bar.update(len(ks))
                backend.release()
            bar.close()
            timeline = _timeline(rec, starts, probs)
            if export_folder is not None:
                _export_tables(export_folder, timeline)

        write_csv(timeline, out_dir / TIMELINE_FILE)
        if amplitude and not 0.5 <= amplitude[0] <= 5000:
            print(
                f"warning: {rec.path}: median channel SD {amplitude[0]:.3g} µV after unit "
                f"conversion; scalp EEG is usually 5-200 µV. If the file's units are wrong, give "
                f"unit_scale=<µV per stored unit>"
            )
        if figure:
            timeline_figure(timeline, strip, out_dir / FIGURE_FILE, title=rec.path.name)
        summary: dict[str, Any] = {
            "recording": rec.describe(),
            "median_channel_sd_uv": amplitude[0] if amplitude else None,
            "weights_dir": str(weights_dir),
            "members": {m.name: len(m.folds) for m in members},
            "weights": ensemble.weights,
            "step_s": step_s,
            "windows": n,
            "backend": backend.name,
            "device": backend.device,
            "precision": backend.precision,
            "seconds": round(time.perf_counter() - t0, 2),
            "outputs": [TIMELINE_FILE, *([FIGURE_FILE] if figure else [])]
            + ([WINDOWS_DIR] if export_windows else []),
        }
        with atomic_path(out_dir / SUMMARY_FILE) as tmp:
            tmp.write_text(json.dumps(summary, indent=2))
        top = timeline["top_class"].value_counts()
        print(
            f"{n} windows of {rec.path.name} ({rec.duration_s / 3600:.2f} h) -> {out_dir}: "
            f"{len(members)} member(s), {backend.name} on {backend.device} {backend.precision}, "
            f"{summary['seconds']:.1f} s; top classes "
            + ", ".join(f"{k} {v}" for k, v in top.items())
        )
        return timeline


def _timeline(rec: EEGRecording, starts: np.ndarray, probs: np.ndarray) -> pd.DataFrame:
    start_s = starts / SAMPLE_RATE
    end_s = start_s + WINDOW_SAMPLES / SAMPLE_RATE
    frame = pd.DataFrame(
        {"window": np.arange(len(starts)), "start_s": start_s, "end_s": end_s,
         "centre_s": (start_s + end_s) / 2}
    )  # fmt: skip
    wall_start, wall_end = _wall_clock(rec.start_time, start_s), _wall_clock(rec.start_time, end_s)
    if wall_start is not None:
        frame["start_time"], frame["end_time"] = wall_start, wall_end
    for i, c in enumerate(CLASSES):
        frame[c] = probs[:, i]
    top = probs.argmax(axis=1)
    frame["top_class"] = np.asarray(CONSENSUS_NAMES)[top]
    frame["top_prob"] = probs[np.arange(len(top)), top]
    frame["interpolated"] = " ".join(rec.interpolated)
    return frame


def _export_tables(folder: Path, timeline: pd.DataFrame) -> None:
    ids = timeline["window"].to_numpy(np.int64)
    test = pd.DataFrame({"spectrogram_id": ids, "eeg_id": ids, "patient_id": 0})
    write_csv(test, folder / "test.csv")
    keep = ["window", "start_s", "end_s", "centre_s"] + [
        c for c in ("start_time", "end_time") if c in timeline
    ]
    write_csv(timeline[keep].rename(columns={"window": "eeg_id"}), folder / "windows.csv")
