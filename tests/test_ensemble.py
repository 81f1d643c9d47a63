"""Blending, weight fitting and ``hms.ensemble`` on OOF files in the format hms.train writes."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

import hms
from hms.blend import ENSEMBLE_FILE, blend, read_ensemble
from hms.cli import conf_dir
from hms.constants import VOTE_COLUMNS
from hms.data.labels import TARGET_COLUMNS
from hms.ensembling import INFERENCE_KEYS, build_ensemble, fit_weights, format_table
from hms.errors import HMSDataError
from hms.metrics import kl_divergence
from hms.runs import write_record

from .conftest import write_member_checkpoint


def dirichlet(rng, n, alpha=1.0):
    return rng.dirichlet(np.full(6, alpha), size=n)


def test_blend_spaces_and_bias():
    rng = np.random.default_rng(0)
    a, b = dirichlet(rng, 50), dirichlet(rng, 50)
    np.testing.assert_allclose(blend([a, b], [3, 1]), 0.75 * a + 0.25 * b, atol=1e-12)
    geo = a**0.75 * b**0.25
    np.testing.assert_allclose(blend([a, b], [0.75, 0.25], "log"), geo / geo.sum(1, keepdims=True))
    bias = np.log([2, 1, 1, 1, 1, 1])
    shifted = blend([a], [1], bias=bias)
    expected = a * [2, 1, 1, 1, 1, 1]
    np.testing.assert_allclose(shifted, expected / expected.sum(1, keepdims=True), atol=1e-12)
    for out in (blend([a, b], [1, 0], "log"), shifted):
        np.testing.assert_allclose(out.sum(axis=1), 1.0)
    with pytest.raises(ValueError, match="non-negative"):
        blend([a, b], [1, -1])
    with pytest.raises(ValueError, match="space"):
        blend([a], [1], "median")


def test_fit_weights_recovers_the_mixture_that_made_the_targets():
    rng = np.random.default_rng(1)
    a, b, c = dirichlet(rng, 400, 0.5), dirichlet(rng, 400, 0.5), dirichlet(rng, 400, 0.5)
    targets = 0.6 * a + 0.4 * b
    w, bias = fit_weights([a, b, c], targets)
    assert bias is None
    np.testing.assert_allclose(w, [0.6, 0.4, 0.0], atol=0.01)
    assert w.min() >= 0 and w.sum() == pytest.approx(1.0)
    # A per-class bias undoes a prediction shifted towards one class.
    shifted = blend([targets], [1], bias=np.log([4, 1, 1, 1, 1, 1]))
    _, bias = fit_weights([shifted], targets, fit_bias=True)
    fixed = blend([shifted], [1], bias=bias)
    assert kl_divergence(targets, fixed) < 1e-4 < kl_divergence(targets, shifted)


def write_runs(root: Path, model: str, folds, n=30, seed=0, quality=0.0, targets=None) -> Path:
    """Fold runs as hms.train leaves them: oof.parquet, best.ckpt, config.yaml, metrics.json and
    the completion record, per fold."""
    rng = np.random.default_rng(seed)
    if targets is None:
        targets = dirichlet(np.random.default_rng(123), n * len(folds))
    for k, fold in enumerate(folds):
        run = root / model / f"fold{fold}"
        run.mkdir(parents=True)
        rows = slice(k * n, (k + 1) * n)
        t = targets[rows]
        probs = (1 - quality) * dirichlet(rng, n) + quality * t
        frame = pd.DataFrame(
            {
                "sample_id": np.arange(k * n, (k + 1) * n),
                "eeg_id": 1000 + np.arange(k * n, (k + 1) * n),
                "patient_id": 7,
                "fold": fold,
            }
        )
        for i, col in enumerate(VOTE_COLUMNS):
            frame[col] = probs[:, i]
        for i, col in enumerate(TARGET_COLUMNS):
            frame[col] = t[:, i]
        frame["n_votes"] = np.where(np.arange(n) % 2, 12, 3)
        frame.to_parquet(run / "oof.parquet", index=False)
        write_member_checkpoint(model, run / "best.ckpt")
        cfg = OmegaConf.create(
            {
                "experiment_name": "test",
                "model": {"name": model},
                "fold": fold,
                "data": {"recording": {"low_hz": 0.5}, "window": {"midline": False}},
            }
        )
        OmegaConf.save(cfg, run / "config.yaml")
        (run / "metrics.json").write_text("{}")
        write_record(run, cfg, {"train_inputs": "test"})  # finished, as hms.train marks it
    return root


def compose_ensemble(tmp_path: Path, *overrides: str):
    with initialize_config_dir(str(conf_dir()), version_base="1.3"):
        return compose(
            "ensemble",
            overrides=[
                f"runs_dir={tmp_path / 'runs'}",
                f"weights_dir={tmp_path / 'weights'}",
                *overrides,
            ],
        )


def test_seed_ensemble_scores_fits_and_writes_a_weights_folder(tmp_path):
    runs = tmp_path / "runs"
    quality = {"effnet_b0": 0.8, "resnet1d_gru": 0.5, "multispec_b0": 0.3, "multispec_b1": 0.1}
    for i, (model, q) in enumerate(quality.items()):
        write_runs(runs, model, [0, 1], seed=i, quality=q)
    write_runs(runs, "features_gbm", [0, 1], seed=9, quality=0.95)  # the reference: the best
    cfg = compose_ensemble(tmp_path, "ensemble=seed", "fit_bias=true")
    summary = build_ensemble(cfg)
    table = {row["name"]: row for row in summary["table"]}
    assert set(quality) < set(table)
    members = [table[m]["kl"] for m in quality]
    assert members == sorted(members)  # the better member scores better
    fitted = summary["fitted_weights"]
    assert max(fitted, key=fitted.get) == "effnet_b0"
    assert sum(fitted.values()) == pytest.approx(1.0, abs=1e-3)
    # The feature baseline is scored (and is the best row here) but never blended.
    assert summary["references"] == ["features_gbm"] and table["features_gbm"]["reference"]
    assert table["features_gbm"]["kl"] < table["effnet_b0"]["kl"]
    assert fitted["features_gbm"] == 0.0 and summary["configured_weights"]["features_gbm"] == 0.0
    assert "features_gbm (reference)" in format_table(summary)
    assert table["blend: fitted, in-sample"]["kl"] <= table["blend: configured (seed)"]["kl"]
    assert "blend: fitted, CV by fold" in table
    assert "effnet_b0" in format_table(summary)

    spec = read_ensemble(tmp_path / "weights")
    assert spec.name == "seed" and spec.members == [*quality, "features_gbm"]
    assert spec.hms_version == hms.__version__  # what the Kaggle kit checks the weights by
    assert spec.checkpoints["resnet1d_gru"] == [
        "resnet1d_gru/fold0.ckpt",
        "resnet1d_gru/fold1.ckpt",
    ]
    copied = torch.load(tmp_path / "weights" / "resnet1d_gru" / "fold1.ckpt", weights_only=True)
    source = torch.load(runs / "resnet1d_gru" / "fold1" / "best.ckpt", weights_only=True)
    assert copied["hyper_parameters"] == source["hyper_parameters"]  # the run's weights, fold 1's,
    assert all(torch.equal(v, source["state_dict"][k]) for k, v in copied["state_dict"].items())
    assert set(copied) <= set(INFERENCE_KEYS)  # without training state
    assert spec.weights == pytest.approx(fitted, abs=1e-3) and spec.weights["features_gbm"] == 0
    assert spec.bias is not None and spec.data["effnet_b0"]["recording"] == {"low_hz": 0.5}
    oof = pd.read_parquet(tmp_path / "weights" / "oof_blend.parquet")
    assert len(oof) == 60 and np.allclose(oof[list(VOTE_COLUMNS)].sum(axis=1), 1.0)
    report = tmp_path / "weights" / "report"
    for name in ("per_class_kl", "confusion", "reliability", "kl_by_votes"):
        assert (report / f"{name}.png").stat().st_size > 10_000, name
    page = (report / "report.html").read_text()
    assert "blend (fitted, CV by fold)" in page and "multispec_b1" in page
    assert summary["report"] == str(report / "report.html")

    configured = build_ensemble(
        compose_ensemble(tmp_path, "ensemble=seed", "use=configured", "space=log")
    )
    assert read_ensemble(tmp_path / "weights").weights == pytest.approx(
        {
            "effnet_b0": 0.5,
            "resnet1d_gru": 0.15,
            "multispec_b0": 0.175,
            "multispec_b1": 0.175,
            "features_gbm": 0.0,
        }
    )
    assert configured["space"] == "log"
    assert not list(tmp_path.glob(".weights.*"))  # no building folder left behind


def test_members_must_cover_the_same_folds_and_samples(tmp_path):
    runs = tmp_path / "runs"
    write_runs(runs, "effnet_b0", [0, 1])
    write_runs(runs, "resnet1d_gru", [0])
    overrides = [
        "ensemble=seed",
        "~ensemble.members.multispec_b0",
        "~ensemble.members.multispec_b1",
        "~ensemble.members.features_gbm",
    ]
    with pytest.raises(
        HMSDataError, match=r"different folds: effnet_b0 \[0, 1\], resnet1d_gru \[0\]"
    ):
        build_ensemble(compose_ensemble(tmp_path, *overrides))
    with pytest.raises(HMSDataError, match=r"has no run for folds \[1\]"):
        build_ensemble(compose_ensemble(tmp_path, *overrides, "folds=[0,1]"))
    assert not (tmp_path / "weights").exists()  # an error writes nothing
    # folds=[0] uses the shared fold only
    assert build_ensemble(compose_ensemble(tmp_path, *overrides, "folds=[0]"))["folds"] == [0]

    other = tmp_path / "other"
    write_runs(other, "effnet_b0", [0], n=25)
    write_runs(other, "resnet1d_gru", [0], n=30)
    with pytest.raises(HMSDataError, match="fold 0: samples differ"):
        build_ensemble(compose_ensemble(tmp_path, *overrides, f"runs_dir={other}"))
    with pytest.raises(HMSDataError, match="has no run here"):
        build_ensemble(compose_ensemble(tmp_path, *overrides, f"runs_dir={tmp_path / 'none'}"))


def test_only_finished_unchanged_runs_are_ensembled(tmp_path):
    """A run without its completion record (killed, failed, or still running) or with an output
    changed after it finished is refused, with the reason; nothing is written."""
    runs = tmp_path / "runs"
    write_runs(runs, "effnet_b0", [0, 1])
    write_runs(runs, "resnet1d_gru", [0, 1])
    overrides = ["ensemble=duo", "~ensemble.members.features_gbm"]
    assert build_ensemble(compose_ensemble(tmp_path, *overrides))["folds"] == [0, 1]
    weights = tmp_path / "weights"
    before = (weights / "ensemble.json").read_bytes()

    fold1 = runs / "resnet1d_gru" / "fold1"
    record = (fold1 / "complete.json").read_bytes()
    (fold1 / "complete.json").unlink()  # as a run that was killed leaves its folder
    with pytest.raises(HMSDataError, match=r"unfinished runs: fold1: no completion record"):
        build_ensemble(compose_ensemble(tmp_path, *overrides))
    (fold1 / "complete.json").write_bytes(record)

    oof = pd.read_parquet(fold1 / "oof.parquet")
    oof.loc[0, VOTE_COLUMNS[0]] += 0.01  # same size, other content
    oof.to_parquet(fold1 / "oof.parquet", index=False)
    with pytest.raises(HMSDataError, match=r"fold1: oof.parquet changed after the run finished"):
        build_ensemble(compose_ensemble(tmp_path, *overrides))
    (fold1 / "best.ckpt").unlink()
    with pytest.raises(HMSDataError, match=r"fold1: best.ckpt is missing"):
        build_ensemble(compose_ensemble(tmp_path, *overrides))
    assert (weights / "ensemble.json").read_bytes() == before  # the old folder is untouched
    # The finished fold alone is still usable, by choice.
    assert build_ensemble(compose_ensemble(tmp_path, *overrides, "folds=[0]"))["folds"] == [0]


def test_read_ensemble_errors(tmp_path):
    with pytest.raises(HMSDataError, match="weights folder not found"):
        read_ensemble(tmp_path / "absent")
    with pytest.raises(HMSDataError, match=f"no {ENSEMBLE_FILE}"):
        read_ensemble(tmp_path)
    (tmp_path / ENSEMBLE_FILE).write_text("{not json")
    with pytest.raises(HMSDataError, match="not a readable JSON"):
        read_ensemble(tmp_path)
    good = {
        "format": 1,
        "name": "x",
        "space": "prob",
        "weights": {"a": 1.0},
        "bias": None,
        "members": {"a": {"checkpoints": ["a/fold0.ckpt"], "data": {}}},
    }
    (tmp_path / ENSEMBLE_FILE).write_text(json.dumps(good))
    with pytest.raises(HMSDataError, match=r"checkpoints not found: \['a/fold0.ckpt'\]"):
        read_ensemble(tmp_path)
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "fold0.ckpt").write_bytes(b"x")
    assert read_ensemble(tmp_path).checkpoints == {"a": ["a/fold0.ckpt"]}
    (tmp_path / ENSEMBLE_FILE).write_text(json.dumps({**good, "weights": {"b": 1.0}}))
    with pytest.raises(HMSDataError, match="do not match"):
        read_ensemble(tmp_path)
