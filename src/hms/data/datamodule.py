"""``HMSDataModule``: the prepared train cache served as training and validation batches.

Reads from the cache only (``hms.data.prepared.prepare`` builds the train split's cache and folds
on first use; the test split is not training's business). The validation fold comes from the
stored folds file. Training draws a random window of each sample per epoch; validation uses a
fixed window. ``stage=2`` keeps only the high-agreement samples (``n_votes >= min_votes``, by
default ``hms.constants.HQ_VOTES``) for training, and ``targets`` can replace the vote
distributions (label refinement).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pytorch_lightning as pl
from torch.utils.data import DataLoader

from hms.constants import HQ_VOTES
from hms.data.cache import HMSCache
from hms.data.dataset import VIEWS, CacheDataset
from hms.data.prepared import Prepared, load_folds, prepare
from hms.data.preprocess import RecordingSettings, WindowSettings
from hms.errors import HMSDataError


class HMSDataModule(pl.LightningDataModule):
    def __init__(
        self,
        data_dir: str,
        cache_dir: str,
        fold: int = 0,
        recording: dict | None = None,
        window: dict | None = None,
        folds: dict | None = None,
        batch_size: int = 32,
        eval_batch_size: int | None = None,
        num_workers: int = 2,
        pin_memory: bool = False,
        min_votes: int = HQ_VOTES,
        prepare_workers: int = 2,
        seed: int = 0,
        views: Sequence[str] | None = None,
    ) -> None:
        super().__init__()
        self.views = tuple(views) if views else VIEWS  # what the model reads (hms.train sets it)
        self.data_dir = str(data_dir)
        self.cache_dir = str(cache_dir)
        self.fold = int(fold)
        self.recording = RecordingSettings(**(recording or {}))
        self.window = WindowSettings.from_dict(window)
        folds = folds or {}
        self.n_folds = int(folds.get("n_folds", 5))
        self.fold_seed = int(folds.get("seed", 42))
        self.batch_size = batch_size
        self.eval_batch_size = eval_batch_size or batch_size
        self.num_workers = num_workers
        self.pin_memory = pin_memory
        self.min_votes = min_votes
        self.prepare_workers = prepare_workers
        self.seed = seed
        self.stage = 1
        self.targets: np.ndarray | None = None  # refined targets, one row per train sample
        self.prepared: Prepared | None = None
        self.train_cache: HMSCache | None = None
        if self.n_folds < 2:
            raise HMSDataError(None, f"data.folds.n_folds must be at least 2, got {self.n_folds}")
        if not 0 <= self.fold < self.n_folds:
            raise HMSDataError(
                None,
                f"fold must be in 0..{self.n_folds - 1} (data.folds.n_folds={self.n_folds}), "
                f"got {self.fold}",
            )

    # ------------------------------------------------------------------ preparation

    def _prepare(self, progress: bool = True) -> Prepared:
        return prepare(
            self.data_dir,
            self.cache_dir,
            ("train",),
            self.recording,
            self.n_folds,
            self.fold_seed,
            workers=self.prepare_workers,
            progress=progress,
        )

    def prepare_data(self) -> None:
        self._prepare()

    def setup(self, stage: str | None = None) -> None:  # Lightning's fit/validate, not ours
        if self.train_cache is not None:
            return
        self.prepared = self._prepare(progress=False)  # raises without training rows
        self.train_cache = self.prepared.cache("train")
        folds = load_folds(self.prepared.folds)
        fold_of_label = dict(zip(folds["label_id"], folds["fold"], strict=True))
        cache = self.train_cache
        first_label = cache.windows["label_id"].to_numpy()[cache.window_start]
        self.sample_fold = np.array([fold_of_label[x] for x in first_label], dtype=np.int64)
        self.val_idx = np.flatnonzero(self.sample_fold == self.fold)
        self.train_all_idx = np.flatnonzero(self.sample_fold != self.fold)
        if len(self.val_idx) == 0 or len(self.train_all_idx) == 0:
            raise HMSDataError(self.prepared.folds, f"fold {self.fold} leaves a split empty")

    # ------------------------------------------------------------------ stages

    def set_stage(self, stage: int, targets: np.ndarray | None = None) -> None:
        """Stage 1 trains on all samples; stage 2 on those with ``n_votes >= min_votes``."""
        self.stage = int(stage)
        self.targets = targets

    @property
    def n_votes(self) -> np.ndarray:
        assert self.train_cache is not None
        return self.train_cache.samples["n_votes"].to_numpy()

    @property
    def train_idx(self) -> np.ndarray:
        if self.stage == 1:
            return self.train_all_idx
        keep = self.n_votes[self.train_all_idx] >= self.min_votes
        if not keep.any():
            raise HMSDataError(
                self.prepared.folds if self.prepared else None,
                f"stage 2: no training sample has >= {self.min_votes} votes",
            )
        return self.train_all_idx[keep]

    # ------------------------------------------------------------------ loaders

    def _loader(self, ds: CacheDataset, shuffle: bool, batch_size: int) -> DataLoader:
        return DataLoader(
            ds,
            batch_size=batch_size,
            shuffle=shuffle,
            drop_last=shuffle and len(ds) > batch_size,
            num_workers=self.num_workers,
            pin_memory=self.pin_memory,
            persistent_workers=self.num_workers > 0,
        )

    def train_dataset(self) -> CacheDataset:
        ds = CacheDataset(
            self.train_cache,
            self.train_idx,
            self.window,
            random_window=True,
            seed=self.seed,
            views=self.views,
        )
        if self.targets is not None:
            ds.targets = self.targets.astype(np.float32)
        return ds

    def fit_dataloader(self, max_windows: int) -> DataLoader:
        """Up to ``max_windows`` windows of every training sample, in order, without
        augmentation: the data of a member fitted in one pass (the feature baseline)."""
        ds = CacheDataset(
            self.train_cache, self.train_idx, self.window, max_windows=max_windows, views=self.views
        )
        if self.targets is not None:
            ds.targets = self.targets.astype(np.float32)
        return self._loader(ds, False, self.eval_batch_size)

    def statistics_dataloader(self) -> DataLoader:
        """The training samples in order (one window each, the training batch size), for
        statistics of the training fold such as a network's dataset normalisation."""
        return self._loader(self.train_dataset(), False, self.batch_size)

    @property
    def patient_of_sample(self) -> dict[int, int]:
        """Sample index of the train cache -> patient id."""
        assert self.train_cache is not None
        return dict(enumerate(self.train_cache.samples["patient_id"].to_numpy().tolist()))

    def val_dataset(self) -> CacheDataset:
        return CacheDataset(self.train_cache, self.val_idx, self.window, views=self.views)

    def train_dataloader(self) -> DataLoader:
        return self._loader(self.train_dataset(), True, self.batch_size)

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.val_dataset(), False, self.eval_batch_size)
