"""Weights folder -> loaded ensemble -> probabilities: the one inference path of hms.

A weights folder (``ensemble.json`` and ``<member>/fold<k>.ckpt``, see ``hms.blend``) is run by
``hms.submission`` (``python -m hms.predict`` and the pipeline), ``hms.annotation``, the sample
figure of ``hms.report`` and ``hms.torchscript`` (the export), all through this module:

- ``member_settings``: each member's preprocessing, the ``data.recording`` and ``data.window``
  settings of its training;
- ``checkpoint_paths``: every fold checkpoint, each checked (a cheap read of its
  hyperparameters) before any slow work;
- ``load_member_checkpoint``, ``load_members``: fold checkpoints rebuilt on a device, offline
  (nothing downloaded, wandb kept out: ``model_code``), the test-time flip as trained or forced;
- ``predict_member``, ``LoadedMember.predict``, ``LoadedMember.predict_batch``: a member's
  prediction, the mean over its folds (``fold_mean``) of each checkpoint's probabilities
  (softmax and flip TTA: ``hms.models.module.probabilities``);
- the blend of the members: ``EnsembleSpec.blend`` (``hms.blend``).

Only light modules are imported at the top: torch, Lightning and timm are imported on first use,
so that a command reports a wrong path, a missing ``ensemble.json`` or a bad checkpoint in about
a second instead of after several seconds of imports.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from hms.blend import ENSEMBLE_FILE, EnsembleSpec, read_ensemble
from hms.constants import N_CLASSES
from hms.data.io import file_digest
from hms.data.preprocess import RecordingSettings, WindowSettings
from hms.errors import HMSDataError

if TYPE_CHECKING:
    import torch
    from torch.utils.data import DataLoader

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


def model_code() -> tuple[type[HMSModule], Callable[..., tuple[np.ndarray, np.ndarray]]]:
    """``HMSModule`` and ``predict_loader``, imported (with timm) while wandb is hidden."""
    with _wandb_hidden():
        from hms.models.module import HMSModule, predict_loader
    return HMSModule, predict_loader


# --------------------------------------------------------------------------- settings


def resolve_device(device: str = "auto") -> torch.device:
    """``"auto"``: the GPU when CUDA is available, else the CPU; otherwise a torch device name."""
    import torch

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


PRECISIONS = ("auto", "32", "32-true", "16", "16-mixed", "bf16", "bf16-mixed")


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


def _settings(cls: type, values: Mapping[str, Any] | None, member: str, weights_dir: Path):
    """A ``RecordingSettings`` / ``WindowSettings`` from a member's ``data`` block."""
    values = dict(values or {})
    known = {f.name for f in fields(cls)} | ({"midline"} if cls is WindowSettings else set())
    unknown = sorted(set(values) - known)
    if unknown:
        raise HMSDataError(
            weights_dir / ENSEMBLE_FILE,
            f"member {member!r}: unknown {cls.__name__} settings {unknown}; known: {sorted(known)}",
        )
    try:
        return WindowSettings.from_dict(values) if cls is WindowSettings else cls(**values)
    except (TypeError, ValueError) as exc:
        raise HMSDataError(
            weights_dir / ENSEMBLE_FILE, f"member {member!r}: {cls.__name__}: {exc}"
        ) from None


def member_settings(
    ensemble: EnsembleSpec, weights_dir: Path
) -> tuple[dict[str, RecordingSettings], dict[str, WindowSettings]]:
    """Each member's recording (filters, cache type) and window (montage, clip) settings."""
    recording = {
        m: _settings(RecordingSettings, ensemble.data[m].get("recording"), m, weights_dir)
        for m in ensemble.members
    }
    window = {
        m: _settings(WindowSettings, ensemble.data[m].get("window"), m, weights_dir)
        for m in ensemble.members
    }
    return recording, window


# --------------------------------------------------------------------------- checkpoints


def _torch_load(path: Path) -> Any:
    """``torch.load`` of tensors and plain data only, memory-mapped when the format allows it
    (so that reading the hyperparameters costs no time for the weights)."""
    import torch

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


