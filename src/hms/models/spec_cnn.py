"""2-D CNN on spectrogram images: EEG spectrograms and/or the Kaggle spectrograms, timm backbone.

One class covers the seed's image models: ``views=["eeg"]`` is the EfficientNet-B0 on EEG
spectrograms; ``views=["kaggle", "eeg"]`` with ``map_size=[128, 256]``, ``layout="stack"`` and
``combine="width"`` is the "multispec" model: the four Kaggle regions stacked on the left half and
the four EEG chains on the right half of a 512x512 image. Every argument is a primitive, so a
LightningModule can save them as hyperparameters and rebuild the model from a checkpoint.

Pipeline per view: maps (B, M, H, W) -> resize to ``map_size`` -> ``Normalize`` -> (training)
``SpecMasking`` -> ``arrange(layout)``; then the views are joined (``combine``), optionally
resized to ``image_size``, a 1-channel image is repeated to ``in_chans``, and the backbone runs.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from hms.constants import N_CLASSES
from hms.data.montage import montage_name
from hms.models.base import HMSNet
from hms.models.imagenet import create_model as create_backbone
from hms.models.pooling import centre_slice
from hms.transforms.augment import SpecMasking
from hms.transforms.spectrogram import (
    EEGSpectrogram,
    KaggleSpectrogramImage,
    Normalize,
    arrange,
    check_layout,
)

VIEW_INPUT = {"eeg": "eeg", "kaggle": "spec"}  # view name -> batch key it reads
COMBINE_DIM = {"width": -1, "height": -2, "channels": 1}


class SpecCNN(HMSNet):
    """Spectrogram image(s) -> timm backbone -> 6 logits.

    ``montage``: that of the ``eeg`` input (``hms.data.montage``); None, in checkpoints written
    before montages had names, is the double banana (with its midline chain when the EEG view
    draws the midline map).

    ``pretrained=True`` starts from ImageNet weights: ``pretrained_file`` (a local file: offline
    Kaggle notebooks, ``hms.pretrain``'s output), else an installed weights package, else timm's
    hub (``hms.models.imagenet``); timm adapts the first convolution to ``in_chans`` (and drops
    the ImageNet classifier). ``pretrained_file`` is ignored when ``pretrained`` is false, so a
    checkpoint can be rebuilt without the file. ``eeg_spec`` / ``kaggle_spec`` are
    keyword arguments of ``EEGSpectrogram`` / ``KaggleSpectrogramImage`` (their ``layout`` is
    this model's). ``norm`` is a ``Normalize`` mode, applied per view; ``"dataset"`` needs
    ``fit_normalization`` on training batches before training. ``antialias``: a map resized down
    averages the pixels it merges instead of sampling two of them; the Kaggle rows are noisy
    periodograms, and 300 rows sampled down to 64 columns keep their noise and lose their mean.
    ``centre_pool`` (the EEG view alone): the head reads the backbone's features averaged over the
    whole map and over its central fifth of columns, where the labelled 10 s lie
    (``hms.models.pooling``), instead of timm's global pool alone.
    """

    def __init__(
        self,
        backbone: str = "efficientnet_b0",
        views: Sequence[str] = ("eeg",),
        layout: str = "stack",
        combine: str = "width",
        map_size: Sequence[int] | None = None,
        image_size: Sequence[int] | None = None,
        in_chans: int | None = None,
        pretrained: bool = False,
        pretrained_file: str | None = None,
        drop_rate: float = 0.2,
        drop_path_rate: float = 0.1,
        norm: str = "instance",
        eeg_spec: Mapping | None = None,
        kaggle_spec: Mapping | None = None,
        time_mask: int = 0,
        freq_mask: int = 0,
        n_masks: int = 1,
        channels_last: bool = False,
        antialias: bool = True,
        centre_pool: bool = False,
        montage: str | None = None,
    ) -> None:
        if montage is None:
            montage = montage_name(bool(dict(eeg_spec or {}).get("midline", False)))
        super().__init__(montage)
        self.views = list(views)
        self.antialias = antialias
        if (
            not self.views
            or set(self.views) - set(VIEW_INPUT)
            or len(set(self.views)) != len(self.views)
        ):
            raise ValueError(f"views must be distinct names among {list(VIEW_INPUT)}, got {views}")
        if combine not in COMBINE_DIM:
            raise ValueError(f"combine must be one of {list(COMBINE_DIM)}, got {combine!r}")
        if len(self.views) > 1 and map_size is None:
            raise ValueError("several views need a common map_size, e.g. [128, 256]")
        self.layout, self.combine = check_layout(layout), combine
        self.map_size = list(map_size) if map_size is not None else None
        self.image_size = list(image_size) if image_size is not None else None
        self.channels_last = channels_last
        if centre_pool and (self.views != ["eeg"] or layout == "tile"):
            raise ValueError(
                "centre_pool needs the EEG view alone with time along the width (layout stack "
                "or channels): it pools the columns of the labelled central 10 s"
            )
        self.centre_pool = centre_pool

        makers = {
            "eeg": lambda: EEGSpectrogram(
                **dict(eeg_spec or {}), layout=layout, montage=self.montage
            ),
            "kaggle": lambda: KaggleSpectrogramImage(**dict(kaggle_spec or {}), layout=layout),
        }
        self.spectrograms = nn.ModuleDict({v: makers[v]() for v in self.views})
        self.norms = nn.ModuleDict(
            {v: Normalize(norm, num_channels=self.spectrograms[v].n_maps) for v in self.views}
        )
        self.masking = SpecMasking(time_mask, freq_mask, n_masks)

        n_maps = [self.spectrograms[v].n_maps for v in self.views]
        per_view = n_maps if layout == "channels" else [1] * len(n_maps)
        if combine == "channels":
            self.image_chans = sum(per_view)
        elif len(set(per_view)) == 1:
            self.image_chans = per_view[0]
        else:
            raise ValueError(f"views with {n_maps} maps cannot be joined along the {combine}")
        self.in_chans = in_chans or self.image_chans
        if self.in_chans != self.image_chans and self.image_chans != 1:
            raise ValueError(f"the image has {self.image_chans} channels, not in_chans={in_chans}")

        self.backbone = create_backbone(
            backbone,
            pretrained=pretrained,
            pretrained_file=pretrained_file,
            in_chans=self.in_chans,
            num_classes=0 if centre_pool else N_CLASSES,
            drop_rate=drop_rate,
            drop_path_rate=drop_path_rate,
        )
        # A near-zero classifier starts every sample close to the uniform prediction (KL ~1.2 on
        # HMS votes) instead of the large random logits of a fresh head (KL 3+ from scratch),
        # which short from-scratch runs take epochs to unlearn; small rather than zero weights so
        # the backbone gets gradients from the first step. With ImageNet weights the head is new
        # too, so the same applies.
        if centre_pool:  # the head reads the pooled features of the whole map and of its centre
            self.head = nn.Sequential(
                nn.Dropout(drop_rate), nn.Linear(2 * self.backbone.num_features, N_CLASSES)
            )
        head = self.head[1] if centre_pool else self.backbone.get_classifier()
        if isinstance(head, nn.Linear):
            nn.init.normal_(head.weight, std=1e-3)
            nn.init.zeros_(head.bias)
        if channels_last:
            self.backbone.to(memory_format=torch.channels_last)

    @property
    def inputs(self) -> tuple[str, ...]:  # type: ignore[override]
        """The batch keys this model reads."""
        return tuple(VIEW_INPUT[v] for v in self.views)

    @property
    def needs_fitting(self) -> bool:
        return any(n.mode == "dataset" for n in self.norms.values())

    def raw_maps(self, batch: Mapping[str, Tensor], view: str) -> Tensor:
        """One view's maps before normalisation, resized to ``map_size``."""
        maps = self.spectrograms[view].maps(batch[VIEW_INPUT[view]])
        if self.map_size is not None and list(maps.shape[-2:]) != self.map_size:
            maps = F.interpolate(
                maps, self.map_size, mode="bilinear", align_corners=False, antialias=self.antialias
            )
        return maps

    def maps(self, batch: Mapping[str, Tensor]) -> dict[str, Tensor]:
        """Normalised (and, in training, masked) maps of each view."""
        return {v: self.masking(self.norms[v](self.raw_maps(batch, v))) for v in self.views}

    def image(self, batch: Mapping[str, Tensor]) -> Tensor:
        """The backbone's input (B, in_chans, H, W)."""
        parts = [arrange(m, self.layout) for m in self.maps(batch).values()]
        image = torch.cat(parts, dim=COMBINE_DIM[self.combine]) if len(parts) > 1 else parts[0]
        if self.image_size is not None and list(image.shape[-2:]) != self.image_size:
            image = F.interpolate(
                image,
                self.image_size,
                mode="bilinear",
                align_corners=False,
                antialias=self.antialias,
            )
        if self.in_chans != image.shape[1]:
            image = image.expand(-1, self.in_chans, -1, -1)
        if self.channels_last:
            image = image.contiguous(memory_format=torch.channels_last)
        return image

    def encode(self, batch: Mapping[str, Tensor]) -> Tensor:
        return self.image(batch)

    def pretrainable_backbone(self) -> nn.Module:
        return self.backbone

    def body(self, image: Tensor) -> Tensor:
        if not self.centre_pool:
            return self.backbone(image)
        f = self.backbone.forward_features(image)  # (B, C, H', W'), time on W'
        centre = f[..., centre_slice(f.shape[-1])]
        return self.head(torch.cat([f.mean(dim=(2, 3)), centre.mean(dim=(2, 3))], dim=1))

    @torch.no_grad()
    def fit_normalization(self, batches: Iterable[Mapping[str, Tensor]]) -> None:
        """Fits the dataset-mode statistics of every view in one pass over training batches."""
        device = next(self.parameters()).device
        norms = [self.norms[v] for v in self.views]
        for n in norms:
            n.reset_stats()
        for batch in batches:
            for view, n in zip(self.views, norms, strict=True):
                key = VIEW_INPUT[view]
                n.update_stats(self.raw_maps({key: batch[key].to(device)}, view))
        for n in norms:
            n.finish_stats()
