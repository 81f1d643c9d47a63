"""``python -m hms.score submission=FILE solution=FILE [latent=FILE]``: the competition score.

Prints the score of the submission beside two references a user needs to read it: the score of a
uniform prediction, and (with ``latent``) the Bayes floor, the score of the distribution the votes
were drawn from, which no model can beat on average. The last line is ``kl_divergence=<number>``.
"""

from __future__ import annotations

from omegaconf import DictConfig

from hms.cli import hydra_main
from hms.constants import HQ_VOTES
from hms.metrics import score_files


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
