"""Datasets of model windows: over a prepared cache, or over a recording without one.

``model_input`` is the one place where a 50-s window becomes what a model reads; both datasets
(and the sample figure) go through it.

Items are dicts of numpy arrays, so the datasets need no torch: a ``torch.utils.data.DataLoader``
serves them to training (its default collation stacks them into tensors of the same dtypes), and
``batches`` stacks them for inference, with either backend (``hms.inference``).

``CacheDataset``: one sample = its views as arrays. Each item is a dict of arrays: ``eeg``
(bipolar channels, 10,000) from ``window_to_bipolar``, ``spec`` (300, 400) Kaggle spectrogram
rows, ``target`` (6,) vote distribution and ``n_votes``
(test caches have no targets: zeros); ``views`` limits the signals to those a model reads (a
model of the EEG alone need not copy 300 x 400 spectrogram rows per sample). Training draws one
of a sample's windows at random each time it is read; evaluation reads a fixed one, so
validation scores do not move between epochs. ``max_windows=k`` instead serves up to k evenly
spaced windows of every sample, each as its own item (members fitted in one pass over the data,
such as the feature baseline, use them all).

``RecordingWindows``: the windows of one filtered recording held in memory (``hms.annotation``
slides them along a clinical recording), items as ``CacheDataset``'s without targets.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator, Sequence
from typing import Protocol

import numpy as np

from hms.constants import WINDOW_SAMPLES
from hms.data.cache import HMSCache
from hms.data.labels import TARGET_COLUMNS
from hms.data.preprocess import WindowSettings, window_to_bipolar
from hms.errors import HMSDataError

VIEWS = ("eeg", "spec")  # the signals an item can hold


def model_input(
    eeg: np.ndarray | None, spec: np.ndarray | None, window: WindowSettings | None = None
) -> dict[str, np.ndarray]:
    """One window as a model reads it: ``eeg`` (the montage's channels, 10,000) float32 from the
    filtered referential window (10,000, 20) by ``window_to_bipolar``, and ``spec`` (300, 400)
    Kaggle spectrogram rows as given. A view given as None is left out."""
    item = {}
    if eeg is not None:
        item["eeg"] = window_to_bipolar(eeg, window)
    if spec is not None:
        item["spec"] = spec
    return item


class Windows(Protocol):
    """What ``batches`` reads: items (dicts of arrays with an ``index``) by position."""

    def __len__(self) -> int: ...

    def __getitem__(self, i: int) -> dict[str, np.ndarray]: ...


def stack_items(items: Sequence[dict[str, np.ndarray]], keys: Sequence[str] | None = None):
    """Items stacked per key (only ``keys`` and ``index`` when given)."""
    names = list(items[0]) if keys is None else [*keys, "index"]
    return {k: np.stack([item[k] for item in items]) for k in names}


def batches(
    dataset: Windows, batch_size: int, keys: Sequence[str] | None = None, num_workers: int = 0
) -> Iterator[dict[str, np.ndarray]]:
    """The dataset's items in order, ``batch_size`` at a time, stacked per key (only ``keys``
    and ``index`` when given): the batches of inference. ``num_workers`` > 0 reads them in
    that many processes, through torch's DataLoader (torch must be installed)."""
    if num_workers > 0:
        try:
            from torch.utils.data import DataLoader
        except ImportError:
            raise HMSDataError(
                None, "num_workers > 0 reads windows through torch's DataLoader, and torch is "
                "not installed here: give num_workers=0",
            ) from None  # fmt: skip
        yield from DataLoader(
            dataset, batch_size=batch_size, shuffle=False, num_workers=num_workers,
            collate_fn=functools.partial(stack_items, keys=keys),
        )  # fmt: skip
        return
    for start in range(0, len(dataset), batch_size):
        items = [dataset[i] for i in range(start, min(start + batch_size, len(dataset)))]
        yield stack_items(items, keys)


