"""The synthetic HMS dataset: layout, determinism, label logic, the two views agreeing, and the
patterns and artefacts being physically present in the signals."""

from __future__ import annotations

import importlib
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import signal as sps

from hms.constants import (
    CONSENSUS_NAMES,
    EEG_CHANNELS,
    SPEC_COLUMNS,
    SUBMISSION_COLUMNS,
    TEST_COLUMNS,
    TRAIN_COLUMNS,
    VOTE_COLUMNS,
)
from hms.data.io import (
    read_eeg,
    read_sample_submission,
    read_spectrogram,
    read_test_csv,
    read_train_csv,
)
from hms.data.spectrogram import kaggle_spectrogram
from hms.errors import HMSDataError
from hms.synth import generate, get_preset
from hms.synth.artefacts import RAIL_UV
from hms.synth.background import pattern_scale
from hms.synth.fields import spectrogram_pairs
from hms.synth.labels import GRDA, LPD, LRDA, SEIZURE, kl_rows
from hms.synth.patterns import peak_factor
from hms.synth.plan import Event, Excerpt, make_plan, prototype
from hms.synth.render import render_excerpt

FS = 200


def _train(root: Path) -> pd.DataFrame:
    return read_train_csv(root / "train.csv")


# --------------------------------------------------------------------------- layout


def test_layout_and_columns(tiny):
    root, summary = tiny
    train = _train(root)
    assert list(pd.read_csv(root / "train.csv").columns) == list(TRAIN_COLUMNS)
    test = read_test_csv(root / "test.csv")
    assert list(pd.read_csv(root / "test.csv").columns) == list(TEST_COLUMNS)
    sub = read_sample_submission(root / "sample_submission.csv")
    assert list(sub.columns) == list(SUBMISSION_COLUMNS)
    assert sub["eeg_id"].tolist() == test["eeg_id"].tolist()
    assert np.allclose(sub[list(VOTE_COLUMNS)].to_numpy(), 1 / 6)
    for eeg_id in train["eeg_id"].unique():
        assert (root / "train_eegs" / f"{eeg_id}.parquet").is_file()
    for sid in train["spectrogram_id"].unique():
        assert (root / "train_spectrograms" / f"{sid}.parquet").is_file()
    assert len(list((root / "train_eegs").iterdir())) == train["eeg_id"].nunique()
    for _, row in test.iterrows():
        assert (root / "test_eegs" / f"{row.eeg_id}.parquet").is_file()
        assert (root / "test_spectrograms" / f"{row.spectrogram_id}.parquet").is_file()
    answers = pd.read_csv(root / "test_answers.csv")
    assert list(answers.columns) == list(SUBMISSION_COLUMNS)
    assert answers["eeg_id"].tolist() == test["eeg_id"].tolist()
    assert pd.api.types.is_integer_dtype(answers[list(VOTE_COLUMNS)].to_numpy())
    latent = pd.read_csv(root / "train_latent.csv")
    assert list(latent.columns) == ["label_id", *VOTE_COLUMNS]
    assert set(latent["label_id"]) == set(train["label_id"])
    meta = json.loads((root / "synth_meta.json").read_text())
    assert meta["preset"]["name"] == "tiny" and meta["seed"] == 0
    assert meta["summary"]["counts"]["train_rows"] == len(train) == summary["counts"]["train_rows"]
    assert summary["counts"]["train_eegs"] == get_preset("tiny").train_eegs
    assert summary["counts"]["train_spectrograms"] == get_preset("tiny").train_sessions


def test_ids_are_kaggle_like(tiny):
    root, _ = tiny
    train, test = _train(root), read_test_csv(root / "test.csv")
    eeg_ids = pd.concat([train["eeg_id"].drop_duplicates(), test["eeg_id"]])
    assert eeg_ids.is_unique and (eeg_ids > 0).all() and (eeg_ids < 2**32).all()
    spec_ids = pd.concat([train["spectrogram_id"].drop_duplicates(), test["spectrogram_id"]])
    assert spec_ids.is_unique and (spec_ids > 0).all() and (spec_ids < 2**31).all()
    assert train["label_id"].is_unique
    assert (train["patient_id"] < 65536).all()
    assert set(train["patient_id"]).isdisjoint(test["patient_id"])
    for key in ("eeg_id", "spectrogram_id"):
        sub = train.groupby(key, sort=False)[key.replace("_id", "_sub_id")]
        assert all((g.to_numpy() == np.arange(len(g))).all() for _, g in sub)
    per_patient = train.groupby("patient_id")["eeg_id"].nunique()
    assert (per_patient > 1).any()  # several EEGs per patient
    assert (train.groupby("spectrogram_id")["eeg_id"].nunique() > 1).any()


