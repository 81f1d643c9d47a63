"""``python -m hms.score submission=FILE solution=FILE [latent=FILE]``: the competition score.

Prints the score of the submission beside two references a user needs to read it: the score of a
uniform prediction, and (with ``latent``) the Bayes floor, the score of the distribution the votes
were drawn from, which no model can beat on average. The last line is ``kl_divergence=<number>``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
from omegaconf import DictConfig

from hms.cli import hydra_main
from hms.constants import HQ_VOTES
from hms.data.io import read_csv_checked
from hms.errors import HMSDataError
from hms.metrics import bayes_floor, score_submission


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


def format_report(report: dict[str, float]) -> str:
    lines = [f"rows: {int(report['rows'])} ({int(report['rows_hq'])} with >= {HQ_VOTES} votes)"]
    lines.append(f"{'':24s}{'all rows':>12s}{f'>= {HQ_VOTES} votes':>14s}")
    lines.append(f"{'uniform prediction':24s}{report['uniform']:12.4f}{report['uniform_hq']:14.4f}")
    if "bayes_floor" in report:
        lines.append(
            f"{'Bayes floor (latent)':24s}{report['bayes_floor']:12.4f}"
            f"{report['bayes_floor_hq']:14.4f}"
        )
    lines.append(
        f"{'submission':24s}{report['kl_divergence']:12.4f}{report['kl_divergence_hq']:14.4f}"
    )
    lines.append(f"kl_divergence={report['kl_divergence']:.6f}")
    return "\n".join(lines)


@hydra_main("score")
def main(cfg: DictConfig) -> float:
    report = score_files(cfg.submission, cfg.solution, cfg.latent, cfg.id_column)
    print(format_report(report))
    return report["kl_divergence"]


if __name__ == "__main__":
    main()
