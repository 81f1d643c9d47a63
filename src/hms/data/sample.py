"""One labelled window of an HMS-layout folder, raw, and its model inputs (the sample figure's
data, ``hms.report.sample_figure``)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from hms.constants import (
    SAMPLE_RATE,
    SPEC_WINDOW_ROWS,
    VOTE_COLUMNS,
    WINDOW_SAMPLES,
    WINDOW_SECONDS,
)
from hms.data.dataset import model_input
from hms.data.io import HMSLayout, read_eeg, read_spectrogram
from hms.data.preprocess import RecordingSettings, WindowSettings, filtered_as_stored
from hms.data.spectrogram import kaggle_spectrogram, window_row_times
from hms.errors import HMSDataError


def load_sample(data_dir: str | Path, eeg_id: int | None = None, sub_id: int | None = None) -> dict:
    """One labelled window of an HMS-layout folder, read through the training code path.

    A train ``eeg_id`` gives its label row ``eeg_sub_id`` (default: the middle one) and that
    row's votes; a test ``eeg_id`` gives its 50-s EEG (and the answers when the folder has
    ``test_answers.csv``). ``eeg_id=None``: the train EEG whose row has the most votes.
    Returns the raw referential window (µV), the whole recording, the 10-min spectrogram rows and
    the votes.
    """
    layout = HMSLayout(data_dir)
    if not layout.root.is_dir():
        raise HMSDataError(layout.root, "data folder not found")
    split, row = None, None
    if layout.csv("train").is_file():
        train = layout.read_csv("train")
        if eeg_id is None:
            if train.empty:
                raise HMSDataError(
                    layout.csv("train"), "has no label rows: choose a recording with eeg_id=N"
                )
            n = train[list(VOTE_COLUMNS)].sum(axis=1)
            eeg_id = int(train.loc[n.idxmax(), "eeg_id"])
        rows = train[train["eeg_id"] == int(eeg_id)].sort_values("eeg_sub_id")
        if len(rows):
            split = "train"
            if sub_id is None:
                row = rows.iloc[len(rows) // 2]
            else:
                match = rows[rows["eeg_sub_id"] == int(sub_id)]
                if not len(match):
                    raise HMSDataError(
                        layout.csv("train"),
                        f"eeg_id {eeg_id} has no eeg_sub_id {sub_id} "
                        f"(it has {rows['eeg_sub_id'].tolist()})",
                    )
                row = match.iloc[0]
    if split is None and eeg_id is not None and layout.csv("test").is_file():
        test = layout.read_csv("test")
        rows = test[test["eeg_id"] == int(eeg_id)]
        if len(rows):
            split, row = "test", rows.iloc[0]
    if split is None and eeg_id is None:
        raise HMSDataError(layout.root, "no train.csv with label rows: choose eeg_id=N")
    if split is None:
        raise HMSDataError(layout.root, f"eeg_id {eeg_id} is in neither train.csv nor test.csv")
    eeg_path = layout.eeg(split, int(row["eeg_id"]))
    recording = read_eeg(eeg_path)
    eeg_offset = float(row.get("eeg_label_offset_seconds", 0.0))
    start = round(eeg_offset * SAMPLE_RATE)
    if len(recording) < start + WINDOW_SAMPLES:
        raise HMSDataError(eeg_path, f"too short for a 50-s window at {eeg_offset:g} s")
    spec_path = layout.spectrogram(split, int(row["spectrogram_id"]))
    spec_offset = float(row.get("spectrogram_label_offset_seconds", 0.0))
    n_rows = SPEC_WINDOW_ROWS
    if spec_path.is_file():
        times, values = read_spectrogram(spec_path)
        first = int(np.searchsorted(times, spec_offset))
        spec = np.full((n_rows, values.shape[1]), np.nan, np.float32)
        block = values[first : first + n_rows]
        spec[: len(block)] = block
        spec_source = f"{spec_path.name} from {spec_offset:g} s"
    else:
        t = window_row_times(eeg_offset + WINDOW_SECONDS / 2)[0]
        inside = (t >= 0) & (t < len(recording) / SAMPLE_RATE)
        spec = np.full((n_rows, 400), np.nan, np.float32)
        _, spec[inside] = kaggle_spectrogram(recording, t[inside])
        spec_source = "computed from the EEG (no spectrogram file)"
    votes = None
    if split == "train":
        votes = row[list(VOTE_COLUMNS)].to_numpy(np.float64)
    elif (layout.root / "test_answers.csv").is_file():
        answers = pd.read_csv(layout.root / "test_answers.csv")
        hit = answers[answers["eeg_id"] == int(row["eeg_id"])]
        if len(hit):
            votes = hit.iloc[0][list(VOTE_COLUMNS)].to_numpy(np.float64)
    return {
        "split": split,
        "eeg_id": int(row["eeg_id"]),
        "sub_id": int(row["eeg_sub_id"]) if "eeg_sub_id" in row else None,
        "eeg_path": eeg_path,
        "recording": recording,
        "start": start,
        "spec": spec,
        "spec_source": spec_source,
        "votes": votes,
    }


def sample_inputs(
    sample: dict,
    recording_settings: RecordingSettings | None = None,
    window_settings: WindowSettings | None = None,
) -> dict[str, np.ndarray]:
    """The model inputs (a batch of one) of a sample, made as the cache and ``CacheDataset``
    make them."""
    filtered = filtered_as_stored(sample["recording"], recording_settings)
    window = filtered[sample["start"] : sample["start"] + WINDOW_SAMPLES]
    spec = np.nan_to_num(sample["spec"], nan=0.0, posinf=0.0, neginf=0.0)
    return {k: v[None] for k, v in model_input(window, spec, window_settings).items()}
