"""The feature baseline: qEEG features against scipy, trees against LightGBM, and the member's
whole path (hms.train fits it, hms.ensemble scores it, hms.predict runs its checkpoint)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import lightgbm as lgb
import numpy as np
import pandas as pd
import pytest
import scipy.signal
import torch
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate

from hms.backends.pytorch import load_member_checkpoint
from hms.cli import conf_dir
from hms.constants import SAMPLE_RATE, VOTE_COLUMNS, WINDOW_SAMPLES
from hms.data.labels import TARGET_COLUMNS
from hms.ensembling import build_ensemble
from hms.metrics import kl_divergence
from hms.models.features import (
    BANDS,
    EEGFeatures,
    FeatureGBM,
    TreeEnsemble,
    lightgbm_trees,
    soft_label_rows,
    welch_psd,
)
from hms.models.module import predict_loader
from hms.submission import predict
from hms.training import train

from .conftest import compose_train


def test_welch_psd_equals_scipy():
    x = np.random.default_rng(0).normal(0, 20, (3, 2000))
    for nperseg in (400, 256, 101):
        ours = welch_psd(torch.from_numpy(x), nperseg).numpy()
        _, ref = scipy.signal.welch(x, SAMPLE_RATE, "hann", nperseg, detrend=False)
        np.testing.assert_allclose(ours, ref, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("exporting", [False, True])
def test_segments_are_unfolds_also_as_exported(exporting, monkeypatch):
    """The exported graph builds the half-overlapping segments by reshapes (no Gather): the very
    values of ``unfold``, at any length."""
    from hms.models.features import _segments

    monkeypatch.setattr(torch.compiler, "is_exporting", lambda: exporting)
    x = torch.randn(2, 3, 10150)
    for t in (10000, 10001, 10150, 400, 401, 799):
        for nperseg, step in ((400, 200), (64, 32), (401, 201), (400, 100)):
            if t >= nperseg:
                expected = x[..., :t].unfold(-1, nperseg, step)
                assert torch.equal(_segments(x[..., :t], nperseg, step), expected)


def test_autocorrelation_by_the_basis_is_the_inverse_fft():
    """The first lags of the autocorrelation as one matrix product (``acf_basis``) equal
    ``irfft`` of the power spectrum, and the peak it finds is a sine's period."""
    from hms.models.features import _autocorr_peak, acf_basis

    x = torch.randn(3, 1000, dtype=torch.float64)
    spec = torch.fft.rfft(x, n=2048)
    power = spec.real.square() + spec.imag.square()
    expected = torch.fft.irfft(power, n=2048)[..., :151]
    got = power @ acf_basis(2048, 150).double()
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5 * float(expected.abs().max()))
    t = torch.arange(1000) / 50.0
    value, lag = _autocorr_peak(torch.sin(2 * math.pi * 0.8 * t)[None], 50.0, 0.25, 3.0)
    assert abs(float(lag) - 1.25) <= 0.02 and float(value) > 0.9


def _window(left: np.ndarray, right: np.ndarray) -> torch.Tensor:
    """(1, 16, T): every left-hemisphere derivation carries ``left``, every right one ``right``."""
    x = np.zeros((16, WINDOW_SAMPLES))
    x[[0, 1, 2, 3, 4, 5, 6, 7]] = left
    x[[8, 9, 10, 11, 12, 13, 14, 15]] = right
    return torch.from_numpy(x).float()[None]


def _named(f: EEGFeatures, x: torch.Tensor) -> dict[str, float]:
    return dict(zip(f.names, f(x)[0].tolist(), strict=True))


