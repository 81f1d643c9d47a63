"""A torch ``Dataset`` over a prepared cache: one sample = its views as arrays.

Each item is a dict of tensors: ``eeg`` (bipolar channels, 10,000) from ``window_to_bipolar``,
``spec`` (300, 400) Kaggle spectrogram rows, ``target`` (6,) vote distribution and ``n_votes``
(test caches have no targets: zeros). Training draws one of a sample's windows at random each time
it is read; evaluation reads a fixed one, so validation scores do not move between epochs.
"""

from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import Dataset

from hms.data.cache import HMSCache
from hms.data.labels import TARGET_COLUMNS
from hms.data.preprocess import WindowSettings, window_to_bipolar


class CacheDataset(Dataset):
    def __init__(
        self,
        cache: HMSCache,
        indices: np.ndarray | None = None,
        window: WindowSettings | None = None,
        random_window: bool = False,
        seed: int = 0,
    ) -> None:
        self.cache = cache
        self.indices = np.arange(len(cache)) if indices is None else np.asarray(indices, np.int64)
        self.window = window or WindowSettings()
        self.random_window = random_window
        self.seed = seed
        samples = cache.samples
        if all(c in samples.columns for c in TARGET_COLUMNS):
            self.targets = np.array(samples[list(TARGET_COLUMNS)], dtype=np.float32)
            self.n_votes = np.array(samples["n_votes"], dtype=np.float32)
        else:
            self.targets = np.zeros((len(samples), len(TARGET_COLUMNS)), np.float32)
            self.n_votes = np.zeros(len(samples), np.float32)
        self._rng: np.random.Generator | None = None

    def __len__(self) -> int:
        return len(self.indices)

    def _pick(self, sample: int) -> int:
        n = int(self.cache.n_windows[sample])
        if self.random_window and n > 1:
            if self._rng is None:  # one stream per worker process
                info = torch.utils.data.get_worker_info()
                self._rng = np.random.default_rng([self.seed, info.id if info else 0])
            return self.cache.window_index(sample, int(self._rng.integers(n)))
        return self.cache.window_index(sample, n // 2)  # the middle window: fixed and central

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        sample = int(self.indices[i])
        w = self._pick(sample)
        eeg = window_to_bipolar(self.cache.eeg_window(w), self.window)
        return {
            "eeg": torch.from_numpy(eeg),
            "spec": torch.from_numpy(self.cache.spec_window(w)),
            "target": torch.from_numpy(self.targets[sample]),
            "n_votes": torch.tensor(self.n_votes[sample]),
            "index": torch.tensor(sample),
        }
