"""The interface every hms network meets, declared once: training, export, the report, the scripts
and the tests ask a network through it and never probe it for attributes.

A network (``HMSNet``) maps a batch dict to six logits. It declares

- ``inputs``: the batch keys it reads, among ``"eeg"`` (B, channels, 10000) derivations of its
  montage and ``"spec"`` (B, 300, 400) Kaggle spectrogram rows;
- ``montage``: the name of the montage its ``eeg`` is in (``hms.data.montage``), which sets the
  number of channels and the left/right mirror of the test-time flip and the flip augmentation;
- ``encode(batch)`` and ``body(x)``: ``forward`` is ``body(encode(batch))``. ``encode`` is what
  turns the inputs into the tensor the learned part reads (the spectrogram image of an image
  model, the scaled signal of a 1-D model, the features of the feature baseline); ``body`` is the
  rest. Profiling and benchmarks time the two apart, and ``example_batch`` gives inputs of the
  right shapes for export and tests;
- ``continuous``: False for a network whose ``body`` jumps with its input (the feature
  baseline's trees: a feature a rounding error away can fall on the other side of a split). An
  export then checks ``encode`` and ``body`` apart (``hms.onnx_export``), since the whole can
  differ from its export by a branch taken differently;
- optional hooks: ``needs_fitting`` and ``fit_normalization`` (statistics learned from the
  training fold before training, e.g. dataset-wide spectrogram normalisation), ``image``
  (the picture the network looks at, drawn by the sample figure), ``pretrainable_backbone``
  (the timm model that self-supervised pretraining trains on ``image``, ``hms.pretraining``)
  and ``tree_feature_counts`` (the tree tables a checkpoint sizes, and the features they read:
  the checkpoint checks of ``hms.backends.pytorch``).

``OnePassNet`` is the other kind of member: fitted once on features of the training windows
(``collect`` then ``fit``, with at most ``max_windows`` windows per sample) instead of by
gradient steps; ``hms.training`` runs it without a Trainer and without a second stage.

A new family is a subclass in its own file under ``hms.models`` (only classes defined in that
package are built from configs and checkpoints: ``hms.models.module.net_class_from``) and a file
in ``conf/model/``; the tests run over every ``conf/model/*.yaml``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, ClassVar

import numpy as np
import torch
from torch import Tensor, nn

from hms.constants import SPEC_WINDOW_ROWS, WINDOW_SAMPLES
from hms.data.montage import DEFAULT_MONTAGE, Montage, get_montage

INPUT_KEYS = ("eeg", "spec")
SPEC_COLUMNS = 400


class HMSNet(nn.Module):
    """Base class of hms networks: ``batch -> (B, 6) logits`` (see the module docstring)."""

    inputs: ClassVar[tuple[str, ...]] = ("eeg",)
    one_pass: ClassVar[bool] = False
    continuous: ClassVar[bool] = True

    def __init__(self, montage: str = DEFAULT_MONTAGE) -> None:
        super().__init__()
        self.montage = get_montage(montage).name

    @property
    def montage_spec(self) -> Montage:
        return get_montage(self.montage)

    @property
    def n_channels(self) -> int:
        """Channels of the ``eeg`` input: the montage's."""
        return self.montage_spec.n_channels

    def check_eeg(self, eeg: Tensor) -> None:
        """A clear error for an ``eeg`` input of another montage's channel count."""
        if eeg.shape[1] != self.n_channels:
            raise ValueError(
                f"expected {self.n_channels} channels of montage {self.montage!r}, got "
                f"{eeg.shape[1]}"
            )

    def encode(self, batch: Mapping[str, Tensor]) -> Tensor:
        """The inputs made into what the learned part reads."""
        raise NotImplementedError

    def body(self, x: Tensor) -> Tensor:
        """``encode``'s output -> (B, 6) logits."""
        raise NotImplementedError

    def forward(self, batch: Mapping[str, Tensor]) -> Tensor:
        return self.body(self.encode(batch))

    # ------------------------------------------------------------------ optional hooks

    @property
    def needs_fitting(self) -> bool:
        """True when ``fit_normalization`` must see training batches before training."""
        return False

    def fit_normalization(self, batches: Iterable[Mapping[str, Tensor]]) -> None:
        """Learn statistics of the training fold (a no-op unless ``needs_fitting``)."""

    def image(self, batch: Mapping[str, Tensor]) -> Tensor | None:
        """The picture the network looks at (B, C, H, W), or None for a network of no image."""
        return None

    def pretrainable_backbone(self) -> nn.Module | None:
        """The part that self-supervised pretraining trains and saves: a timm model whose
        ``forward_features`` reads ``image(batch)`` and gives (B, C, H, W) maps, and whose state
        dict (less its classifier) ``pretrained_file`` loads. None: this network cannot be
        pretrained (the default)."""
        return None

    def tree_feature_counts(self) -> dict[str, int]:
        """Each tree table of the network (its submodule's name) and how many features its
        splits may read; empty for a network of no trees (the default)."""
        return {}

    # ------------------------------------------------------------------ inputs

    def example_batch(self, batch_size: int = 2, seed: int = 0) -> dict[str, Tensor]:
        """Random inputs of the shapes this network reads, on its device: EEG-like derivations
        (about 30 µV) and Kaggle-like spectrogram power (positive, with some zeros)."""
        gen = torch.Generator().manual_seed(seed)
        device = next(iter(self.buffers()), next(iter(self.parameters()), None))
        device = device.device if device is not None else torch.device("cpu")
        batch: dict[str, Tensor] = {}
        if "eeg" in self.inputs:
            eeg = 30 * torch.randn(batch_size, self.n_channels, WINDOW_SAMPLES, generator=gen)
            batch["eeg"] = eeg.to(device)
        if "spec" in self.inputs:
            spec = torch.rand(batch_size, SPEC_WINDOW_ROWS, SPEC_COLUMNS, generator=gen) * 10
            spec[:, :5] = 0.0  # rows outside a recording are zero
            batch["spec"] = spec.to(device)
        return batch


class OnePassNet(HMSNet):
    """A member fitted once on the training windows (the feature baseline)."""

    one_pass: ClassVar[bool] = True
    max_windows: int = 1

    def collect(self, batches: Iterable[Mapping[str, Tensor]]) -> dict[str, np.ndarray]:
        """What ``fit`` needs of every training window (features, sample index, targets)."""
        raise NotImplementedError

    def fit(self, data: dict[str, np.ndarray], groups: Mapping[int, Any]) -> dict[str, Any]:
        """Fit on ``collect``'s output (``groups``: sample index -> patient); returns a report."""
        raise NotImplementedError