def test_features_read_band_side_and_period():
    f = EEGFeatures()
    names = f.names
    assert len(names) == len(set(names)) == f.n_features
    t = np.arange(WINDOW_SAMPLES) / SAMPLE_RATE
    noise = np.random.default_rng(1).normal(0, 1, (2, WINDOW_SAMPLES))
    # A 1.5-Hz rhythm over the left hemisphere only, low noise on the right.
    x = _window(50 * np.sin(2 * np.pi * 1.5 * t) + noise[0], noise[1])
    feats = _named(f, x)
    assert feats.keys() == set(names)
    band = f"{BANDS[1][0]:g}-{BANDS[1][1]:g}Hz"  # 1-2 Hz
    assert feats[f"relpow10s_LL_{band}"] > 0.75  # the Hann window leaks a quarter to each side
    assert feats[f"relpow10s_RL_{band}"] < 0.3
    assert feats[f"asym10s_LL-RL_{band}"] > 5  # log power ratio left / right
    assert feats["peakfreq10s_LL"] == pytest.approx(1.5)
    assert feats["acf_signal_lag_LL"] == pytest.approx(1 / 1.5, abs=0.03)
    assert feats["acf_signal_peak_LL"] > 0.9
    # The mirror image swaps the sides: the signed asymmetry changes sign.
    mirror = _named(f, _window(noise[1], 50 * np.sin(2 * np.pi * 1.5 * t)))
    assert mirror[f"asym10s_LL-RL_{band}"] < -5
    # Periodic sharp discharges every 0.8 s: a peaked, spiky signal whose energy repeats.
    spikes = np.zeros(WINDOW_SAMPLES)
    spikes[:: int(0.8 * SAMPLE_RATE)] = 1.0
    discharge = np.convolve(spikes, 200 * scipy.signal.windows.gaussian(15, 3), "same")
    feats = _named(f, _window(discharge + noise[0], discharge + noise[1]))
    assert feats["kurtosis10s_LL"] > 3
    assert feats["acf_energy_lag_LP"] == pytest.approx(0.8, abs=0.03)
    assert feats["lrcorr10s_LL-RL"] > 0.9  # the same discharges on both sides: generalised


def test_features_are_finite_on_flat_and_empty_windows():
    f = EEGFeatures()
    x = torch.zeros(2, 16, WINDOW_SAMPLES)
    x[1, :8] = 30 * torch.randn(8, WINDOW_SAMPLES)  # one hemisphere flat
    assert torch.isfinite(f(x)).all()
    with pytest.raises(ValueError, match="EEG of montage 'double_banana'"):
        f(torch.zeros(1, 16, 500))


@pytest.fixture(scope="module")
def booster_and_data():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(600, 12)).astype(np.float32)
    logits = np.stack([x[:, k] - 0.5 * x[:, (k + 3) % 12] for k in range(6)], axis=1)
    target = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    fx, fy, fw, _ = soft_label_rows(x, target, np.ones(len(x)))
    params = {"objective": "multiclass", "num_class": 6, "num_leaves": 7, "verbose": -1}
    booster = lgb.train(params, lgb.Dataset(fx, fy, weight=fw), num_boost_round=30)
    return booster, x