def checkpoint_paths(ensemble: EnsembleSpec, weights_dir: str | Path) -> dict[str, list[Path]]:
    """Each member's fold checkpoints, every one checked (``checkpoint_hparams``) before the
    slow loading starts."""
    weights_dir = Path(weights_dir)
    paths = {m: [weights_dir / rel for rel in ensemble.checkpoints[m]] for m in ensemble.members}
    sums = (ensemble.built_from or {}).get("checkpoints", {})
    for member in paths:
        for rel, path in zip(ensemble.checkpoints[member], paths[member], strict=True):
            if rel in sums and file_digest(path)["sha256"] != sums[rel]["sha256"]:
                raise HMSDataError(
                    path,
                    "checkpoint changed after hms.ensemble built this folder (its SHA-256 is "
                    f"not the one {ENSEMBLE_FILE} records); build the folder again",
                )
            checkpoint_hparams(path, member)
    return paths


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
    import torch

    module_class, _ = model_code()
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
        module = module_class.load_from_checkpoint(
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


# --------------------------------------------------------------------------- probabilities


def fold_mean(folds: Sequence[np.ndarray]) -> np.ndarray:
    """A member's prediction: the mean of its fold checkpoints' probabilities."""
    return np.mean(folds, axis=0)


def _fold_probs(
    module: HMSModule,
    loader: DataLoader,
    n_rows: int,
    device: torch.device,
    precision: str | None,
    where: str | Path,
    progress: bool = False,
    desc: str = "predict",
) -> np.ndarray:
    """One checkpoint's probabilities (n_rows, 6) of every row of the loader, in dataset order."""
    _, predict_loader = model_code()
    index, probs = predict_loader(module, loader, device, precision, progress=progress, desc=desc)
    if len(index) != n_rows or not np.array_equal(np.sort(index), np.arange(n_rows)):
        raise RuntimeError(f"{where}: predicted {len(index)} rows, expected each of {n_rows}")
    out = np.empty((n_rows, N_CLASSES), dtype=np.float64)
    out[index] = probs
    return out


def predict_member(
    member: str,
    checkpoints: Sequence[Path],
    loader: DataLoader,
    n_rows: int,
    device: torch.device,
    precision: str | None,
    tta_flip: bool | None = None,
    progress: bool = False,
    window: WindowSettings | None = None,
) -> np.ndarray:
    """``member``'s prediction (n_rows, 6) over a loader: its fold checkpoints loaded one at a
    time (a single one on the device), the mean of their probabilities, in dataset order."""
    import torch

    folds = []
    for k, path in enumerate(checkpoints):
        module = load_member_checkpoint(path, member, device, tta_flip, window)
        desc = f"{member} {k + 1}/{len(checkpoints)}"
        folds.append(_fold_probs(module, loader, n_rows, device, precision, path, progress, desc))
        del module
        if device.type == "cuda":
            torch.cuda.empty_cache()
    return fold_mean(folds)


@dataclass
class LoadedMember:
    """A member with its fold checkpoints loaded, for code that predicts without a cache."""

    name: str
    modules: list  # HMSModule per fold checkpoint, in eval mode on the device
    recording: RecordingSettings
    window: WindowSettings

    @property
    def inputs(self) -> set[str]:
        return {key for m in self.modules for key in m.inputs}

    @property
    def needs_spec(self) -> bool:
        return "spec" in self.inputs

    def predict(
        self, loader: DataLoader, n_rows: int, device: torch.device, precision: str | None
    ) -> np.ndarray:
        """The member's prediction (n_rows, 6) over a loader, in dataset order."""
        return fold_mean(
            [_fold_probs(m, loader, n_rows, device, precision, self.name) for m in self.modules]
        )

    def predict_batch(self, inputs: Mapping[str, torch.Tensor]) -> np.ndarray:
        """The member's prediction (B, 6) of one batch already on the modules' device."""
        return fold_mean([m.predict_proba(inputs).cpu().numpy() for m in self.modules])


def load_members(
    weights_dir: str | Path,
    device: torch.device | str = "cpu",
    tta_flip: bool | None = None,
    blended_only: bool = False,
) -> tuple[EnsembleSpec, list[LoadedMember]]:
    """The ensemble of ``weights_dir`` with every fold checkpoint loaded on ``device``;
    ``blended_only`` leaves out the members of weight 0 (references such as the baseline)."""
    weights_dir = Path(weights_dir)
    ensemble = read_ensemble(weights_dir)
    recording, window = member_settings(ensemble, weights_dir)
    paths = checkpoint_paths(ensemble, weights_dir)
    members = []
    for m in ensemble.members:
        if blended_only and ensemble.weights[m] <= 0:
            continue
        modules = [load_member_checkpoint(p, m, device, tta_flip, window[m]) for p in paths[m]]
        members.append(LoadedMember(m, modules, recording[m], window[m]))
    return ensemble, members
