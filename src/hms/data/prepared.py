"""The prepared data of an HMS folder: a cache per split and the folds of train, built once.

``prepare`` is what the training code (``hms.data.datamodule``) and ``python -m hms.prepare``
call: it returns at once when the cache for these settings and inputs and the folds file
already exist. The folds file (``folds-k<n>-s<seed>-<sha1 of train.csv>.csv``, beside the
caches) holds each label row's patient-grouped fold.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from hms.data.cache import HMSCache, build_cache, file_sha1
from hms.data.io import HMSLayout, write_csv
from hms.data.labels import make_folds
from hms.data.preprocess import RecordingSettings
from hms.errors import HMSDataError


@dataclass(frozen=True)
class Prepared:
    """What ``prepare`` made: a cache per split, and the folds file of train."""

    caches: dict[str, Path]
    folds: Path | None

    def cache(self, split: str) -> HMSCache:
        if split not in self.caches:
            raise HMSDataError(None, f"no {split} cache was prepared (its csv is absent or empty)")
        return HMSCache(self.caches[split])


def folds_path(data_dir: str | Path, cache_dir: str | Path, n_folds: int, seed: int) -> Path:
    digest = file_sha1(HMSLayout(data_dir).csv("train"))[:12]
    return Path(cache_dir) / f"folds-k{n_folds}-s{seed}-{digest}.csv"


def load_folds(path: str | Path) -> pd.DataFrame:
    """The stored folds (label_id, eeg_id, patient_id, fold) written by ``prepare``."""
    path = Path(path)
    if not path.is_file():
        raise HMSDataError(path, "folds file not found; run python -m hms.prepare first")
    return pd.read_csv(path)


def _has_rows(csv: Path) -> bool:
    if not csv.is_file():
        return False
    with csv.open() as fh:
        return sum(1 for _ in zip(range(2), fh, strict=False)) > 1


def prepare(
    data_dir: str | Path,
    cache_dir: str | Path,
    splits: tuple[str, ...] = ("train", "test"),
    settings: RecordingSettings | None = None,
    n_folds: int = 5,
    fold_seed: int = 42,
    workers: int = 1,
    progress: bool = True,
    rebuild: bool = False,
    missing_spectrograms: str = "error",
) -> Prepared:
    """Build what is missing; splits whose csv is absent or has no rows are skipped.

    ``missing_spectrograms="compute"`` computes the rows of absent spectrogram files from the EEG
    instead of stopping (``hms.data.cache.build_cache``).
    """
    layout = HMSLayout(data_dir)
    if not layout.root.is_dir():
        raise HMSDataError(layout.root, "data folder not found")
    present = [s for s in splits if _has_rows(layout.csv(s))]
    if not present:
        raise HMSDataError(layout.root, f"no {' or '.join(f'{s}.csv' for s in splits)} with rows")
    caches = {
        split: build_cache(
            data_dir, cache_dir, split, settings, workers, progress, rebuild, missing_spectrograms
        )
        for split in present
    }
    folds = None
    if "train" in present:
        folds = folds_path(data_dir, cache_dir, n_folds, fold_seed)
        if rebuild or not folds.is_file():
            table = layout.read_csv("train")
            try:
                write_csv(make_folds(table, n_folds, fold_seed), folds)
            except ValueError as exc:
                raise HMSDataError(layout.csv("train"), str(exc)) from exc
    return Prepared(caches=caches, folds=folds)
