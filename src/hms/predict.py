"""``python -m hms.predict test_path=DIR weights_dir=DIR out=submission.csv``: the submission.

``test_path`` is an HMS-layout folder (``test.csv``, ``test_eegs/``, ``test_spectrograms/``, and
optionally ``sample_submission.csv``); ``weights_dir`` is a folder written by ``hms.ensemble``
(``ensemble.json`` and ``<member>/fold<k>.ckpt``, see ``hms.blend``). For each member, the test
split goes through the same cache and preprocessing as training, with the member's own
``data.recording`` settings (members that share them share one cache) and ``data.window``
settings; every fold checkpoint predicts the test rows, a member's folds are averaged (mean of
probabilities), and the members are blended as ``ensemble.json`` says.

The output has one row per ``test.csv`` row, in its order: ``eeg_id`` and the six vote columns
(in the order of ``sample_submission.csv`` when the folder has one), each row a probability
distribution. It is written under a temporary name and renamed, so a failed run leaves no partial
file and does not touch a previous one.

Offline by design: checkpoints rebuild their networks without downloading weights, and wandb is
never imported (timm imports it when it is installed, for its own optional logging, so the model
modules are imported with wandb hidden; see ``_wandb_hidden``). A spectrogram file that is absent
(a recording from outside Kaggle) is not an error: its Kaggle-style rows are computed from the EEG
(``build_cache(..., missing_spectrograms="compute")``), covering the EEG's 50 s of the 10-min
window.
"""

from __future__ import annotations

# Only light modules are imported here: torch, Lightning, timm and the cache code (scikit-learn)
# are imported when first needed, so the command reports a wrong path, a missing ensemble.json
# or a bad test.csv in about a second instead of after several seconds of imports.
import contextlib
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
from omegaconf import DictConfig

from hms.blend import ENSEMBLE_FILE, EnsembleSpec, blend, read_ensemble
from hms.cli import hydra_main
from hms.constants import SUBMISSION_COLUMNS, VOTE_COLUMNS
from hms.data.io import HMSLayout, check_writable, read_sample_submission, write_csv
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


def _model_code() -> tuple[type[HMSModule], Any]:
    """``HMSModule`` and ``predict_loader``, imported (with timm) while wandb is hidden."""
    with _wandb_hidden():
        from hms.models.inference import predict_loader
        from hms.models.module import HMSModule
    return HMSModule, predict_loader


SPLIT = "test"
_ROW_SUM_TOL = 1e-6


# --------------------------------------------------------------------------- settings


def resolve_device(device: str = "auto") -> torch.device:
    """``"auto"``: the GPU when CUDA is available, else the CPU; otherwise a torch device name."""
    import torch

    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(device)
    except RuntimeError as exc:
        raise HMSDataError(None, f"unknown device {device!r}: {exc}") from exc
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise HMSDataError(None, f"device {device!r} requested, but CUDA is not available")
    return resolved


def resolve_precision(precision: str | int | None, device: torch.device) -> str:
    """``"auto"``: bf16 autocast on a GPU, full float32 on the CPU; otherwise as given."""
    if precision is None or str(precision) == "auto":
        return "bf16-mixed" if device.type == "cuda" else "32"
    return str(precision)


