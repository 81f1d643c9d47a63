"""Descriptive statistics of EEG data in the HMS layout, real or built-in, so that the two can be
set side by side (``python -m hms.synth.compare``).

A *unit* is one 50-s EEG window with the 50 s of Kaggle spectrogram rows around its centre:

- in a folder whose ``train.csv`` has label rows, each distinct labelled window (eeg_id and
  offset; its class is the row's ``expert_consensus``);
- otherwise every non-overlapping 50-s window of every EEG file, and every 25-row block of every
  spectrogram file (class ``unlabelled``).

Per unit, with hms's own montage and filters (``hms.data.preprocess``, the code training uses):

- ``delta`` / ``theta`` / ``alpha`` / ``beta``: share of the 0.5-20 Hz power of the spectrogram
  rows in 0.5-4, 4-8, 8-13 and 13-20 Hz, on the mean of the four regions of each row (median over
  the unit's complete rows); ``spec_power``: the summed power of that mean row (median);
  ``spec_nan``: the share of its values that are missing;
- ``amplitude_uv``: the standard deviation of each double-banana derivation after the 0.5-20 Hz
  band-pass, median over the 16; ``kurtosis``: their kurtosis (3 for a Gaussian), median;
  ``neighbour_corr``: the correlation of consecutive derivations of a chain (12 pairs), median;
- ``eeg_nan``: the share of missing samples of the 19 scalp channels in the raw window;
  ``flat_channels``: the share of scalp channels whose raw window spans < 0.5 µV.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq

from hms.constants import (
    SAMPLE_RATE,
    SCALP_CHANNELS,
    SPEC_EEG_LAG,
    SPEC_FREQS,
    SPEC_REGIONS,
    SPEC_ROW_SECONDS,
    WINDOW_SAMPLES,
    WINDOW_SECONDS,
)
from hms.data.io import HMSLayout, read_eeg, read_spectrogram
from hms.data.montage import apply_montage
from hms.data.preprocess import RecordingSettings, preprocess_recording
from hms.data.signal import FLAT_UV
from hms.errors import HMSDataError

BANDS: dict[str, tuple[float, float]] = {
    "delta": (0.5, 4.0),
    "theta": (4.0, 8.0),
    "alpha": (8.0, 13.0),
    "beta": (13.0, 20.0),
}
SPEC_STATS: tuple[str, ...] = (*BANDS, "spec_power", "spec_nan")
EEG_STATS: tuple[str, ...] = (
    "amplitude_uv",
    "kurtosis",
    "neighbour_corr",
    "eeg_nan",
    "flat_channels",
)
STATS: tuple[str, ...] = (*SPEC_STATS, *EEG_STATS)
UNLABELLED = "unlabelled"
UNIT_ROWS = WINDOW_SECONDS // SPEC_ROW_SECONDS  # 25 spectrogram rows: the 50 s of a window

_FREQS = np.asarray(SPEC_FREQS)
_BAND_MASKS = {
    name: np.greater_equal(_FREQS, lo) & np.less(_FREQS, hi) for name, (lo, hi) in BANDS.items()
}
_SCALP = np.arange(len(SCALP_CHANNELS))


# --------------------------------------------------------------------------- one unit


def spectrogram_stats(values: np.ndarray) -> dict[str, float]:
    """Statistics of Kaggle spectrogram rows ``(rows, 400)``; NaN where no row is complete."""
    values = np.asarray(values, dtype=np.float64)
    out = {"spec_nan": float(np.isnan(values).mean()) if values.size else float("nan")}
    mean_row = values.reshape(len(values), len(SPEC_REGIONS), len(SPEC_FREQS)).mean(axis=1)
    complete = mean_row[np.isfinite(mean_row).all(axis=1)]
    total = complete.sum(axis=1)
    complete, total = complete[total > 0], total[total > 0]
    for name, mask in _BAND_MASKS.items():
        share = complete[:, mask].sum(axis=1) / total
        out[name] = float(np.median(share)) if len(share) else float("nan")
    out["spec_power"] = float(np.median(total)) if len(total) else float("nan")
    return out


def eeg_stats(raw: np.ndarray, filtered: np.ndarray) -> dict[str, float]:
    """Statistics of one window: ``raw`` referential µV (time, 20) as read (may hold NaN) and the
    same window of the recording after ``preprocess_recording`` (finite)."""
    scalp = raw[:, _SCALP]
    span = np.nanmax(scalp, axis=0) - np.nanmin(scalp, axis=0) if np.isfinite(scalp).any() else None
    out = {
        "eeg_nan": float(np.isnan(scalp).mean()),
        "flat_channels": float(np.mean(~(span >= FLAT_UV))) if span is not None else 1.0,
    }
    bip = apply_montage(np.asarray(filtered, dtype=np.float64)).T  # (16, time), clipped as trained
    centred = bip - bip.mean(axis=1, keepdims=True)
    sd = np.sqrt((centred**2).mean(axis=1))
    out["amplitude_uv"] = float(np.median(sd))
    live = sd > 1e-6
    kurt = (centred[live] ** 4).mean(axis=1) / sd[live] ** 4
    out["kurtosis"] = float(np.median(kurt)) if live.any() else float("nan")
    corrs = []
    for chain in range(4):  # derivations 4c .. 4c+3 form one chain, anterior to posterior
        for j in range(4 * chain, 4 * chain + 3):
            if live[j] and live[j + 1]:
                corrs.append((centred[j] * centred[j + 1]).mean() / (sd[j] * sd[j + 1]))
    out["neighbour_corr"] = float(np.median(corrs)) if corrs else float("nan")
    return out


# --------------------------------------------------------------------------- a folder


@dataclass(frozen=True)
class Unit:
    split: str
    cls: str
    eeg_id: int | None
    eeg_start_s: float | None
    spectrogram_id: int | None
    spec_start_s: float | None  # first second of the unit's 50 s of spectrogram rows


def _labelled_units(layout: HMSLayout, train: pd.DataFrame) -> list[Unit]:
    rows = train.drop_duplicates(["eeg_id", "eeg_label_offset_seconds"])
    return [
        Unit(
            "train",
            str(r.expert_consensus),
            int(r.eeg_id),
            float(r.eeg_label_offset_seconds),
            int(r.spectrogram_id),
            float(r.spectrogram_label_offset_seconds) + SPEC_EEG_LAG,
        )
        for r in rows.itertuples(index=False)
    ]


def _num_rows(path: Path) -> int:
    try:
        return pq.ParquetFile(path).metadata.num_rows
    except Exception as exc:  # any reader failure: a bad file
        raise HMSDataError(path, f"cannot read parquet: {exc}") from exc


def _file_units(layout: HMSLayout, split: str) -> list[Unit]:
    """Every non-overlapping 50-s window of every EEG file of ``split``, and every 50 s of rows of
    every spectrogram file (its rows are 2 s apart, the first centred at second 1)."""
    units = []
    for path in sorted((layout.root / f"{split}_eegs").glob("*.parquet")):
        for k in range(_num_rows(path) // WINDOW_SAMPLES):
            units.append(Unit(split, UNLABELLED, int(path.stem), k * WINDOW_SECONDS, None, None))
    for path in sorted((layout.root / f"{split}_spectrograms").glob("*.parquet")):
        for k in range(_num_rows(path) // UNIT_ROWS):
            units.append(Unit(split, UNLABELLED, None, None, int(path.stem), k * WINDOW_SECONDS))
    return units


def _check_stem(path: Path) -> None:
    if not path.stem.isdigit():
        raise HMSDataError(path, "file name is not an integer id (<id>.parquet)")


def find_units(root: str | Path) -> list[Unit]:
    """The units of an HMS-layout folder (see the module doc). Labelled windows where
    ``train.csv`` has rows; every file's windows otherwise (and for the test split)."""
    layout = HMSLayout(root)
    if not layout.root.is_dir():
        raise HMSDataError(layout.root, "not a folder")
    for folder in ("train_eegs", "train_spectrograms", "test_eegs", "test_spectrograms"):
        for path in (layout.root / folder).glob("*.parquet"):
            _check_stem(path)
    units: list[Unit] = []
    train = layout.read_csv("train") if layout.csv("train").is_file() else None
    if train is not None and len(train):
        units += _labelled_units(layout, train)
    else:
        units += _file_units(layout, "train")
    units += _file_units(layout, "test")
    if not units:
        raise HMSDataError(
            layout.root, "no EEG or spectrogram files in train_eegs/, train_spectrograms/, "
            "test_eegs/ or test_spectrograms/"
        )  # fmt: skip
    return units


