"""``python -m hms.prepare data_dir=DIR``: build the caches and the folds of an HMS folder once.

The work is ``hms.data.prepared.prepare``, which training also calls (it returns at once when
everything exists); this command prints what the caches and folds hold.
"""

from __future__ import annotations

import pandas as pd
from omegaconf import DictConfig

from hms.cli import hydra_main
from hms.constants import SAMPLE_RATE
from hms.data.prepared import prepare
from hms.data.preprocess import RecordingSettings


@hydra_main("prepare")
def main(cfg: DictConfig) -> None:
    prepared = prepare(
        cfg.data_dir,
        cfg.cache_dir,
        tuple(cfg.splits),
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