def _settings(cls: type, values: Mapping[str, Any] | None, member: str, weights_dir: Path):
    """A ``RecordingSettings`` / ``WindowSettings`` from a member's ``data`` block."""
    values = dict(values or {})
    known = {f.name for f in fields(cls)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise HMSDataError(
            weights_dir / ENSEMBLE_FILE,
            f"member {member!r}: unknown {cls.__name__} settings {unknown}; known: {sorted(known)}",
        )
    return cls(**values)


def member_settings(
    spec: EnsembleSpec, weights_dir: Path
) -> tuple[dict[str, RecordingSettings], dict[str, WindowSettings]]:
    """Each member's recording (filters, cache type) and window (montage, clip) settings."""
    recording = {
        m: _settings(RecordingSettings, spec.data[m].get("recording"), m, weights_dir)
        for m in spec.members
    }
    window = {
        m: _settings(WindowSettings, spec.data[m].get("window"), m, weights_dir)
        for m in spec.members
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


def load_member_checkpoint(
    path: str | Path,
    member: str,
    device: torch.device | str = "cpu",
    tta_flip: bool | None = None,
) -> HMSModule:
    """Load one fold checkpoint of ``member`` onto ``device``, in eval mode.

    The checkpoint must be an ``HMSModule`` checkpoint of the model the ensemble names it under.
    Its network is rebuilt without downloading anything (``pretrained`` forced off: the weights
    come from the checkpoint). ``tta_flip`` (when not None) overrides the checkpoint's setting.
    """
    import torch

    module_class, _ = _model_code()
    path = Path(path)
    hparams = checkpoint_hparams(path, member)
    overrides: dict[str, Any] = {}
    net = hparams.get("net")
    if isinstance(net, Mapping) and net.get("pretrained"):
        overrides["net"] = {**net, "pretrained": False}
    try:
        module = module_class.load_from_checkpoint(
            path, map_location=torch.device(device), weights_only=True, **overrides
        )
    except (ImportError, RuntimeError, KeyError, TypeError, ValueError) as exc:
        raise HMSDataError(
            path, f"cannot rebuild the model from this checkpoint ({type(exc).__name__}: {exc})"
        ) from exc
    if tta_flip is not None:
        module.hparams.tta_flip = bool(tta_flip)
    return module.eval()


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


def load_members(
    weights_dir: str | Path,
    device: torch.device | str = "cpu",
    tta_flip: bool | None = None,
    blended_only: bool = False,
) -> tuple[EnsembleSpec, list[LoadedMember]]:
    """The ensemble of ``weights_dir`` with every fold checkpoint loaded on ``device``;
    ``blended_only`` leaves out the members of weight 0 (references such as the baseline)."""
    weights_dir = Path(weights_dir)
    spec = read_ensemble(weights_dir)
    recording, window = member_settings(spec, weights_dir)
    paths = {m: [weights_dir / rel for rel in spec.checkpoints[m]] for m in spec.members}
    for member in spec.members:  # every file checked before the slow loading starts
        for path in paths[member]:
            checkpoint_hparams(path, member)
    members = []
    for m in spec.members:
        if blended_only and spec.weights[m] <= 0:
            continue
        modules = [load_member_checkpoint(p, m, device, tta_flip) for p in paths[m]]
        members.append(LoadedMember(m, modules, recording[m], window[m]))
    return spec, members


# --------------------------------------------------------------------------- prediction


def _output_columns(layout: HMSLayout, test: pd.DataFrame) -> list[str]:
    """The submission's columns: those of ``sample_submission.csv`` when present."""
    if not layout.sample_submission.is_file():
        return list(SUBMISSION_COLUMNS)
    sample = read_sample_submission(layout.sample_submission)
    if set(sample["eeg_id"]) != set(test["eeg_id"]):
        print(
            f"note: {layout.sample_submission} lists other eeg_ids than test.csv; the output "
            "has the rows of test.csv"
        )
    return list(sample.columns)


def _member_probs(
    member: str,
    checkpoints: list[Path],
    loader: DataLoader,
    n_rows: int,
    device: torch.device,
    precision: str,
    tta_flip: bool | None,
    progress: bool,
) -> np.ndarray:
    """Mean over a member's fold checkpoints of the probabilities (n_rows, 6), in cache order."""
    import torch

    _, predict_loader = _model_code()
    total = np.zeros((n_rows, len(VOTE_COLUMNS)), dtype=np.float64)
    for k, path in enumerate(checkpoints):
        module = load_member_checkpoint(path, member, device, tta_flip)
        index, probs = predict_loader(
            module, loader, device, precision, progress=progress,
            desc=f"{member} {k + 1}/{len(checkpoints)}",
        )  # fmt: skip
        if len(index) != n_rows or not np.array_equal(np.sort(index), np.arange(n_rows)):
            raise RuntimeError(f"{path}: predicted {len(index)} rows, expected each of {n_rows}")
        total[index] += probs
        del module
        if device.type == "cuda":
            torch.cuda.empty_cache()
    return total / len(checkpoints)


def _check_submission(frame: pd.DataFrame, test: pd.DataFrame, columns: list[str]) -> None:
    """What the output must be before it is written: a failure here is a bug, not bad input."""
    values = frame[list(VOTE_COLUMNS)].to_numpy(np.float64)
    problems = []
    if list(frame.columns) != columns:
        problems.append(f"columns {list(frame.columns)} instead of {columns}")
    if len(frame) != len(test) or not np.array_equal(frame["eeg_id"], test["eeg_id"]):
        problems.append("rows are not those of test.csv in its order")
    if not np.isfinite(values).all():
        problems.append("non-finite probabilities")
    elif (values < 0).any() or not np.allclose(values.sum(axis=1), 1.0, atol=_ROW_SUM_TOL):
        problems.append("rows that are not probability distributions")
    if problems:
        raise RuntimeError("the submission is invalid: " + "; ".join(problems))


def predict(
    test_path: str | Path,
    weights_dir: str | Path,
    out: str | Path | None = "submission.csv",
    device: str = "auto",
    precision: str | None = "auto",
    batch_size: int = 32,
    num_workers: int = 0,
    tta_flip: bool | None = None,
    cache_dir: str | Path | None = None,
    workers: int = 1,
    progress: bool = True,
    return_members: bool = False,
) -> pd.DataFrame | tuple[pd.DataFrame, dict[str, np.ndarray]]:
    """Predict ``test_path``'s test split with the ensemble in ``weights_dir``; write ``out``.

    Returns the submission (``eeg_id`` and the six vote columns, one row per ``test.csv`` row in
    its order, rows summing to 1); with ``return_members=True``, also each member's prediction
    (the mean over its folds, (rows, 6) in the same row order) by member name, to score members
    on their own. ``out=None`` writes nothing. ``cache_dir=None`` builds the test
    caches in a temporary folder removed at the end; a given folder is kept and reused by the
    next run. ``workers`` processes build the cache; ``num_workers`` feed the model.
    ``tta_flip``: None keeps each checkpoint's setting; True/False forces it for all.
    Bad inputs raise ``HMSDataError`` naming the file and the problem, and write nothing.
    """
    t0 = time.perf_counter()
    # Everything that can be checked cheaply is checked before any work is done.
    weights_dir = Path(weights_dir)
    spec: EnsembleSpec = read_ensemble(weights_dir)
    layout = HMSLayout(test_path)
    if not layout.root.is_dir():
        raise HMSDataError(layout.root, "test folder not found")
    test = layout.read_csv(SPLIT)
    columns = _output_columns(layout, test)
    if out is not None:
        check_writable(out, "submission")
    recording, window = member_settings(spec, weights_dir)
    dev = resolve_device(device)
    prec = resolve_precision(precision, dev)
    for member in spec.members:
        for rel in spec.checkpoints[member]:
            checkpoint_hparams(weights_dir / rel, member)

    from torch.utils.data import DataLoader

    from hms.data.cache import HMSCache, build_cache
    from hms.data.dataset import CacheDataset

    with contextlib.ExitStack() as stack:
        if cache_dir is None:
            cache_dir = stack.enter_context(tempfile.TemporaryDirectory(prefix="hms-predict-"))
        caches: dict[RecordingSettings, HMSCache] = {}
        for settings in dict.fromkeys(recording.values()):  # one cache per distinct setting
            path = build_cache(
                layout.root, cache_dir, SPLIT, settings, workers=workers, progress=progress,
                missing_spectrograms="compute",
            )  # fmt: skip
            cache = HMSCache(path)
            if not np.array_equal(cache.samples["eeg_id"].to_numpy(), test["eeg_id"].to_numpy()):
                raise HMSDataError(path, "this cache's rows are not those of test.csv; delete it")
            caches[settings] = cache
        first = next(iter(caches.values()))
        n_computed = int(first.spectrograms["computed"].sum())
        if n_computed:
            print(
                f"note: {n_computed} test spectrogram file(s) absent; Kaggle-style spectrograms "
                "computed from the EEG (only the EEG's 50 s are covered, the rest of the 10-min "
                "window is zero)"
            )
        # Members of weight 0 (references) change nothing in the blend: run only when asked for.
        run = [m for m in spec.members if return_members or spec.weights[m] > 0]
        member_probs = []
        for member in run:
            dataset = CacheDataset(caches[recording[member]], window=window[member])
            loader = DataLoader(
                dataset,
                batch_size=batch_size,
                shuffle=False,
                num_workers=num_workers,
                pin_memory=dev.type == "cuda",
            )
            paths = [weights_dir / rel for rel in spec.checkpoints[member]]
            member_probs.append(
                _member_probs(member, paths, loader, len(test), dev, prec, tta_flip, progress)
            )
    probs = blend(member_probs, [spec.weights[m] for m in run], spec.space, spec.bias)

    frame = pd.DataFrame({"eeg_id": test["eeg_id"].to_numpy(np.int64)})
    for i, col in enumerate(VOTE_COLUMNS):
        frame[col] = probs[:, i]
    frame = frame[columns]
    _check_submission(frame, test, columns)
    if out is not None:
        write_csv(frame, out)
    n_folds = sum(len(spec.checkpoints[m]) for m in run)
    per_member = ", ".join(f"{m} ({len(spec.checkpoints[m])})" for m in run)
    print(
        f"{len(frame)} rows -> {out if out is not None else '(not written)'}: "
        f"{len(run)} member(s), {n_folds} fold checkpoint(s) [{per_member}], "
        f"{dev.type} {prec}, {time.perf_counter() - t0:.1f} s"
    )
    if return_members:
        return frame, dict(zip(run, member_probs, strict=True))
    return frame


@hydra_main("predict")
def main(cfg: DictConfig) -> None:
    predict(
        cfg.test_path,
        cfg.weights_dir,
        cfg.out,
        device=cfg.device,
        precision=cfg.precision,
        batch_size=cfg.batch_size,
        num_workers=cfg.num_workers,
        tta_flip=cfg.tta_flip,
        cache_dir=cfg.cache_dir,
        workers=cfg.workers,
        progress=cfg.progress,
    )


if __name__ == "__main__":
    main()
