"""``python -m hms.ensemble [ensemble=seed] [experiment_name=demo]``: fold runs -> an ensemble.

Reads each member's out-of-fold predictions (``<runs_dir>/<member>/fold*/oof.parquet``), prints
the cross-validated KL (all samples, and those with >= 10 votes) of every member, of the
configured blend (``conf/ensemble/<name>.yaml``) and of weights fitted on the OOF predictions
(in-sample, and cross-validated by fold: the number to trust), and writes the chosen ensemble
(``use=configured|fitted``) to ``weights_dir``: the member checkpoints and ``ensemble.json``,
which ``hms.predict`` reads, with its report. ``hms.ensembling`` does the work.
"""

from __future__ import annotations

from omegaconf import DictConfig

from hms.cli import hydra_main
from hms.ensembling import build_ensemble, format_table


@hydra_main("ensemble")
def main(cfg: DictConfig) -> None:
    print(format_table(build_ensemble(cfg)))


if __name__ == "__main__":
    main()