class _Reader:
    """Reads (and preprocesses) each file once while the units that use it follow each other:
    units arrive sorted by file, and only the last few files stay in memory."""

    KEEP = 4

    def __init__(self, layout: HMSLayout, settings: RecordingSettings) -> None:
        self.layout, self.settings = layout, settings
        self._files: dict[tuple[str, str, int], tuple[np.ndarray, np.ndarray]] = {}

    def _get(self, key: tuple[str, str, int], load) -> tuple[np.ndarray, np.ndarray]:
        if key not in self._files:
            if len(self._files) >= self.KEEP:
                self._files.pop(next(iter(self._files)))
            self._files[key] = load()
        return self._files[key]

    def eeg(self, split: str, eeg_id: int) -> tuple[np.ndarray, np.ndarray]:
        def load():
            raw = read_eeg(self.layout.eeg(split, eeg_id))
            return raw, preprocess_recording(raw, self.settings)[0]

        return self._get(("eeg", split, eeg_id), load)

    def spectrogram(self, split: str, spectrogram_id: int) -> tuple[np.ndarray, np.ndarray]:
        path = self.layout.spectrogram(split, spectrogram_id)
        return self._get(("spec", split, spectrogram_id), lambda: read_spectrogram(path))


def _unit_stats(reader: _Reader, unit: Unit) -> dict[str, float]:
    out = dict.fromkeys(STATS, float("nan"))
    if unit.eeg_id is not None:
        raw, filtered = reader.eeg(unit.split, unit.eeg_id)
        start = round(unit.eeg_start_s * SAMPLE_RATE)
        if start + WINDOW_SAMPLES > len(raw):  # a label offset past the end of its recording
            raise HMSDataError(
                reader.layout.eeg(unit.split, unit.eeg_id),
                f"EEG has {len(raw)} samples; the window at {unit.eeg_start_s:g} s needs "
                f"{start + WINDOW_SAMPLES}",
            )
        window = slice(start, start + WINDOW_SAMPLES)
        out.update(eeg_stats(raw[window], filtered[window]))
    if unit.spectrogram_id is not None:
        times, values = reader.spectrogram(unit.split, unit.spectrogram_id)
        lo = unit.spec_start_s
        rows = (times >= lo) & (times < lo + WINDOW_SECONDS)
        out.update(spectrogram_stats(values[rows]))
    return out


