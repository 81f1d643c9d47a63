"""The competition metric: KL divergence from the experts' vote distribution to the prediction.

``kl_divergence`` follows the Kaggle scorer of "HMS - Harmful Brain Activity Classification":
the solution's votes are normalised per row, predictions are clipped to [1e-15, 1 - 1e-15]
(and not renormalised), terms whose target is zero count as zero, the six terms are summed per row
and the rows are averaged. Submissions whose rows do not sum to one are refused, as on Kaggle.

``kl_summary`` is the one summary every score uses (validation, out-of-fold, ensemble table,
test, report): the KL over all rows and over the high-agreement rows (``HQ_VOTES`` or more
votes). ``score_submission`` and ``bayes_floor`` score data frames by id, and ``score_files``
CSV files (``hms.score``), for the commands and the pipeline.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from hms.constants import HQ_VOTES, N_CLASSES, VOTE_COLUMNS
from hms.data.io import check_unique, read_csv_checked
from hms.errors import HMSDataError

EPSILON = 1e-15


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


@dataclass(frozen=True)
class KLSummary:
    """The KL over all rows and over the high-agreement rows (``n_votes >= HQ_VOTES``)."""

    kl: float
    kl_hq: float  # NaN when no row has that many votes
    n: int
    n_hq: int


def kl_summary(
    targets: np.ndarray, preds: np.ndarray, n_votes: np.ndarray | None = None
) -> KLSummary:
    """Mean KL of all rows and of the rows with at least ``HQ_VOTES`` votes.

    ``targets`` are vote counts or distributions; ``n_votes`` is each row's number of votes
    (None: the row sums of ``targets``, which are then vote counts).
    """
    rows = kl_per_row(targets, preds)
    if n_votes is None:
        n_votes = np.asarray(targets, dtype=np.float64).sum(axis=1)
    hq = np.asarray(n_votes) >= HQ_VOTES
    kl_hq = float(rows[hq].mean()) if hq.any() else float("nan")
    return KLSummary(kl=float(rows.mean()), kl_hq=kl_hq, n=len(rows), n_hq=int(hq.sum()))


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
    check_unique(df, id_column, None, name)
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


def score_submission(
    solution: pd.DataFrame, submission: pd.DataFrame, id_column: str = "eeg_id"
) -> dict[str, float]:
    """A submission's score beside the uniform prediction's, over all rows and the
    high-agreement ones: ``rows``, ``rows_hq``, ``kl_divergence``, ``kl_divergence_hq``,
    ``uniform``, ``uniform_hq``. Rows are matched by id; bad frames raise ``HMSDataError`` or
    ``ValueError``."""
    ids, votes, preds = align(solution, submission, id_column)
    scored = kl_summary(votes, preds)
    uniform = kl_summary(votes, uniform_prediction(len(ids)))
    return {
        "rows": float(scored.n),
        "rows_hq": float(scored.n_hq),
        "kl_divergence": scored.kl,
        "kl_divergence_hq": scored.kl_hq,
        "uniform": uniform.kl,
        "uniform_hq": uniform.kl_hq,
    }


def bayes_floor(
    solution: pd.DataFrame, latent: pd.DataFrame, id_column: str = "eeg_id"
) -> dict[str, float]:
    """The score of the latent distributions the votes were drawn from (built-in datasets'
    ``test_latent.csv``), which no model beats on average: ``bayes_floor``, ``bayes_floor_hq``."""
    _, votes, lat = align(solution, latent, id_column)
    floor = kl_summary(votes, lat / lat.sum(axis=1, keepdims=True))
    return {"bayes_floor": floor.kl, "bayes_floor_hq": floor.kl_hq}


# --------------------------------------------------------------------------- files


def _read(path: str | Path, what: str) -> pd.DataFrame:
    return read_csv_checked(path, (), f"{what} file")  # columns are checked when aligning


@contextlib.contextmanager
def _blamed_on(path: str | Path) -> Iterator[None]:
    """A problem found while scoring is reported as a problem of the file ``path``."""
    try:
        yield
    except (HMSDataError, ValueError) as exc:
        problem = exc.problem if isinstance(exc, HMSDataError) else str(exc)
        raise HMSDataError(path, problem) from exc


def score_files(
    submission: str | Path,
    solution: str | Path,
    latent: str | Path | None = None,
    id_column: str = "eeg_id",
) -> dict[str, float]:
    """Score CSV files; returns the report as a dict (keys as printed)."""
    sol_df = _read(solution, "solution")
    sub_df = _read(submission, "submission")
    with _blamed_on(submission):
        report = score_submission(sol_df, sub_df, id_column)
    if latent is not None:
        lat_df = _read(latent, "latent")
        with _blamed_on(latent):
            report.update(bayes_floor(sol_df, lat_df, id_column))
    return report