class CacheDataset:
    def __init__(
        self,
        cache: HMSCache,
        indices: np.ndarray | None = None,
        window: WindowSettings | None = None,
        random_window: bool = False,
        seed: int = 0,
        max_windows: int | None = None,
        views: Sequence[str] = VIEWS,
    ) -> None:
        self.cache = cache
        self.indices = np.arange(len(cache)) if indices is None else np.asarray(indices, np.int64)
        self.window = window or WindowSettings()
        self.random_window = random_window
        unknown = set(views) - set(VIEWS)
        if unknown or not views:
            raise ValueError(f"views must be a non-empty subset of {VIEWS}, got {list(views)}")
        self.views = tuple(views)
        self.seed = seed
        samples = cache.samples
        if all(c in samples.columns for c in TARGET_COLUMNS):
            self.targets = np.array(samples[list(TARGET_COLUMNS)], dtype=np.float32)
            self.n_votes = np.array(samples["n_votes"], dtype=np.float32)
        else:
            self.targets = np.zeros((len(samples), len(TARGET_COLUMNS)), np.float32)
            self.n_votes = np.zeros(len(samples), np.float32)
        self._rng: np.random.Generator | None = None
        self._windows: np.ndarray | None = None  # (item -> sample, window) with max_windows
        if max_windows is not None:
            if random_window or max_windows < 1:
                raise ValueError("max_windows needs random_window=False and a value >= 1")
            pairs = []
            for sample in self.indices:
                n = int(cache.n_windows[sample])
                ks = np.unique(np.linspace(0, n - 1, min(n, max_windows)).round().astype(int))
                pairs += [(sample, cache.window_index(int(sample), int(k))) for k in ks]
            self._windows = np.array(pairs, dtype=np.int64).reshape(-1, 2)

    def __len__(self) -> int:
        return len(self.indices) if self._windows is None else len(self._windows)

    def _pick(self, sample: int) -> int:
        n = int(self.cache.n_windows[sample])
        if self.random_window and n > 1:
            if self._rng is None:  # one stream per worker process (training: torch is there)
                import torch

                info = torch.utils.data.get_worker_info()
                self._rng = np.random.default_rng([self.seed, info.id if info else 0])
            return self.cache.window_index(sample, int(self._rng.integers(n)))
        return self.cache.window_index(sample, n // 2)  # the middle window: fixed and central

    def __getitem__(self, i: int) -> dict[str, np.ndarray]:
        if self._windows is not None:
            sample, w = (int(v) for v in self._windows[i])
        else:
            sample = int(self.indices[i])
            w = self._pick(sample)
        item = model_input(
            self.cache.eeg_window(w) if "eeg" in self.views else None,
            self.cache.spec_window(w) if "spec" in self.views else None,
            self.window,
        )
        item["target"] = self.targets[sample]
        item["n_votes"] = self.n_votes[sample]
        item["index"] = np.int64(sample)
        return item


class RecordingWindows:
    """The 50-s windows of a filtered recording: ``filtered`` (time, 20) holds the values a cache
    would (``hms.data.preprocess.filtered_as_stored``), ``starts`` each window's first sample in
    it. With ``spec_values``, window i also has the spectrogram rows
    ``spec_values[spec_index[i]]`` (300, 400). ``index`` is the window's position."""

    def __init__(
        self,
        filtered: np.ndarray,
        starts: np.ndarray,
        window: WindowSettings | None = None,
        spec_values: np.ndarray | None = None,
        spec_index: np.ndarray | None = None,
    ) -> None:
        self.filtered, self.starts, self.window = filtered, starts, window
        self.spec_values, self.spec_index = spec_values, spec_index

    def __len__(self) -> int:
        return len(self.starts)

    def __getitem__(self, i: int) -> dict[str, np.ndarray]:
        o = int(self.starts[i])
        spec = None if self.spec_values is None else self.spec_values[self.spec_index[i]]
        item = model_input(self.filtered[o : o + WINDOW_SAMPLES], spec, self.window)
        item["index"] = np.int64(i)
        return item
