"""Weights folder -> loaded ensemble -> probabilities: the one inference path of hms.

A weights folder is ``ensemble.json`` and each member's fold files (``hms.blend``): PyTorch
checkpoints (``<member>/fold<k>.ckpt``, from ``hms.ensemble``) or ONNX graphs
(``<member>/fold<k>.onnx``, from ``python -m hms.export format=onnx``). ``hms.submission``
(``python -m hms.predict`` and the pipeline), ``hms.annotation``, the sample figure of
``hms.report`` and the exports all run it through this module:

- ``open_weights``: the manifest, each member's preprocessing (``member_settings``: the
  ``data.recording`` and ``data.window`` settings of its training) and the backend of the
  folder's kind (``hms.backends.pytorch`` or ``hms.backends.onnx``, imported only then) on its
  device; every fold file is checked (its SHA-256 against the manifest, then cheaply by the
  backend) before any slow work;
- ``predict_member``: a member's prediction over a dataset of windows, its fold files loaded
  one at a time, the mean over folds (``fold_mean``) of each fold's probabilities (softmax and
  flip TTA inside the fold: ``hms.models.module.probabilities``, or the exported graph);
- ``load_members``: every fold loaded at once, for code that predicts chunk by chunk
  (``LoadedMember.predict``, ``LoadedMember.predict_batch``);
- the blend of the members: ``EnsembleSpec.blend`` (``hms.blend``).

Everything above the backend (reading recordings, windows, caching, blending, writing) is the
same code for both kinds, and batches are numpy arrays (``hms.data.dataset.batches``). This
module imports neither torch nor onnxruntime: a command reports a wrong path, a missing
``ensemble.json`` or a bad file in about a second, and an ONNX folder runs where torch is not
installed.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np

from hms.backends.base import Backend, Fold, MemberInfo, open_backend
from hms.blend import ENSEMBLE_FILE, EnsembleSpec, read_ensemble
from hms.constants import N_CLASSES
from hms.data.dataset import Windows, batches
from hms.data.io import file_digest
from hms.data.preprocess import RecordingSettings, WindowSettings
from hms.errors import HMSDataError
from hms.progress import progress as progress_display

# --------------------------------------------------------------------------- settings


def _settings(cls: type, values: Mapping[str, Any] | None, member: str, weights_dir: Path):
    """A ``RecordingSettings`` / ``WindowSettings`` from a member's ``data`` block."""
    values = dict(values or {})
    known = {f.name for f in fields(cls)} | ({"midline"} if cls is WindowSettings else set())
    unknown = sorted(set(values) - known)
    if unknown:
        raise HMSDataError(
            weights_dir / ENSEMBLE_FILE,
            f"member {member!r}: unknown {cls.__name__} settings {[k[:80] for k in unknown[:10]]}; "
            f"known: {sorted(known)}",
        )
    try:
        return WindowSettings.from_dict(values) if cls is WindowSettings else cls(**values)
    except (TypeError, ValueError) as exc:
        raise HMSDataError(  # the message quotes the value, which may be 4 MB of JSON
            weights_dir / ENSEMBLE_FILE, f"member {member!r}: {cls.__name__}: {str(exc)[:300]}"
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


@dataclass
class WeightsFolder:
    """An opened weights folder: its manifest, members and backend (files checked)."""

    path: Path
    ensemble: EnsembleSpec
    members: dict[str, MemberInfo]
    backend: Backend

    @property
    def recording(self) -> dict[str, RecordingSettings]:
        return {m: info.recording for m, info in self.members.items()}

    @property
    def window(self) -> dict[str, WindowSettings]:
        return {m: info.window for m, info in self.members.items()}


def member_infos(ensemble: EnsembleSpec, weights_dir: Path) -> dict[str, MemberInfo]:
    """Each member's files (checked to exist by ``read_ensemble``), settings and inputs."""
    recording, window = member_settings(ensemble, weights_dir)
    infos = {}
    for m in ensemble.members:
        files = [weights_dir / rel for rel in ensemble.checkpoints[m]]
        inputs = list(ensemble.inputs.get(m, []))
        infos[m] = MemberInfo(m, weights_dir, files, recording[m], window[m], inputs)
    return infos


def open_weights(
    weights_dir: str | Path,
    device: str = "auto",
    precision: str | int | None = "auto",
    ensemble: EnsembleSpec | None = None,
) -> WeightsFolder:
    """Open a weights folder on ``device``: the manifest read (unless given), every fold file's
    SHA-256 checked against it and each file checked by its backend, before any slow work."""
    weights_dir = Path(weights_dir)
    ensemble = ensemble or read_ensemble(weights_dir)
    infos = member_infos(ensemble, weights_dir)
    backend = open_backend(ensemble.backend, device, precision)
    sums = (ensemble.built_from or {}).get("checkpoints", {})
    what, builder = backend.file_kind, backend.builder
    for info in infos.values():
        for rel, path in zip(ensemble.checkpoints[info.name], info.files, strict=True):
            if rel in sums and file_digest(path)["sha256"] != sums[rel]["sha256"]:
                raise HMSDataError(
                    path,
                    f"{what} changed after {builder} built this folder (its SHA-256 is not the "
                    f"one {ENSEMBLE_FILE} records); build the folder again",
                )
            backend.check(path, info)
    backend.check_folder(weights_dir)
    return WeightsFolder(weights_dir, ensemble, infos, backend)


# --------------------------------------------------------------------------- probabilities


def fold_mean(folds: Sequence[np.ndarray]) -> np.ndarray:
    """A member's prediction: the mean of its fold checkpoints' probabilities."""
    return np.mean(folds, axis=0)


def fold_probs(
    fold: Fold,
    dataset: Windows,
    batch_size: int,
    where: str | Path,
    num_workers: int = 0,
    progress: bool = False,
    desc: str = "predict",
) -> np.ndarray:
    """One fold's probabilities (len(dataset), 6) of every window, in dataset order."""
    n_rows = len(dataset)
    out = np.full((n_rows, N_CLASSES), np.nan)
    seen = np.zeros(n_rows, dtype=bool)
    total = -(-n_rows // batch_size)
    for batch in progress_display(
        batches(dataset, batch_size, fold.inputs, num_workers),
        total=total, desc=desc, unit="batch", enabled=progress,
    ):  # fmt: skip
        index = np.asarray(batch["index"], dtype=np.int64)
        out[index] = fold(batch)
        seen[index] = True
    if not seen.all():
        raise RuntimeError(f"{where}: predicted {int(seen.sum())} rows, expected each of {n_rows}")
    return out


def predict_member(
    weights: WeightsFolder,
    member: str,
    dataset: Windows,
    batch_size: int = 32,
    tta_flip: bool | None = None,
    num_workers: int = 0,
    progress: bool = False,
) -> np.ndarray:
    """``member``'s prediction (len(dataset), 6): its fold files loaded one at a time (a
    single one on the device), the mean of their probabilities, in dataset order."""
    info = weights.members[member]
    folds = []
    for k, path in enumerate(info.files):
        fold = weights.backend.load(path, info, tta_flip)
        desc = f"{member} {k + 1}/{len(info.files)}"
        folds.append(fold_probs(fold, dataset, batch_size, path, num_workers, progress, desc))
        del fold
        weights.backend.release()
    return fold_mean(folds)


@dataclass
class LoadedMember:
    """A member with its fold files loaded, for code that predicts chunk by chunk."""

    name: str
    folds: list  # Fold per fold file, on the backend's device
    recording: RecordingSettings
    window: WindowSettings

    @property
    def inputs(self) -> set[str]:
        return {key for f in self.folds for key in f.inputs}

    @property
    def needs_spec(self) -> bool:
        return "spec" in self.inputs

    def predict(self, dataset: Windows, batch_size: int = 32) -> np.ndarray:
        """The member's prediction (len(dataset), 6) over a dataset, in dataset order."""
        return fold_mean([fold_probs(f, dataset, batch_size, self.name) for f in self.folds])

    def predict_batch(self, batch: Mapping[str, np.ndarray]) -> np.ndarray:
        """The member's prediction (B, 6) of one batch."""
        return fold_mean([f(batch) for f in self.folds])


def load_members(
    weights: WeightsFolder | str | Path,
    device: str = "auto",
    precision: str | int | None = "auto",
    tta_flip: bool | None = None,
    blended_only: bool = False,
) -> tuple[WeightsFolder, list[LoadedMember]]:
    """A weights folder (opened here unless given) with every fold file loaded;
    ``blended_only`` leaves out the members of weight 0 (references such as the baseline)."""
    if not isinstance(weights, WeightsFolder):
        weights = open_weights(weights, device, precision)
    members = []
    for name, info in weights.members.items():
        if blended_only and weights.ensemble.weights[name] <= 0:
            continue
        folds = [weights.backend.load(p, info, tta_flip) for p in info.files]
        members.append(LoadedMember(name, folds, info.recording, info.window))
    return weights, members


def open_checkpoints(weights_dir: str | Path) -> WeightsFolder:
    """A PyTorch weights folder opened on the CPU in float32, every checkpoint checked: what an
    export reads (an exported folder is not exported again)."""
    ensemble = read_ensemble(weights_dir)
    if ensemble.backend != "torch":
        raise HMSDataError(
            Path(weights_dir), "this is an ONNX weights folder (an export): export from the "
            "PyTorch weights folder that hms.ensemble wrote",
        )  # fmt: skip
    return open_weights(weights_dir, "cpu", "32", ensemble)
