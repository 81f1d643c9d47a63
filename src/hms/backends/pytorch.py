"""The PyTorch backend of ``hms.inference``: weights folders of ``HMSModule`` checkpoints.

``TorchBackend`` resolves the device and precision, checks a checkpoint cheaply before any slow
work (``checkpoint_hparams``: tensors and plain data only, an ``HMSModule`` of the member the
ensemble names it under) and loads it (``load_member_checkpoint``: rebuilt offline, wandb kept
out, the test-time flip as trained or forced, the network's montage that of the member's
windows). A loaded fold (``TorchFold``) maps a batch of numpy arrays to the member's
probabilities with ``HMSModule.predict_proba`` (``hms.models.module.probabilities``), under
bf16 or fp16 autocast on a GPU when asked.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from hms.blend import ENSEMBLE_FILE
from hms.data.preprocess import WindowSettings
from hms.errors import HMSDataError
from hms.inference import PRECISIONS

if TYPE_CHECKING:
    from hms.inference import MemberInfo, WeightsFolder
    from hms.models.base import HMSNet
    from hms.models.module import HMSModule


@contextlib.contextmanager
def _wandb_hidden() -> Iterator[None]:
    """Make ``import wandb`` fail inside the block, unless wandb is already imported.

    ``timm.utils.summary`` runs ``try: import wandb`` when timm is imported; prediction needs no
    logger, so hiding wandb there keeps it out of the process (no import cost, nothing of
    wandb's to start). ``import wandb`` works again after the block.
    """
    if "wandb" in sys.modules:
        yield
        return
    sys.modules["wandb"] = None  # type: ignore[assignment]  # import raises ImportError
    try:
        yield
    finally:
        if sys.modules.get("wandb", ...) is None:
            del sys.modules["wandb"]


def module_class() -> type[HMSModule]:
    """``HMSModule``, imported (with timm) while wandb is hidden."""
    with _wandb_hidden():
        from hms.models.module import HMSModule
    return HMSModule


# --------------------------------------------------------------------------- device


def resolve_device(device: str = "auto") -> torch.device:
    """``"auto"``: the GPU when CUDA is available, else the CPU; otherwise a torch device name."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(device)
    except (RuntimeError, TypeError) as exc:  # a name torch does not know, or not a name
        raise HMSDataError(
            None, f"unknown device {device!r}; give auto, cpu, cuda or cuda:<index>"
        ) from exc
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise HMSDataError(None, f"device {device!r} requested, but CUDA is not available")
    return resolved


def resolve_precision(precision: str | int | None, device: torch.device) -> str:
    """``"auto"``: bf16 autocast on a GPU, full float32 on the CPU; otherwise as given (one of
    ``PRECISIONS``; ``HMSDataError`` for another)."""
    if precision is None or str(precision) == "auto":
        return "bf16-mixed" if device.type == "cuda" else "32"
    if isinstance(precision, bool) or str(precision) not in PRECISIONS:
        raise HMSDataError(
            None, f"precision must be one of {list(PRECISIONS)} or null, got {precision!r}"
        )
    return str(precision)


# --------------------------------------------------------------------------- checkpoints


def _torch_load(path: Path) -> Any:
    """``torch.load`` of tensors and plain data only, memory-mapped when the format allows it
    (so that reading the hyperparameters costs no time for the weights)."""
    try:
        return torch.load(path, map_location="cpu", mmap=True, weights_only=True)
    except RuntimeError:  # files in the legacy (non-zip) format cannot be memory-mapped
        return torch.load(path, map_location="cpu", weights_only=True)


def checkpoint_hparams(path: str | Path, member: str) -> dict[str, Any]:
    """The hyperparameters of an ``HMSModule`` checkpoint of model ``member``, else an error.

    A file that torch cannot read, a checkpoint that is not an ``HMSModule``'s, and a checkpoint
    of another model than ``member`` each raise ``HMSDataError`` naming the file.
    """
    path = Path(path)
    try:
        ckpt = _torch_load(path)
    except Exception as exc:  # torch raises many types for a file that is not a checkpoint
        raise HMSDataError(
            path,
            f"not a PyTorch Lightning checkpoint ({type(exc).__name__}: {str(exc)[:300]}); "
            "expected the best.ckpt of a python -m hms.train run",
        ) from exc
    hparams = ckpt.get("hyper_parameters") if isinstance(ckpt, Mapping) else None
    if (
        not isinstance(hparams, Mapping)
        or "state_dict" not in ckpt
        or not {"name", "net_class"} <= set(hparams)
    ):
        raise HMSDataError(
            path,
            "not an hms model checkpoint (no HMSModule hyperparameters name and net_class); "
            "expected the best.ckpt of a python -m hms.train run",
        )
    if hparams["name"] != member:
        raise HMSDataError(
            path,
            f"checkpoint of model {hparams['name']}, but the ensemble lists it under member "
            f"{member}",
        )
    return dict(hparams)


def load_member_checkpoint(
    path: str | Path,
    member: str,
    device: torch.device | str = "cpu",
    tta_flip: bool | None = None,
    window: WindowSettings | None = None,
) -> HMSModule:
    """Load one fold checkpoint of ``member`` onto ``device``, in eval mode.

    The checkpoint must be an ``HMSModule`` checkpoint of the model the ensemble names it under.
    Its network is rebuilt without downloading anything (``pretrained`` forced off: the weights
    come from the checkpoint). ``tta_flip`` (when not None) overrides the checkpoint's setting.
    ``window``: the member's window settings (``ensemble.json``); the network's montage must be
    theirs, and a checkpoint written before montages had names takes theirs.
    """
    path = Path(path)
    hparams = checkpoint_hparams(path, member)
    overrides: dict[str, Any] = {}
    net = hparams.get("net")
    net = dict(net) if isinstance(net, Mapping) else {}
    if net.get("pretrained"):
        overrides["net"] = {**net, "pretrained": False}
    if window is not None and "montage" not in net:
        overrides["net"] = {**overrides.get("net", net), "montage": window.montage}
    try:
        module = module_class().load_from_checkpoint(
            path, map_location=torch.device(device), weights_only=True, **overrides
        )
    except (ImportError, RuntimeError, KeyError, TypeError, ValueError) as exc:
        raise HMSDataError(
            path, f"cannot rebuild the model from this checkpoint ({type(exc).__name__}: {exc})"
        ) from exc
    if window is not None and module.net.montage != window.montage:
        raise HMSDataError(
            path,
            f"the network reads montage {module.net.montage!r}, but {ENSEMBLE_FILE} gives member "
            f"{member!r} the windows of montage {window.montage!r}",
        )
    if tta_flip is not None:
        module.hparams.tta_flip = bool(tta_flip)
    return module.eval()


# --------------------------------------------------------------------------- the backend


class TorchFold:
    """One loaded fold checkpoint: a batch of numpy arrays -> (B, 6) float64 probabilities."""

    def __init__(self, module: HMSModule, device: torch.device, precision: str) -> None:
        self.module, self.device, self.precision = module.to(device).eval(), device, precision
        self.inputs = tuple(module.inputs)

    @property
    def network(self) -> HMSNet:
        return self.module.net

    @torch.no_grad()
    def __call__(self, batch: Mapping[str, np.ndarray]) -> np.ndarray:
        from hms.models.module import autocast_for

        inputs = {
            k: torch.from_numpy(np.asarray(batch[k])).to(self.device, non_blocking=True)
            for k in self.inputs
        }
        with autocast_for(self.device, self.precision):
            probs = self.module.predict_proba(inputs)
        out = probs.float().cpu().numpy().astype(np.float64)
        return out / out.sum(axis=1, keepdims=True)


class TorchBackend:
    """Runs ``HMSModule`` checkpoints (``.ckpt``) on a torch device."""

    name = "torch"
    suffix = ".ckpt"
    file_kind, builder = "checkpoint", "hms.ensemble"

    def __init__(self, device: str = "auto", precision: str | int | None = "auto") -> None:
        self.torch_device = resolve_device(device)
        self.device = str(self.torch_device)
        self.precision = resolve_precision(precision, self.torch_device)

    def check(self, path: Path, member: MemberInfo) -> None:
        checkpoint_hparams(path, member.name)

    def check_folder(self, folder: Path) -> None:
        """A PyTorch folder may hold more (hms.ensemble's report, OOF blend)."""

    def load(self, path: Path, member: MemberInfo, tta_flip: bool | None) -> TorchFold:
        module = load_member_checkpoint(
            path, member.name, self.torch_device, tta_flip, member.window
        )
        return TorchFold(module, self.torch_device, self.precision)

    def release(self) -> None:
        """Give the device's cached memory back between folds."""
        if self.torch_device.type == "cuda":
            torch.cuda.empty_cache()


def open_checkpoints(weights_dir: str | Path) -> WeightsFolder:
    """A PyTorch weights folder opened on the CPU in float32, every checkpoint checked: what an
    export reads (an exported folder is not exported again)."""
    from hms.blend import read_ensemble
    from hms.inference import open_weights

    ensemble = read_ensemble(weights_dir)
    if ensemble.backend != "torch":
        raise HMSDataError(
            Path(weights_dir), "this is an ONNX weights folder (an export): export from the "
            "PyTorch weights folder that hms.ensemble wrote",
        )  # fmt: skip
    return open_weights(weights_dir, "cpu", "32", ensemble)