def test_votes_and_offsets(tiny):
    root, _ = tiny
    train = _train(root)
    votes = train[list(VOTE_COLUMNS)].to_numpy()
    assert (votes.sum(axis=1) >= 1).all() and (votes.sum(axis=1) <= 28).all()
    assert (train["expert_consensus"] == [CONSENSUS_NAMES[i] for i in votes.argmax(1)]).all()
    for col in ("eeg_label_offset_seconds", "spectrogram_label_offset_seconds"):
        off = train[col].to_numpy()
        assert off.dtype.kind == "f" and (off >= 0).all() and (off % 2 == 0).all()
    for eeg_id, g in train.groupby("eeg_id"):
        n = len(read_eeg(root / "train_eegs" / f"{eeg_id}.parquet"))
        assert (g["eeg_label_offset_seconds"] * FS + 10_000 <= n).all()
    for sid, g in train.groupby("spectrogram_id"):
        times, values = read_spectrogram(root / "train_spectrograms" / f"{sid}.parquet")
        assert times.dtype == np.int64 and (times == 1 + 2 * np.arange(len(times))).all()
        assert values.shape == (len(times), len(SPEC_COLUMNS)) and len(times) >= 300
        assert (g["spectrogram_label_offset_seconds"] / 2 + 300 <= len(times)).all()


