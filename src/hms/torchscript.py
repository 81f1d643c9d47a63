"""An ensemble as TorchScript files (the work of ``python -m hms.export``), and their loading.

Every fold checkpoint of a weights folder (``hms.ensemble``) becomes a TorchScript module that
maps the model inputs to the six class probabilities — the on-device spectrograms, the
normalisation (dataset statistics included) and the left/right-flip TTA are inside it — so a
Kaggle notebook can run the ensemble with ``torch`` alone::

    out_dir/
        export.json              weights, blend space and bias, and per member: its files, the
                                 inputs it reads and the preprocessing settings of its training
        <member>/fold<k>.pt      torch.jit.load(...)(eeg, spec) -> (B, 6) probabilities

Inputs are what ``hms.data.dataset.CacheDataset`` serves: ``eeg`` (B, channels, 10000) filtered
derivations of the member's montage in microvolts and ``spec`` (B, 300, 400) Kaggle spectrogram
rows. ``load_export`` and ``predict_export`` below load and blend them (the fold mean and blend of
``hms.predict``: ``hms.inference.fold_mean``, ``hms.blend.blend_members``; the TorchScript files
themselves need torch alone). ``load_export`` reads ``export.json`` through ``read_export``, which
bounds and checks it as ``hms.blend.read_ensemble`` checks ``ensemble.json`` (size, members,
files inside the folder and each once, weights, space, bias) before any file is loaded. The
checkpoints are loaded as ``hms.predict`` loads them
(``hms.backends.pytorch.load_member_checkpoint``), and the probabilities are ``HMSModule``'s
(``hms.models.module.probabilities``). Export checks each traced module against the checkpoint
on an example batch and refuses a mismatch.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from hms.blend import (
    FORMAT,
    INPUTS,
    MAX_FILES,
    MAX_MANIFEST_BYTES,
    blend_members,
    check_blend,
    check_member_files,
    object_field,
    read_json_bounded,
)
from hms.constants import SPEC_WINDOW_ROWS, WINDOW_SAMPLES
from hms.data.io import atomic_dir, check_output_dir, output_lock
from hms.data.montage import get_montage
from hms.errors import HMSDataError
from hms.inference import fold_mean, open_checkpoints
from hms.models.base import HMSNet
from hms.models.module import probabilities

EXPORT_FILE = "export.json"


class ProbabilityModel(nn.Module):
    """(eeg, spec) -> probabilities of one trained network: what ``HMSModule.predict_proba``
    computes (softmax, averaged with the left/right mirror when ``tta_flip``), without Lightning.
    """

    def __init__(self, net: HMSNet, tta_flip: bool) -> None:
        super().__init__()
        self.net = net.eval()
        self.tta_flip = bool(tta_flip)

    def forward(self, eeg: Tensor, spec: Tensor) -> Tensor:
        batch = {"eeg": eeg, "spec": spec}
        return probabilities(self.net, batch, self.tta_flip, self.net.montage)


def _quiet_jit_deprecation() -> None:
    """Inside a ``warnings.catch_warnings()`` block: torch 2.11 deprecates ``torch.jit``, whose
    files this export is by design (the ONNX export, docs/onnx.md, is the format without it)."""
    warnings.filterwarnings("ignore", r"`torch\.jit\.\w+` is deprecated", DeprecationWarning)


def export_ensemble(weights_dir: str | Path, out_dir: str | Path, atol: float = 1e-4) -> Path:
    """Trace every checkpoint of ``weights_dir`` into ``out_dir`` (built aside, then renamed).

    ``out_dir`` is checked first: it must be writable and, when it exists, be an earlier export
    (an ``export.json`` there) or empty, since the new folder replaces it whole."""
    weights_dir = Path(weights_dir)
    out_dir = check_output_dir(out_dir, weights_dir, "TorchScript export", EXPORT_FILE)
    weights = open_checkpoints(weights_dir)
    ensemble = weights.ensemble
    members: dict[str, Any] = {}
    with output_lock(out_dir, "export folder"), atomic_dir(out_dir) as tmp:
        for name, info in weights.members.items():
            files, inputs = [], None
            montage = get_montage(info.window.montage)
            gen = torch.Generator().manual_seed(0)
            eeg = 30 * torch.randn(2, montage.n_channels, WINDOW_SAMPLES, generator=gen)
            kaggle = torch.rand(2, SPEC_WINDOW_ROWS, 400, generator=gen) * 10
            for path in info.files:
                module = weights.backend.load(path, info, None).module
                wrapped = ProbabilityModel(module.net, module.hparams.tta_flip)
                with torch.no_grad():
                    expected = module.predict_proba({"eeg": eeg, "spec": kaggle})
                    with warnings.catch_warnings():  # shape-dependent Python branches are
                        warnings.simplefilter("ignore", torch.jit.TracerWarning)  # fixed here
                        _quiet_jit_deprecation()
                        traced = torch.jit.trace(wrapped, (eeg, kaggle), check_trace=False)
                    got = traced(eeg, kaggle)
                if not torch.allclose(got, expected, atol=atol):
                    err = (got - expected).abs().max().item()
                    raise HMSDataError(path, f"traced model differs by {err:.2e}")
                target = Path(name) / (path.stem + ".pt")
                (tmp / name).mkdir(exist_ok=True)
                traced.save(str(tmp / target))
                files.append(str(target))
                inputs = list(module.inputs)
            members[name] = {"files": files, "inputs": inputs, "data": ensemble.data.get(name, {})}
        manifest = {
            "format": 1,
            "name": ensemble.name,
            "space": ensemble.space,
            "weights": ensemble.weights,
            "bias": ensemble.bias,
            "members": members,
            "input_shapes": {
                "eeg": ["B", "channels of the member's montage", WINDOW_SAMPLES],
                "spec": ["B", 300, 400],
            },
        }
        (tmp / EXPORT_FILE).write_text(json.dumps(manifest, indent=2))
    return out_dir


# --------------------------------------------------------------------------- loading (torch only)


def read_export(out_dir: str | Path) -> dict[str, Any]:
    """``export.json`` of a TorchScript export folder, checked before any file is loaded: at
    most ``MAX_MANIFEST_BYTES``, the format, the blend (``hms.blend.check_blend``), each
    member's files (``.pt`` inside the folder, each once, present; at most ``MAX_FILES`` in all)
    and inputs. ``HMSDataError`` naming the file and the field otherwise."""
    out_dir = Path(out_dir)
    path = out_dir / EXPORT_FILE
    if not out_dir.is_dir():
        raise HMSDataError(out_dir, "export folder not found")
    if not path.is_file():
        raise HMSDataError(
            out_dir, f"no {EXPORT_FILE} in this folder (write one with python -m hms.export)"
        )
    raw = read_json_bounded(path, MAX_MANIFEST_BYTES, f"hms {EXPORT_FILE}")
    if not isinstance(raw, dict) or raw.get("format") != FORMAT:
        raise HMSDataError(path, f"not an hms TorchScript export of format {FORMAT}")
    members = object_field(raw, "members", path, "members")
    weights, space, bias = check_blend(raw, members, path)
    listed: list[str] = []
    for name, member in members.items():
        if not isinstance(member, dict):
            raise HMSDataError(path, f"member {name!r} must be an object with files and inputs")
        listed += check_member_files(path, out_dir, name, member.get("files"), ".pt", "TorchScript")
        inputs = member.get("inputs")
        if not isinstance(inputs, list) or not inputs or not all(i in INPUTS for i in inputs):
            raise HMSDataError(
                path, f"member {name!r}: inputs must be among {list(INPUTS)}, got "
                f"{str(inputs)[:100]}",
            )  # fmt: skip
    if len(listed) > MAX_FILES or len(set(listed)) != len(listed):
        raise HMSDataError(path, f"more than {MAX_FILES} files, or a file listed twice")
    return {**raw, "weights": weights, "space": space, "bias": bias}


def load_export(out_dir: str | Path, device: str = "cpu") -> tuple[dict, dict[str, list]]:
    """``(manifest, {member: [TorchScript modules]})`` of an export folder (``read_export``
    first). TorchScript files are programs: load only exports you made."""
    out_dir = Path(out_dir)
    manifest = read_export(out_dir)
    models = {}
    with warnings.catch_warnings():
        _quiet_jit_deprecation()
        for name, m in manifest["members"].items():
            models[name] = [
                torch.jit.load(str(out_dir / f), map_location=device) for f in m["files"]
            ]
    models = {name: [module.eval() for module in modules] for name, modules in models.items()}
    return manifest, models


@torch.no_grad()
def predict_export(
    manifest: dict, models: dict[str, list], eeg: Tensor, spec: Tensor
) -> np.ndarray:
    """The ensemble's probabilities (B, 6) for one batch: fold mean per member, then the blend
    of ``export.json`` (as ``hms.predict`` does)."""
    per_member = {}
    for name in manifest["weights"]:
        p = fold_mean([m(eeg, spec).double().cpu().numpy() for m in models[name]])
        per_member[name] = p / p.sum(axis=1, keepdims=True)
    return blend_members(per_member, manifest["weights"], manifest["space"], manifest.get("bias"))