def test_tree_ensemble_equals_lightgbm(booster_and_data, tmp_path):
    booster, x = booster_and_data
    trees, classes = lightgbm_trees(booster)
    assert len(trees) == 30 * 6 and set(classes) == set(range(6))
    model = TreeEnsemble(6)
    model.set_trees(trees, classes)
    expected = booster.predict(x, raw_score=True)
    got = model(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(got, expected, rtol=1e-9, atol=1e-9)
    # A fresh module takes its table shapes from the state dict (what a checkpoint load does).
    torch.save(model.state_dict(), tmp_path / "trees.pt")
    fresh = TreeEnsemble(6)
    fresh.load_state_dict(torch.load(tmp_path / "trees.pt", weights_only=True))
    np.testing.assert_allclose(fresh(torch.from_numpy(x)).numpy(), expected, atol=1e-9)
    with pytest.raises(RuntimeError, match="no trees"):
        TreeEnsemble(6)(torch.from_numpy(x))


def test_soft_label_rows_give_the_cross_entropy():
    target = np.array([[0.5, 0.5, 0, 0, 0, 0], [0, 0, 0, 0, 0, 1.0]])
    x = np.arange(4.0).reshape(2, 2)
    fx, cls, w, row = soft_label_rows(x, target, np.array([1.0, 2.0]))
    assert cls.tolist() == [0, 1, 5] and row.tolist() == [0, 0, 1]
    np.testing.assert_allclose(w, [0.5, 0.5, 2.0])
    np.testing.assert_array_equal(fx, x[[0, 0, 1]])


def test_vote_weight_trusts_the_many_rater_targets():
    """Identical windows, one-rater targets saying class 0 and twenty-rater targets saying class
    1: weighted by n / (n + k), the fit leans to what the many raters said."""
    rng = np.random.default_rng(0)
    n = 400
    few = np.arange(n) % 2 == 0
    target = np.zeros((n, 6))
    target[few, 0], target[~few, 1] = 1.0, 1.0
    data = {
        "features": rng.normal(size=(n, 4)).astype(np.float32),
        "index": np.arange(n),
        "target": target,
        "n_votes": np.where(few, 1.0, 20.0),
    }
    groups = {i: i % 20 for i in range(n)}
    probs = {}
    for k in (None, 10.0):
        model = FeatureGBM(max_rounds=20, early_stopping_rounds=5, valid_share=0.0,
                           min_data_in_leaf=5, vote_weight=k)  # fmt: skip
        model.fit(data, groups)
        probs[k] = torch.softmax(model.trees(torch.from_numpy(data["features"])), -1).numpy()
    assert probs[None][:, 1].mean() == pytest.approx(0.5, abs=0.05)  # equal weights: a tie
    assert probs[10.0][:, 1].mean() > probs[10.0][:, 0].mean() + 0.3


def _fit_baseline(tiny, tmp_path: Path, fold: int, *extra: str):
    root, _ = tiny
    cfg = compose_train(
        tmp_path, root, "model=features_gbm", f"fold={fold}", "model.net.max_rounds=60",
        "model.net.early_stopping_rounds=10", "model.net.min_data_in_leaf=5", *extra,
    )  # fmt: skip
    return cfg, train(cfg)


def test_baseline_fits_and_predicts_through_the_member_path(tiny, tmp_path):
    cfg, metrics = _fit_baseline(tiny, tmp_path, 0)
    run = Path(cfg.run_dir)
    assert set(metrics["stages"]) == {"stage1"}  # fitted once: no second stage, no epochs
    assert metrics["fit"]["rounds"] >= 1 and metrics["fit"]["n_samples"] == metrics["n_train"]
    oof = pd.read_parquet(run / "oof.parquet")
    probs = oof[list(VOTE_COLUMNS)].to_numpy()
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-6)
    assert np.ptp(probs, axis=0).max() > 0.01  # the trees tell samples apart
    targets = oof[list(TARGET_COLUMNS)].to_numpy()
    assert metrics["final"]["val/kl"] == pytest.approx(kl_divergence(targets, probs), rel=1e-6)

    # The checkpoint goes through the loader every member goes through, and predicts the same.
    module = load_member_checkpoint(run / "best.ckpt", "features_gbm")
    assert isinstance(module.net, FeatureGBM) and module.net.trees.n_trees > 0
    dm = instantiate(cfg.data)
    dm.setup()
    index, again = predict_loader(module, dm.val_dataloader())
    np.testing.assert_array_equal(
        dm.train_cache.samples["sample_id"].to_numpy()[index], oof["sample_id"].to_numpy()
    )
    np.testing.assert_allclose(again, probs, atol=1e-6)


def test_baseline_is_a_reference_row_of_the_ensemble_and_predicts(tiny, tmp_path):
    """The seed ensemble lists the baseline with blend: false: scored, written and predicted,
    with weight 0 in every blend."""
    root, _ = tiny
    runs = {}
    for fold in (0, 1, 2):
        cfg, _ = _fit_baseline(tiny, tmp_path, fold)
        runs[fold] = Path(cfg.run_dir)
        res = compose_train(
            tmp_path, root, "model=resnet1d_gru", f"fold={fold}", "model.net.stem_channels=4",
            "model.net.stem_kernels=[3,7]", "model.net.block_channels=[8,8,8,8,8]",
            "model.net.gru_hidden=8", "model.net.gru_layers=1", "debug=fast",
        )  # fmt: skip
        train(res)
    runs_dir = runs[0].parent.parent
    with initialize_config_dir(str(conf_dir()), version_base="1.3"):
        ecfg = compose(
            "ensemble",
            overrides=[
                f"runs_dir={runs_dir}",
                f"weights_dir={tmp_path / 'weights'}",
                "report=false",
                "ensemble.name=t",
                "~ensemble.members",
                "+ensemble.members={resnet1d_gru: {weight: 1.0}, features_gbm: {blend: false}}",
            ],
        )
    summary = build_ensemble(ecfg)
    assert summary["references"] == ["features_gbm"]
    assert summary["fitted_weights"]["features_gbm"] == 0.0
    assert summary["configured_weights"]["features_gbm"] == 0.0
    row = next(r for r in summary["table"] if r["name"] == "features_gbm")
    assert row["reference"] is True
    spec = json.loads((tmp_path / "weights" / "ensemble.json").read_text())
    assert spec["weights"]["features_gbm"] == 0.0
    sub, members = predict(
        root, tmp_path / "weights", tmp_path / "sub.csv", progress=False, return_members=True
    )
    assert set(members) == {"resnet1d_gru", "features_gbm"}
    # Weight 0: the submission is the resnet's prediction alone.
    np.testing.assert_allclose(sub[list(VOTE_COLUMNS)].to_numpy(), members["resnet1d_gru"])