def describe_folder(
    root: str | Path,
    max_units: int | None = 2000,
    seed: int = 0,
    settings: RecordingSettings | None = None,
) -> pd.DataFrame:
    """One row per unit (at most ``max_units``, drawn at random with ``seed``): split, class,
    eeg_id, spectrogram_id and the statistics of ``STATS``."""
    layout = HMSLayout(root)
    units = find_units(root)
    if max_units is not None and len(units) > max_units:
        keep = np.random.default_rng(seed).choice(len(units), size=max_units, replace=False)
        units = [units[i] for i in np.sort(keep)]
    units.sort(
        key=lambda u: (
            u.split,
            -1 if u.spectrogram_id is None else u.spectrogram_id,
            -1 if u.eeg_id is None else u.eeg_id,
        )
    )
    reader = _Reader(layout, settings or RecordingSettings())
    rows = []
    for unit in units:
        rows.append(
            {
                "split": unit.split,
                "class": unit.cls,
                "eeg_id": unit.eeg_id,
                "spectrogram_id": unit.spectrogram_id,
                **_unit_stats(reader, unit),
            }
        )
    frame = pd.DataFrame(rows)
    return frame.astype({"eeg_id": "Int64", "spectrogram_id": "Int64"})


def iter_groups(frame: pd.DataFrame) -> Iterator[tuple[str, pd.DataFrame]]:
    """("all", every unit) and then one group per class present, in a stable order."""
    yield "all", frame
    for cls in sorted(frame["class"].unique(), key=lambda c: (c == UNLABELLED, c)):
        if frame["class"].nunique() > 1 or cls != UNLABELLED:
            yield cls, frame[frame["class"] == cls]


def summarise(frames: dict[str, pd.DataFrame]) -> pd.DataFrame:
    """Median and inter-quartile range of each statistic, per dataset and group.

    Columns: dataset, group, statistic, units (non-missing), q25, median, q75."""
    rows = []
    for dataset, frame in frames.items():
        for group, part in iter_groups(frame):
            for stat in STATS:
                values = part[stat].dropna().to_numpy()
                q25, med, q75 = (
                    np.quantile(values, [0.25, 0.5, 0.75]) if len(values) else [np.nan] * 3
                )
                rows.append(
                    {
                        "dataset": dataset,
                        "group": group,
                        "statistic": stat,
                        "units": len(values),
                        "q25": float(q25),
                        "median": float(med),
                        "q75": float(q75),
                    }
                )
    return pd.DataFrame(rows)