def test_test_files(tiny):
    root, _ = tiny
    test = read_test_csv(root / "test.csv")
    assert len(test) == get_preset("tiny").test_eegs
    for row in test.itertuples():
        eeg = read_eeg(root / "test_eegs" / f"{row.eeg_id}.parquet")
        assert eeg.shape == (10_000, len(EEG_CHANNELS))
        times, values = read_spectrogram(
            root / "test_spectrograms" / f"{row.spectrogram_id}.parquet"
        )
        assert values.shape == (300, 400) and (times == np.arange(1, 600, 2)).all()
        # the spectrogram rows over the EEG are computed from it: spectrogram s = EEG s + 275
        tau = np.arange(4, 47, 2)
        _, expect = kaggle_spectrogram(eeg, tau.astype(float))
        np.testing.assert_allclose(values[(275 + tau - 1) // 2], expect, rtol=1e-5, atol=1e-6)


def test_spectrogram_rows_agree_with_eeg(tiny):
    root, _ = tiny
    train = _train(root)
    checked = 0
    for eeg_id, g in train.groupby("eeg_id"):
        row = g.iloc[0]
        s0 = row.spectrogram_label_offset_seconds - row.eeg_label_offset_seconds + 275
        eeg = read_eeg(root / "train_eegs" / f"{eeg_id}.parquet")
        _, values = read_spectrogram(root / "train_spectrograms" / f"{row.spectrogram_id}.parquet")
        tau = np.arange(4, len(eeg) // FS - 3, 2)
        _, expect = kaggle_spectrogram(eeg, tau.astype(float))
        got = values[(int(s0) + tau - 1) // 2]
        np.testing.assert_allclose(got, expect, rtol=1e-5, atol=1e-6)
        checked += len(tau)
    assert checked > 100


def test_surrogate_rows_continue_the_computed_ones(tiny):
    _, summary = tiny
    cont = summary["spectrogram_continuity"]
    assert cont["sessions_compared"] >= 10
    assert abs(cont["mean_log_ratio_computed_vs_surrogate"]) < 0.15
    assert 0.7 < cont["median_log_sd_surrogate"] / cont["median_log_sd_computed"] < 1.3


# --------------------------------------------------------------------------- labels


def test_latent_and_bayes_floor(tiny):
    root, summary = tiny
    train = _train(root)
    latent = pd.read_csv(root / "train_latent.csv").set_index("label_id").loc[train["label_id"]]
    lat = latent[list(VOTE_COLUMNS)].to_numpy()
    assert np.allclose(lat.sum(axis=1), 1.0) and (lat > 0).all()
    votes = train[list(VOTE_COLUMNS)].to_numpy()
    floor = kl_rows(votes, lat).mean()
    uniform = kl_rows(votes, np.full_like(lat, 1 / 6)).mean()
    assert np.isfinite(floor) and floor < 0.4 * uniform
    assert summary["bayes_floor_kl"]["train"] == pytest.approx(floor, abs=1e-4)
    test_lat = pd.read_csv(root / "test_latent.csv")[list(VOTE_COLUMNS)].to_numpy()
    answers = pd.read_csv(root / "test_answers.csv")[list(VOTE_COLUMNS)].to_numpy()
    assert np.allclose(test_lat.sum(axis=1), 1.0)
    assert (answers.sum(axis=1) >= 10).all()  # HMS's test: the 10-28 rater block
    # votes of one event are shared by its sub-windows: fewer distinct vote rows than rows
    assert train.groupby("eeg_id")[list(VOTE_COLUMNS)].nunique().max().max() >= 1
    assert len(train.drop_duplicates(["eeg_id", *VOTE_COLUMNS])) < len(train)


def test_class_balance_and_raters_on_labels_only(tmp_path):
    # patients cluster their events on a dominant class, so the share needs many patients
    bigger = {"train_patients": 600, "train_sessions": 2400, "train_eegs": 3600}
    summary = generate(
        tmp_path / "demo_labels", "demo", seed=3, labels_only=True, preset_overrides=bigger
    )
    assert not (tmp_path / "demo_labels" / "train_eegs").exists()
    share = summary["consensus_share"]
    target = {"Seizure": 0.20, "LPD": 0.14, "GPD": 0.16, "LRDA": 0.16, "GRDA": 0.18, "Other": 0.17}
    for name, t in target.items():
        assert abs(share[name] - t) < 0.07, (name, share)
    assert 0.45 < summary["rows_under_10_votes"] < 0.75
    assert 15_000 < summary["counts"]["train_rows"] < 30_000


# --------------------------------------------------------------------------- determinism, reuse


def test_deterministic_across_workers_and_seeds(tiny, tmp_path):
    root, _ = tiny
    again = tmp_path / "again"
    generate(again, preset="tiny", seed=0, workers=2, progress=False)
    assert (again / "train.csv").read_bytes() == (root / "train.csv").read_bytes()
    assert (again / "test_answers.csv").read_bytes() == (root / "test_answers.csv").read_bytes()
    train = _train(root)
    for eeg_id in train["eeg_id"].unique()[[0, -1]]:
        a = read_eeg(root / "train_eegs" / f"{eeg_id}.parquet")
        b = read_eeg(again / "train_eegs" / f"{eeg_id}.parquet")
        np.testing.assert_array_equal(a, b)
    sid = train["spectrogram_id"].iloc[-1]
    np.testing.assert_array_equal(
        read_spectrogram(root / "train_spectrograms" / f"{sid}.parquet")[1],
        read_spectrogram(again / "train_spectrograms" / f"{sid}.parquet")[1],
    )
    other = generate(tmp_path / "seed1", preset="tiny", seed=1, labels_only=True)
    assert other["counts"]["train_eegs"] == get_preset("tiny").train_eegs
    assert (tmp_path / "seed1" / "train.csv").read_bytes() != (root / "train.csv").read_bytes()


def test_skip_regenerate_and_refuse(tmp_path, monkeypatch):
    out = tmp_path / "d"
    first = generate(out, preset="tiny", seed=5, labels_only=True)
    assert first["skipped"] is False
    assert generate(out, preset="tiny", seed=5, labels_only=True)["skipped"] is True
    with pytest.raises(HMSDataError, match=r"another synthetic dataset \(preset 'tiny', seed 5\)"):
        generate(out, preset="tiny", seed=6, labels_only=True)
    assert (
        generate(out, preset="tiny", seed=6, labels_only=True, overwrite=True)["skipped"] is False
    )
    gen = importlib.import_module("hms.synth.generate")  # the module, not the function

    def crash(plan):
        raise RuntimeError("interrupted")

    with monkeypatch.context() as m:  # an interrupted run leaves a partial folder ...
        m.setattr(gen, "events_frame", crash)
        with pytest.raises(RuntimeError):
            generate(out, preset="tiny", seed=7, labels_only=True, overwrite=True)
    assert not (out / "synth_meta.json").exists()
    # ... which the next run regenerates without being asked to overwrite
    assert generate(out, preset="tiny", seed=7, labels_only=True)["skipped"] is False
    assert json.loads((out / "synth_meta.json").read_text())["seed"] == 7
    foreign = tmp_path / "kaggle"
    foreign.mkdir()
    (foreign / "train.csv").write_text("eeg_id\n1\n")
    with pytest.raises(HMSDataError, match=r"not empty and was not written by hms\.synth"):
        generate(foreign, preset="tiny", seed=0, labels_only=True)
    assert (foreign / "train.csv").read_text() == "eeg_id\n1\n"


def test_hydra_cli(tmp_path):
    out = tmp_path / "cli"
    proc = subprocess.run(
        [sys.executable, "-m", "hms.synth", f"out_dir={out}", "preset=tiny", "seed=2",
         "labels_only=true", "workers=1", "presets={tiny: {train_eegs: 20}}"],
        cwd=tmp_path, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert (out / "train.csv").is_file() and (out / "synth_meta.json").is_file()
    assert not (tmp_path / "outputs").exists() and not list(tmp_path.glob("*.log"))
    assert '"train_rows"' in proc.stdout
    meta = json.loads((out / "synth_meta.json").read_text())
    assert meta["preset"]["train_eegs"] == 20  # the documented presets={...} override applies


# --------------------------------------------------------------------------- physics


def _render_one(
    cls: int, side: int = -1, ratio: float = 3.0, seed: int = 0, event: bool = True
) -> np.ndarray:
    """An 80-s EEG of a tiny-preset patient with one event of class ``cls`` over 20-50 s
    (``event=False``: the same recording without it, the background drawn identically)."""
    plan = make_plan(get_preset("tiny"), 0)
    session = plan.train[0]
    rng = np.random.default_rng(seed)
    r = prototype(cls, rng)
    r["focus"] = (abs(r["focus"][0]) * side, r["focus"][1])
    r.update(amp=ratio * pattern_scale(session.patient) * peak_factor(r), phase=0.0, poly_delta=0.0)
    latent, votes = np.full(6, 1 / 6), np.zeros(6, int)
    ev = Event(cls, cls, 0.0, ratio, 0.0, latent, 1, votes, [0], 20.0, 50.0, r)
    ex = Excerpt(1, 80, 275, [ev] if event else [], [], -1)
    return render_excerpt(np.random.default_rng(seed + 100), session, ex)


def _bipolar(x: np.ndarray) -> np.ndarray:
    anode, cathode = spectrogram_pairs()
    return x[:, anode] - x[:, cathode]  # LL, RL, LP, RP x 4 pairs


def _psd(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return sps.welch(x, fs=FS, nperseg=1024, axis=0)


LEFT, RIGHT = np.r_[0:4, 8:12], np.r_[4:8, 12:16]


@pytest.mark.parametrize("seed", [0, 1])
def test_lrda_is_lateralised_delta_and_grda_symmetric(seed):
    # visibility 4, a clearly visible pattern: the ICU background's own power is mostly delta
    # too, so the in-band contrast of rhythmic delta is lower than its visibility (0.5-20 Hz)
    for cls, lateral in ((LRDA, True), (GRDA, False)):
        b = _bipolar(_render_one(cls, side=-1, ratio=4.0, seed=seed))[22 * FS : 48 * FS]
        f, p = _psd(b)
        delta = p[(f >= 0.5) & (f <= 4)].sum(axis=0)
        ratio = delta[LEFT].mean() / delta[RIGHT].mean()
        if lateral:
            assert ratio > 1.8, ratio
        else:
            assert 0.6 < ratio < 1.6, ratio


@pytest.mark.parametrize("seed", [0, 1])
def test_seizure_has_a_rhythmic_peak_above_background(seed):
    b = _bipolar(_render_one(SEIZURE, seed=seed))
    f, during = _psd(b[22 * FS : 48 * FS])
    _, after = _psd(b[55 * FS :])
    band = (f >= 2.5) & (f <= 12)
    gain = during[band].mean(axis=1) / after[band].mean(axis=1)
    assert gain.max() > 4.0, gain.max()


def test_lpd_discharges_are_sharp_and_lateral():
    b = _bipolar(_render_one(LPD, side=1, ratio=4.0, seed=2))[22 * FS : 48 * FS]
    quiet = _bipolar(_render_one(LPD, side=1, ratio=4.0, seed=2, event=False))[22 * FS : 48 * FS]
    power = (b**2).mean(axis=0)
    added = power - (quiet**2).mean(axis=0)  # what the discharges add (EKG leaks to one side)
    assert added[RIGHT].mean() > 1.8 * added[LEFT].mean()
    ch = RIGHT[np.argmax(power[RIGHT])]
    centred = b[:, ch] - b[:, ch].mean()
    kurtosis = (centred**4).mean() / (centred**2).mean() ** 2 - 3
    assert kurtosis > 0.5, kurtosis  # brief discharges on a quieter background: heavy tails


def test_artefacts_are_in_the_files(tiny):
    root, _ = tiny
    any_nan = any_flat = any_clip = False
    for path in sorted((root / "train_eegs").iterdir()):
        x = read_eeg(path)
        any_nan |= bool(np.isnan(x).any())
        finite = np.where(np.isfinite(x), x, np.nan)
        any_flat |= bool((np.nanmax(finite, 0) - np.nanmin(finite, 0) == 0).any())
        any_clip |= bool((np.abs(x) >= RAIL_UV - 0.01).any())
    assert any_nan and any_flat and any_clip
    spec_nan = any(
        np.isnan(read_spectrogram(p)[1]).any() for p in (root / "train_spectrograms").iterdir()
    )
    assert spec_nan
