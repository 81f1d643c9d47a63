"""``python -m hms.prepare data_dir=DIR``: build the caches and the folds of an HMS folder once.

``prepare`` is also what the training and inference code call: it returns at once when the cache
for these settings and inputs already exists.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pandas as pd
from omegaconf import DictConfig

from hms.cli import hydra_main
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


def settings_from_config(recording: DictConfig) -> RecordingSettings:
    return RecordingSettings(**{k: recording[k] for k in recording})


@hydra_main("prepare")
def main(cfg: DictConfig) -> None:
    prepared = prepare(
        cfg.data_dir,
        cfg.cache_dir,
        tuple(cfg.splits),
        settings_from_config(cfg.data.recording),
        n_folds=cfg.data.folds.n_folds,
        fold_seed=cfg.data.folds.seed,
        workers=cfg.workers,
        rebuild=cfg.rebuild,
    )
    for split, path in prepared.caches.items():
        cache = HMSCache(path)
        m = cache.manifest
        bad = int((cache.eegs["n_bad_channels"] > 0).sum())
        flat = int((cache.eegs["n_flat_channels"] > 0).sum())
        print(
            f"{split}: {m['n_eegs']} EEGs ({m['eeg_samples'] / 200 / 3600:.2f} h), "
            f"{m['n_spectrograms']} spectrograms, {m['n_samples']} samples, "
            f"{m['n_windows']} windows -> {path}"
        )
        print(f"  EEGs with NaN stretches: {bad}, with a flat channel: {flat}")
    if prepared.folds is not None:
        folds = pd.read_csv(prepared.folds)
        sizes = folds.groupby("fold")["patient_id"].nunique()
        per_fold = ", ".join(f"{f}: {n}" for f, n in sizes.items())
        print(f"folds: {prepared.folds} (patients per fold {per_fold})")


if __name__ == "__main__":
    main()
