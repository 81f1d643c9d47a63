"""The metric against an independent copy of the Kaggle scorer, and the score command."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from hms.constants import VOTE_COLUMNS
from hms.errors import HMSDataError
from hms.metrics import (
    kl_divergence,
    prior_prediction,
    score_files,
    score_frames,
    uniform_prediction,
)


def kaggle_reference(solution: pd.DataFrame, submission: pd.DataFrame) -> float:
    """The competition's scorer, written out the way the public metric notebook computes it."""
    solution = solution.drop(columns="eeg_id").astype(float)
    submission = submission.drop(columns="eeg_id").astype(float)
    solution = solution.div(solution.sum(axis=1), axis=0)
    eps = 1e-15
    for col in solution.columns:
        submission[col] = np.clip(submission[col], eps, 1 - eps)
        nz = solution[col] != 0
        solution.loc[nz, col] = solution.loc[nz, col] * np.log(
            solution.loc[nz, col] / submission.loc[nz, col]
        )
        solution.loc[~nz, col] = 0
    return float(np.average(solution.sum(axis=1)))


def _frames(n: int, seed: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    rng = np.random.default_rng(seed)
    votes = rng.integers(0, 6, size=(n, 6)) * (rng.random((n, 6)) < 0.5)
    votes[np.arange(n), rng.integers(0, 6, n)] += 1
    preds = rng.dirichlet(np.full(6, 0.3), size=n)
    preds[0] = [1, 0, 0, 0, 0, 0]  # exact zeros exercise the clipping
    ids = rng.choice(10**9, n, replace=False)
    sol = pd.DataFrame(votes, columns=list(VOTE_COLUMNS)).assign(eeg_id=ids)
    sub = pd.DataFrame(preds, columns=list(VOTE_COLUMNS)).assign(eeg_id=ids)
    return sol, sub


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_equals_the_kaggle_scorer(seed):
    sol, sub = _frames(200, seed)
    expected = kaggle_reference(sol, sub)
    assert score_frames(sol, sub.sample(frac=1, random_state=seed)) == pytest.approx(expected)


def test_known_values():
    onehot = np.eye(6)
    assert kl_divergence(onehot, onehot) == pytest.approx(0.0, abs=1e-12)
    assert kl_divergence(onehot, uniform_prediction(6)) == pytest.approx(np.log(6))
    # A zero prediction where the experts voted costs -log(1e-15), not infinity.
    wrong = np.roll(onehot, 1, axis=0)
    assert kl_divergence(onehot, wrong) == pytest.approx(-np.log(1e-15), rel=1e-6)
    # Vote counts and the same votes as a distribution score the same.
    votes = np.array([[3, 1, 0, 0, 0, 0]])
    assert kl_divergence(votes, uniform_prediction(1)) == pytest.approx(
        kl_divergence(votes / 4, uniform_prediction(1))
    )
    prior = prior_prediction(np.array([[1, 0, 0, 0, 0, 1], [0, 0, 0, 0, 0, 2]]), 3)
    np.testing.assert_allclose(prior, [[0.25, 0, 0, 0, 0, 0.75]] * 3)


def test_bad_submissions_are_refused():
    sol, sub = _frames(10, 0)
    bad = sub.copy()
    bad.loc[3, "lpd_vote"] += 0.5
    with pytest.raises(HMSDataError, match="rows must sum to 1"):
        score_frames(sol, bad)
    with pytest.raises(HMSDataError, match="ids do not match"):
        score_frames(sol, sub.iloc[1:])
    with pytest.raises(HMSDataError, match="repeats eeg_id"):
        score_frames(sol, pd.concat([sub, sub.iloc[:1]]))
    nan = sub.copy()
    nan.loc[0, "gpd_vote"] = np.nan
    with pytest.raises(HMSDataError, match="NaN"):
        score_frames(sol, nan)


def test_score_files_and_command(tmp_path):
    sol, sub = _frames(30, 3)
    sol[list(VOTE_COLUMNS)] = sol[list(VOTE_COLUMNS)].clip(upper=1)
    sol.loc[:4, "seizure_vote"] += 10  # five rows with >= 10 votes
    latent = sol.copy()
    latent[list(VOTE_COLUMNS)] = sol[list(VOTE_COLUMNS)].div(
        sol[list(VOTE_COLUMNS)].sum(axis=1), axis=0
    )
    for name, df in (("sol", sol), ("sub", sub), ("lat", latent)):
        df.to_csv(tmp_path / f"{name}.csv", index=False)
    report = score_files(tmp_path / "sub.csv", tmp_path / "sol.csv", tmp_path / "lat.csv")
    assert report["kl_divergence"] == pytest.approx(kaggle_reference(sol, sub))
    assert report["bayes_floor"] == pytest.approx(0.0, abs=1e-9)  # the latent is the votes here
    assert report["rows_hq"] == 5
    out = subprocess.run(
        [sys.executable, "-m", "hms.score", f"submission={tmp_path / 'sub.csv'}",
         f"solution={tmp_path / 'sol.csv'}", f"latent={tmp_path / 'lat.csv'}"],
        capture_output=True, text=True, cwd=tmp_path, check=True,
    )  # fmt: skip
    last = out.stdout.strip().splitlines()[-1]
    assert last == f"kl_divergence={report['kl_divergence']:.6f}"
    assert "Bayes floor" in out.stdout and "uniform" in out.stdout
    assert sorted(p.name for p in tmp_path.iterdir()) == ["lat.csv", "sol.csv", "sub.csv"]

    sub.iloc[:-1].to_csv(tmp_path / "short.csv", index=False)
    bad = subprocess.run(
        [sys.executable, "-m", "hms.score", f"submission={tmp_path / 'short.csv'}",
         f"solution={tmp_path / 'sol.csv'}"],
        capture_output=True, text=True, cwd=tmp_path,
    )  # fmt: skip
    assert bad.returncode == 2
    assert "short.csv: ids do not match" in bad.stderr and "Traceback" not in bad.stderr
