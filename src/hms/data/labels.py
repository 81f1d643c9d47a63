"""Training targets and folds from ``train.csv``.

- Votes become a distribution per row; the total number of votes is kept (it says how much the
  target can be trusted, and selects the high-agreement rows of stage 2).
- Rows of one eeg_id with the same vote pattern are one annotation cut into sub-windows: they are
  merged into one *sample* whose windows (offsets into the EEG and the spectrogram) are kept, so
  training can draw a different window each epoch without counting the annotation many times.
- Folds: ``StratifiedGroupKFold`` by patient (no patient in two folds), stratified by the expert
  consensus, seeded. ``make_folds`` is the only place that computes them; ``hms.prepare`` stores
  the result and everything else reads the stored file.
"""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd

from hms.constants import CLASSES, VOTE_COLUMNS

TARGET_COLUMNS: tuple[str, ...] = tuple(f"target_{c}" for c in CLASSES)


def merge_samples(train: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Merge rows into samples: ``(samples, windows)``.

    ``samples`` has one row per (eeg_id, vote pattern): sample_id, eeg_id, patient_id,
    spectrogram_id (of its first window), n_votes, the six target_* columns, the consensus class
    index, the first row of its windows in ``windows`` and their count. ``windows`` has one row
    per label row: sample_id, label_id, spectrogram_id, eeg_offset_s, spec_offset_s, sorted by
    sample and offset.
    """
    votes = train[list(VOTE_COLUMNS)].to_numpy(dtype=np.int64)
    key = pd.DataFrame(votes, columns=list(VOTE_COLUMNS))
    key.insert(0, "eeg_id", train["eeg_id"].to_numpy())
    sample_id = key.groupby(list(key.columns), sort=True).ngroup().to_numpy()
    windows = pd.DataFrame(
        {
            "sample_id": sample_id,
            "label_id": train["label_id"].to_numpy(np.int64),
            "spectrogram_id": train["spectrogram_id"].to_numpy(np.int64),
            "eeg_offset_s": train["eeg_label_offset_seconds"].to_numpy(np.float64),
            "spec_offset_s": train["spectrogram_label_offset_seconds"].to_numpy(np.float64),
        }
    ).sort_values(["sample_id", "eeg_offset_s", "label_id"], kind="stable", ignore_index=True)
    first = windows.groupby("sample_id").head(1).set_index("sample_id")
    counts = windows.groupby("sample_id").size()
    starts = np.concatenate([[0], np.cumsum(counts.to_numpy())[:-1]])
    per_sample = train.assign(sample_id=sample_id).groupby("sample_id").first()
    sample_votes = per_sample[list(VOTE_COLUMNS)].to_numpy(dtype=np.float64)
    n_votes = sample_votes.sum(axis=1)
    samples = pd.DataFrame(
        {
            "sample_id": per_sample.index.to_numpy(np.int64),
            "eeg_id": per_sample["eeg_id"].to_numpy(np.int64),
            "patient_id": per_sample["patient_id"].to_numpy(np.int64),
            "spectrogram_id": first.loc[per_sample.index, "spectrogram_id"].to_numpy(np.int64),
            "n_votes": n_votes.astype(np.int64),
            "consensus": sample_votes.argmax(axis=1).astype(np.int64),
            "window_start": starts.astype(np.int64),
            "n_windows": counts.to_numpy(np.int64),
        }
    )
    for i, col in enumerate(TARGET_COLUMNS):
        samples[col] = sample_votes[:, i] / n_votes
    return samples, windows


def make_folds(train: pd.DataFrame, n_folds: int = 5, seed: int = 42) -> pd.DataFrame:
    """Assign every label row a fold: ``label_id, eeg_id, patient_id, fold``.

    Stratification uses the consensus of each merged sample (so that a long annotation does not
    weigh more than a short one) and groups by patient.
    """
    if n_folds < 2:
        raise ValueError(f"n_folds must be at least 2, got {n_folds}")
    samples, windows = merge_samples(train)
    n_patients = samples["patient_id"].nunique()
    if n_patients < n_folds:
        raise ValueError(f"{n_patients} patients cannot fill {n_folds} folds")
    from sklearn.model_selection import StratifiedGroupKFold  # folds only: not for inference

    splitter = StratifiedGroupKFold(n_splits=n_folds, shuffle=True, random_state=seed)
    sample_fold = np.full(len(samples), -1, dtype=np.int64)
    with warnings.catch_warnings():
        # A consensus rarer than the folds cannot be spread over all of them: the folds stay
        # patient-grouped and as stratified as they can be (scikit-learn's note is no news).
        warnings.filterwarnings("ignore", "The least populated class in y has only", UserWarning)
        splits = list(splitter.split(samples, samples["consensus"], groups=samples["patient_id"]))
    for fold, (_, val_idx) in enumerate(splits):
        sample_fold[val_idx] = fold
    fold_of_sample = pd.Series(sample_fold, index=samples["sample_id"].to_numpy())
    label_fold = windows.set_index("label_id")["sample_id"].map(fold_of_sample)
    folds = train[["label_id", "eeg_id", "patient_id"]].copy()
    folds["fold"] = folds["label_id"].map(label_fold).to_numpy(np.int64)
    return folds
