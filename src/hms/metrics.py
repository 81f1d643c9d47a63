"""The competition metric: KL divergence from the experts' vote distribution to the prediction.

``kl_divergence`` follows the Kaggle scorer of "HMS - Harmful Brain Activity Classification":
the solution's votes are normalised per row, predictions are clipped to [1e-15, 1 - 1e-15]
(and not renormalised), terms whose target is zero count as zero, the six terms are summed per row
and the rows are averaged. Submissions whose rows do not sum to one are refused, as on Kaggle.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from hms.constants import N_CLASSES, VOTE_COLUMNS
from hms.errors import HMSDataError

EPSILON = 1e-15
HQ_VOTES = 10  # rows with at least this many votes resemble the leaderboard's


def normalize_votes(votes: np.ndarray) -> np.ndarray:
    """Vote counts (rows, 6) -> distributions; rows without votes are an error."""
    votes = np.asarray(votes, dtype=np.float64)
    totals = votes.sum(axis=1, keepdims=True)
    if (totals <= 0).any() or not np.isfinite(votes).all() or (votes < 0).any():
        raise ValueError("every target row needs non-negative, finite votes with a positive total")
    return votes / totals


def _check_predictions(preds: np.ndarray, where: str = "submission") -> np.ndarray:
    preds = np.asarray(preds, dtype=np.float64)
    if preds.ndim != 2 or preds.shape[1] != N_CLASSES:
        raise ValueError(f"{where}: expected (rows, {N_CLASSES}) probabilities, got {preds.shape}")
    if not np.isfinite(preds).all():
        raise ValueError(f"{where}: predictions contain NaN or infinity")
    if (preds < 0).any():
        raise ValueError(f"{where}: predictions contain negative values")
    sums = preds.sum(axis=1)
    bad = np.flatnonzero(~np.isclose(sums, 1.0))
    if len(bad):
        raise ValueError(
            f"{where}: rows must sum to 1; {len(bad)} do not (first: row {bad[0]} sums to "
            f"{sums[bad[0]]:.6g})"
        )
    return preds


def kl_terms(targets: np.ndarray, preds: np.ndarray) -> np.ndarray:
    """(rows, 6) terms of KL(target || prediction); a row's sum is its KL, a column's mean is the
    class's share of the score. Targets are vote counts or distributions."""
    t = normalize_votes(targets)
    p = np.clip(_check_predictions(preds), EPSILON, 1 - EPSILON)
    if t.shape != p.shape:
        raise ValueError(f"targets {t.shape} and predictions {p.shape} differ in shape")
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(t > 0, t * np.log(t / p), 0.0)


def kl_per_row(targets: np.ndarray, preds: np.ndarray) -> np.ndarray:
    """KL(target || prediction) of each row; targets are vote counts or distributions."""
    return kl_terms(targets, preds).sum(axis=1)


def kl_divergence(targets: np.ndarray, preds: np.ndarray) -> float:
    """The competition score (lower is better): mean over rows of KL(votes || prediction)."""
    return float(kl_per_row(targets, preds).mean())


def uniform_prediction(n_rows: int) -> np.ndarray:
    return np.full((n_rows, N_CLASSES), 1.0 / N_CLASSES)


def prior_prediction(train_votes: np.ndarray, n_rows: int) -> np.ndarray:
    """The class-prior baseline: every row predicts the mean vote distribution of training rows."""
    prior = normalize_votes(train_votes).mean(axis=0)
    return np.tile(prior / prior.sum(), (n_rows, 1))


# --------------------------------------------------------------------------- data frames


def _frame(df: pd.DataFrame, id_column: str, name: str) -> pd.DataFrame:
    missing = [c for c in (id_column, *VOTE_COLUMNS) if c not in df.columns]
    if missing:
        raise HMSDataError(None, f"{name} is missing columns {missing}")
    if df[id_column].duplicated().any():
        dup = df.loc[df[id_column].duplicated(), id_column].head(5).tolist()
        raise HMSDataError(None, f"{name} repeats {id_column} {dup}")
    return df.set_index(id_column)[list(VOTE_COLUMNS)]


def align(
    solution: pd.DataFrame, submission: pd.DataFrame, id_column: str = "eeg_id"
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Match submission rows to solution rows by id: ``(ids, solution votes, predictions)``.

    Ids present in only one of the two frames are an error that lists some of them.
    """
    sol = _frame(solution, id_column, "solution")
    sub = _frame(submission, id_column, "submission")
    only_sol = sol.index.difference(sub.index)
    only_sub = sub.index.difference(sol.index)
    if len(only_sol) or len(only_sub):
        raise HMSDataError(
            None,
            f"ids do not match: {len(only_sol)} solution ids have no prediction "
            f"(e.g. {only_sol[:3].tolist()}), {len(only_sub)} submission ids are not in the "
            f"solution (e.g. {only_sub[:3].tolist()})",
        )
    sub = sub.loc[sol.index]
    return sol.index.to_numpy(), sol.to_numpy(dtype=np.float64), sub.to_numpy(dtype=np.float64)


def score_frames(
    solution: pd.DataFrame, submission: pd.DataFrame, id_column: str = "eeg_id"
) -> float:
    """Kaggle's ``score(solution, submission, row_id_column_name)`` for HMS."""
    _, votes, preds = align(solution, submission, id_column)
    try:
        return kl_divergence(votes, preds)
    except ValueError as exc:
        raise HMSDataError(None, str(exc)) from exc
