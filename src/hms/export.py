"""``python -m hms.export weights_dir=DIR out_dir=DIR``: an ensemble as TorchScript files.

Every fold checkpoint of a weights folder (``hms.ensemble``) becomes a TorchScript module that
maps the model inputs to the six class probabilities — the on-device spectrograms, the
normalisation (dataset statistics included) and the left/right-flip TTA are inside it — so a
Kaggle notebook can run the ensemble with ``torch`` alone::

    out_dir/
        export.json              weights, blend space and bias, and per member: its files, the
                                 inputs it reads and the preprocessing settings of its training
        <member>/fold<k>.pt      torch.jit.load(...)(eeg, spec) -> (B, 6) probabilities

Inputs are what ``hms.data.dataset.CacheDataset`` serves: ``eeg`` (B, 16|18, 10000) filtered
bipolar microvolts and ``spec`` (B, 300, 400) Kaggle spectrogram rows. ``load_export`` and
``predict_export`` below load and blend them (the same ``hms.blend.blend`` as ``hms.predict``;
the TorchScript files themselves need torch alone). Export checks each
traced module against the checkpoint on an example batch and refuses a mismatch.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig
from torch import Tensor, nn

from hms.blend import blend, read_ensemble
from hms.cli import hydra_main
from hms.constants import SPEC_WINDOW_ROWS, WINDOW_SAMPLES
from hms.data.io import atomic_dir
from hms.errors import HMSDataError
from hms.transforms.augment import flip_batch

EXPORT_FILE = "export.json"


class ProbabilityModel(nn.Module):
    """(eeg, spec) -> probabilities of one trained network: what ``HMSModule.predict_proba``
    computes (softmax, averaged with the left/right mirror when ``tta_flip``), without Lightning.
    """

    def __init__(self, net: nn.Module, tta_flip: bool) -> None:
        super().__init__()
        self.net = net.eval()
        self.tta_flip = bool(tta_flip)

    def forward(self, eeg: Tensor, spec: Tensor) -> Tensor:
        batch = {"eeg": eeg, "spec": spec}
        probs = torch.softmax(self.net(batch).float(), dim=-1)
        if self.tta_flip:
            probs = 0.5 * (probs + torch.softmax(self.net(flip_batch(batch)).float(), dim=-1))
        return probs


def export_ensemble(weights_dir: str | Path, out_dir: str | Path, atol: float = 1e-4) -> Path:
    """Trace every checkpoint of ``weights_dir`` into ``out_dir`` (built aside, then renamed)."""
    from hms.models.module import HMSModule

    spec = read_ensemble(weights_dir)
    weights_dir, out_dir = Path(weights_dir), Path(out_dir)
    members: dict[str, Any] = {}
    with atomic_dir(out_dir) as tmp:
        for name in spec.members:
            files, inputs = [], None
            midline = bool(spec.data.get(name, {}).get("window", {}).get("midline", False))
            channels = 18 if midline else 16
            gen = torch.Generator().manual_seed(0)
            eeg = 30 * torch.randn(2, channels, WINDOW_SAMPLES, generator=gen)
            kaggle = torch.rand(2, SPEC_WINDOW_ROWS, 400, generator=gen) * 10
            for rel in spec.checkpoints[name]:
                module = HMSModule.load_from_checkpoint(
                    weights_dir / rel, map_location="cpu", weights_only=True
                )
                module.eval()
                wrapped = ProbabilityModel(module.net, module.hparams.tta_flip)
                with torch.no_grad():
                    expected = module.predict_proba({"eeg": eeg, "spec": kaggle})
                    with warnings.catch_warnings():  # shape-dependent Python branches are
                        warnings.simplefilter("ignore", torch.jit.TracerWarning)  # fixed here
                        traced = torch.jit.trace(wrapped, (eeg, kaggle), check_trace=False)
                    got = traced(eeg, kaggle)
                if not torch.allclose(got, expected, atol=atol):
                    err = (got - expected).abs().max().item()
                    raise HMSDataError(weights_dir / rel, f"traced model differs by {err:.2e}")
                target = Path(name) / (Path(rel).stem + ".pt")
                (tmp / name).mkdir(exist_ok=True)
                traced.save(str(tmp / target))
                files.append(str(target))
                inputs = list(module.inputs)
            members[name] = {"files": files, "inputs": inputs, "data": spec.data.get(name, {})}
        manifest = {
            "format": 1,
            "name": spec.name,
            "space": spec.space,
            "weights": spec.weights,
            "bias": spec.bias,
            "members": members,
            "input_shapes": {"eeg": ["B", "16|18", WINDOW_SAMPLES], "spec": ["B", 300, 400]},
        }
        (tmp / EXPORT_FILE).write_text(json.dumps(manifest, indent=2))
    return out_dir


# --------------------------------------------------------------------------- loading (torch only)


def load_export(out_dir: str | Path, device: str = "cpu") -> tuple[dict, dict[str, list]]:
    """``(manifest, {member: [TorchScript modules]})`` of an export folder."""
    out_dir = Path(out_dir)
    manifest = json.loads((out_dir / EXPORT_FILE).read_text())
    models = {
        name: [torch.jit.load(str(out_dir / f), map_location=device).eval() for f in m["files"]]
        for name, m in manifest["members"].items()
    }
    return manifest, models


@torch.no_grad()
def predict_export(
    manifest: dict, models: dict[str, list], eeg: Tensor, spec: Tensor
) -> np.ndarray:
    """The ensemble's probabilities (B, 6) for one batch: fold mean per member, then the blend
    of ``export.json`` (``hms.blend.blend``, as ``hms.predict`` does)."""
    names = list(manifest["weights"])
    per_member = []
    for name in names:
        p = np.mean([m(eeg, spec).double().cpu().numpy() for m in models[name]], axis=0)
        per_member.append(p / p.sum(axis=1, keepdims=True))
    weights = [manifest["weights"][n] for n in names]
    return blend(per_member, weights, manifest["space"], manifest.get("bias"))


@hydra_main("export")
def main(cfg: DictConfig) -> None:
    out = export_ensemble(cfg.weights_dir, cfg.out_dir)
    manifest = json.loads((out / EXPORT_FILE).read_text())
    n = sum(len(m["files"]) for m in manifest["members"].values())
    print(f"exported {n} TorchScript modules of {len(manifest['members'])} members to {out}")


if __name__ == "__main__":
    main()
