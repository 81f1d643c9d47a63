"""The backend seam (hms.backends.base): a new kind of weights folder is one class and one
``register_backend`` call, here a toy backend whose fold files are numpy arrays of six logits;
``hms.predict`` then reads, checks and runs such a folder like hms's own."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from hms.backends.base import BACKENDS, BackendKind, backend_kind, register_backend
from hms.blend import ENSEMBLE_FILE, FORMAT, read_ensemble
from hms.constants import VOTE_COLUMNS
from hms.data.preprocess import RecordingSettings, WindowSettings
from hms.errors import HMSDataError
from hms.submission import predict


class ToyFold:
    """Every window gets the softmax of the file's six logits."""

    inputs = ("eeg",)
    network = None

    def __init__(self, logits: np.ndarray) -> None:
        self.probs = np.exp(logits - logits.max()) / np.exp(logits - logits.max()).sum()

    def __call__(self, batch):
        return np.tile(self.probs, (len(batch["eeg"]), 1))


class ToyBackend:
    name, suffix, file_kind, builder = "toy", ".npy", "logits file", "the toy backend's test"

    def __init__(self, device: str, precision) -> None:
        self.device, self.precision = "cpu", "32"

    def check(self, path: Path, member) -> None:
        if np.load(path).shape != (6,):
            raise HMSDataError(path, "a toy fold file holds six logits")

    def check_folder(self, folder: Path) -> None:
        pass

    def load(self, path: Path, member, tta_flip) -> ToyFold:
        return ToyFold(np.load(path))

    def release(self) -> None:
        pass


@pytest.fixture
def toy():
    kind = register_backend(BackendKind("toy", ".npy", ToyBackend, title="toy"))
    yield kind
    BACKENDS.pop("toy")


def toy_folder(folder: Path, logits: dict[str, list[float]], files=None) -> Path:
    folder.mkdir()
    members = {}
    for name, values in logits.items():
        (folder / name).mkdir()
        np.save(folder / name / "fold0.npy", np.array(values))
        members[name] = {
            "checkpoints": files or [f"{name}/fold0.npy"],
            "data": {"recording": asdict(RecordingSettings()),
                     "window": asdict(WindowSettings())},
        }  # fmt: skip
    manifest = {"format": FORMAT, "name": "toy", "space": "prob", "backend": "toy",
                "weights": {m: 1.0 / len(logits) for m in logits}, "members": members}  # fmt: skip
    (folder / ENSEMBLE_FILE).write_text(json.dumps(manifest))
    return folder


def test_a_registered_backend_runs_through_predict(toy, tiny, tmp_path):
    root, _ = tiny
    a, b = [0.0, 1.0, 2.0, 0.0, 0.0, -1.0], [1.0, 0.0, 0.0, 0.0, 3.0, 0.0]
    folder = toy_folder(tmp_path / "weights", {"a": a, "b": b})
    assert read_ensemble(folder).backend == "toy"
    sub = predict(root, folder, tmp_path / "submission.csv", device="cpu", progress=False)
    want = (ToyFold(np.array(a)).probs + ToyFold(np.array(b)).probs) / 2
    assert len(sub) == len(pd.read_csv(root / "test.csv"))
    np.testing.assert_allclose(sub[list(VOTE_COLUMNS)].to_numpy(), np.tile(want, (len(sub), 1)),
                               atol=1e-6)  # fmt: skip


def test_the_registry_checks_the_toy_folder_as_its_own(toy, tiny, tmp_path):
    foreign = toy_folder(tmp_path / "foreign", {"a": [0.0] * 6}, files=["a/fold0.ckpt"])
    with pytest.raises(HMSDataError, match=r"\.npy"):
        read_ensemble(foreign)  # the toy kind's files end in .npy
    bad = toy_folder(tmp_path / "bad", {"a": [0.0] * 5})
    with pytest.raises(HMSDataError, match="a toy fold file holds six logits"):
        predict(tiny[0], bad, None, device="cpu", progress=False)
    with pytest.raises(ValueError, match="already registered"):
        register_backend(BackendKind("toy", ".npz", ToyBackend))
    with pytest.raises(ValueError, match=r"end in '\.ckpt'"):
        register_backend(BackendKind("other", ".ckpt", ToyBackend))


def test_an_unknown_backend_names_the_known_ones():
    with pytest.raises(HMSDataError, match=r"unknown backend 'tensorrt'; known: \['onnx', 'torch'"):
        backend_kind("tensorrt")
