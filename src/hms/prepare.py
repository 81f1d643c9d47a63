"""``python -m hms.prepare data_dir=DIR``: build the caches and the folds of an HMS folder once.

The work is ``hms.data.prepared.prepare``, which training also calls (it returns at once when
everything exists); this command prints what the caches and folds hold.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
from omegaconf import DictConfig, OmegaConf

from hms.cli import hydra_main
from hms.constants import SAMPLE_RATE
from hms.data.io import check_writable
from hms.data.prepared import prepare
from hms.data.preprocess import RecordingSettings
from hms.errors import HMSDataError, check_int

SPLITS = ("train", "test")


def check_arguments(cfg: DictConfig) -> tuple[str, ...]:
    """The command's arguments and its output folder, checked before anything is read or
    built; returns the splits."""
    splits = cfg.splits
    if not (OmegaConf.is_list(splits) and splits and all(s in SPLITS for s in splits)):
        raise HMSDataError(None, f"splits must be a non-empty list of {list(SPLITS)}, got {splits}")
    check_int("workers", cfg.workers, 1)
    check_int("data.folds.n_folds", cfg.data.folds.n_folds, 2)
    check_int("data.folds.seed", cfg.data.folds.seed, 0)
    if not Path(cfg.data_dir).is_dir():
        raise HMSDataError(cfg.data_dir, "data folder not found")
    check_writable(cfg.cache_dir, "cache folder", folder=True)
    return tuple(dict.fromkeys(splits))


@hydra_main("prepare")
def main(cfg: DictConfig) -> None:
    splits = check_arguments(cfg)
    prepared = prepare(
        cfg.data_dir,
        cfg.cache_dir,
        splits,
        RecordingSettings(**cfg.data.recording),
        n_folds=cfg.data.folds.n_folds,
        fold_seed=cfg.data.folds.seed,
        workers=cfg.workers,
        rebuild=cfg.rebuild,
    )
    for split in prepared.caches:
        cache = prepared.cache(split)
        m = cache.manifest
        bad = int((cache.eegs["n_bad_channels"] > 0).sum())
        flat = int((cache.eegs["n_flat_channels"] > 0).sum())
        print(
            f"{split}: {m['n_eegs']} EEGs ({m['eeg_samples'] / SAMPLE_RATE / 3600:.2f} h), "
            f"{m['n_spectrograms']} spectrograms, {m['n_samples']} samples, "
            f"{m['n_windows']} windows -> {prepared.caches[split]}"
        )
        print(f"  EEGs with NaN stretches: {bad}, with a flat channel: {flat}")
    if prepared.folds is not None:
        folds = pd.read_csv(prepared.folds)
        sizes = folds.groupby("fold")["patient_id"].nunique()
        per_fold = ", ".join(f"{f}: {n}" for f, n in sizes.items())
        print(f"folds: {prepared.folds} (patients per fold {per_fold})")


if __name__ == "__main__":
    main()
