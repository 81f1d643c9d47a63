"""``python -m hms.score submission=FILE solution=FILE [latent=FILE]``: the competition score.

Prints the score of the submission beside two references a user needs to read it: the score of a
uniform prediction, and (with ``latent``) the Bayes floor, the score of the distribution the votes
were drawn from, which no model can beat on average. The last line is ``kl_divergence=<number>``.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
from omegaconf import DictConfig

from hms.cli import hydra_main
from hms.data.io import read_csv_checked
from hms.errors import HMSDataError
from hms.metrics import HQ_VOTES, align, kl_per_row, uniform_prediction


def _read(path: str | Path, what: str) -> pd.DataFrame:
    return read_csv_checked(path, (), f"{what} file")  # columns are checked when aligning


def score_files(
    submission: str | Path,
    solution: str | Path,
    latent: str | Path | None = None,
    id_column: str = "eeg_id",
) -> dict[str, float]:
    """Score CSV files; returns the report as a dict (keys as printed)."""
    sol_df = _read(solution, "solution")
    sub_df = _read(submission, "submission")
    try:
        ids, votes, preds = align(sol_df, sub_df, id_column)
        row_kl = kl_per_row(votes, preds)
    except (HMSDataError, ValueError) as exc:
        problem = exc.problem if isinstance(exc, HMSDataError) else str(exc)
        raise HMSDataError(submission, problem) from exc
    hq = votes.sum(axis=1) >= HQ_VOTES
    report = {
        "rows": float(len(ids)),
        "rows_hq": float(hq.sum()),
        "kl_divergence": float(row_kl.mean()),
        "kl_divergence_hq": float(row_kl[hq].mean()) if hq.any() else float("nan"),
    }
    uniform_rows = kl_per_row(votes, uniform_prediction(len(ids)))
    report["uniform"] = float(uniform_rows.mean())
    report["uniform_hq"] = float(uniform_rows[hq].mean()) if hq.any() else float("nan")
    if latent is not None:
        lat_df = _read(latent, "latent")
        try:
            _, votes_l, lat = align(sol_df, lat_df, id_column)
            floor_rows = kl_per_row(votes_l, lat / lat.sum(axis=1, keepdims=True))
        except (HMSDataError, ValueError) as exc:
            problem = exc.problem if isinstance(exc, HMSDataError) else str(exc)
            raise HMSDataError(latent, problem) from exc
        report["bayes_floor"] = float(floor_rows.mean())
        report["bayes_floor_hq"] = float(floor_rows[hq].mean()) if hq.any() else float("nan")
    return report


def format_report(report: dict[str, float]) -> str:
    lines = [f"rows: {int(report['rows'])} ({int(report['rows_hq'])} with >= {HQ_VOTES} votes)"]
    lines.append(f"{'':24s}{'all rows':>12s}{'>= 10 votes':>14s}")
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
