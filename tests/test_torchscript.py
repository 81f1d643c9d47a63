"""The TorchScript export (hms.torchscript, python -m hms.export format=torchscript): its files run
with torch alone and give hms.predict's probabilities."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from torch.utils.data import default_collate

from hms.blend import read_ensemble
from hms.constants import VOTE_COLUMNS
from hms.data.cache import HMSCache, build_cache
from hms.data.dataset import CacheDataset
from hms.data.preprocess import RecordingSettings, WindowSettings
from hms.submission import predict
from hms.torchscript import EXPORT_FILE, export_ensemble, load_export, predict_export
from tests.conftest import WEIGHTS


def test_torchscript_export_reproduces_predict(weights, tiny, tmp_path):
    """hms.torchscript (python -m hms.export): TorchScript modules + export.json, run with torch
    alone, give predict's probabilities on the same inputs."""
    root, _ = tiny
    cache_dir = tmp_path / "cache"
    sub = predict(root, weights, tmp_path / "sub.csv", device="cpu", cache_dir=cache_dir)
    out = export_ensemble(weights, tmp_path / "export")
    manifest = json.loads((out / EXPORT_FILE).read_text())
    assert manifest["weights"] == WEIGHTS
    assert manifest["members"]["resnet1d_gru"]["files"] == [
        "resnet1d_gru/fold0.pt", "resnet1d_gru/fold1.pt",
    ]  # fmt: skip
    manifest, models = load_export(out)
    data = read_ensemble(weights).data["resnet1d_gru"]
    cache = HMSCache(
        build_cache(root, cache_dir, "test", RecordingSettings(**data["recording"]), progress=False)
    )
    ds = CacheDataset(cache, window=WindowSettings(**data["window"]))
    batch = default_collate([ds[i] for i in range(len(ds))])
    probs = predict_export(manifest, models, batch["eeg"], batch["spec"])
    np.testing.assert_allclose(probs, sub[list(VOTE_COLUMNS)].to_numpy(), atol=1e-5)
    assert not list(tmp_path.glob(".export.*"))


@pytest.mark.slow
def test_every_family_with_flip_tta_exports_and_reproduces_predict(family_run, tmp_path):
    """A weights folder of every family (the main command's, flip TTA on) exports, and its
    modules reproduce each member's prediction of hms.predict on the built-in test split."""
    weights, data = family_run["weights"], family_run["data"]
    _, members = predict(data, weights, None, device="cpu", return_members=True, progress=False)
    out = export_ensemble(weights, tmp_path / "export")
    manifest, models = load_export(out)
    ensemble = read_ensemble(weights)
    for name in ensemble.members:
        settings = ensemble.data[name]
        cache = HMSCache(
            build_cache(
                data, tmp_path / "cache", "test", RecordingSettings(**settings["recording"]),
                progress=False, missing_spectrograms="compute",
            )
        )  # fmt: skip
        ds = CacheDataset(cache, window=WindowSettings.from_dict(settings["window"]))
        batch = default_collate([ds[i] for i in range(len(ds))])
        with torch.no_grad():
            folds = [m(batch["eeg"], batch["spec"]).double().numpy() for m in models[name]]
        probs = np.mean(folds, axis=0)
        np.testing.assert_allclose(probs, members[name], atol=1e-5, err_msg=name)
    assert manifest["weights"] == json.loads((out / EXPORT_FILE).read_text())["weights"]
    assert manifest["weights"] == ensemble.weights
