"""hms.plot: one sample (built-in data with a trained ensemble, the real Kaggle test files), the
ensemble report's numbers, the command line."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from hms.data.sample import load_sample
from hms.errors import HMSDataError
from hms.metrics import kl_divergence, normalize_votes
from hms.report import _confusion, _kl_by_votes, per_class_kl, sample_figure


def test_per_class_terms_sum_to_the_kl():
    rng = np.random.default_rng(0)
    votes = rng.integers(0, 5, size=(50, 6)).astype(float)
    votes[:, 0] += 1  # every row has a vote
    probs = rng.dirichlet(np.ones(6), size=50)
    terms = per_class_kl(votes, probs)
    assert terms.sum() == pytest.approx(kl_divergence(normalize_votes(votes), probs))
    m = _confusion(votes, probs)
    assert np.allclose(m.sum(axis=1)[np.bincount(votes.argmax(1), minlength=6) > 0], 1.0)
    by_votes = _kl_by_votes(votes, probs)
    assert sum(n for _, n in by_votes) == len(votes)


def test_sample_figure_with_an_ensemble(tiny, weights, tmp_path):
    root, _ = tiny
    sample = load_sample(root)  # the train row with the most votes
    assert sample["split"] == "train" and sample["votes"].sum() > 0
    out = sample_figure(root, sample["eeg_id"], tmp_path / "s.png", weights_dir=weights)
    assert out.stat().st_size > 50_000
    test_id = int(pd.read_csv(root / "test.csv")["eeg_id"].iloc[0])
    assert load_sample(root, test_id)["split"] == "test"


def test_sample_of_the_real_kaggle_test_files(kaggle_dir, tmp_path):
    sample = load_sample(kaggle_dir, 3911565283)
    assert sample["split"] == "test" and sample["votes"] is None
    assert "853520.parquet" in sample["spec_source"]
    assert np.isfinite(sample["spec"]).any()
    assert sample_figure(kaggle_dir, 3911565283, tmp_path / "k.png").stat().st_size > 50_000
    with pytest.raises(HMSDataError, match=r"train\.csv: has no label rows: choose .*eeg_id=N"):
        load_sample(kaggle_dir)  # the real train.csv is a header without rows


def test_cli_and_unknown_id(kaggle_dir, tmp_path):
    out = tmp_path / "k.png"
    cmd = [sys.executable, "-m", "hms.plot", "sample", f"data_dir={kaggle_dir}"]
    done = subprocess.run([*cmd, "eeg_id=3911565283", f"out={out}"], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert out.is_file()
    other = tmp_path / "x.png"
    done = subprocess.run([*cmd, "eeg_id=1", f"out={other}"], capture_output=True, text=True)
    assert done.returncode == 2 and "eeg_id 1 is in neither train.csv nor test.csv" in done.stderr
    assert not other.exists()
    done = subprocess.run([*cmd, "eeg_id=1", f"out={out}.x"], capture_output=True, text=True)
    assert done.returncode == 2 and "unknown picture format '.x'" in done.stderr  # checked first
