"""``python -m hms.pipeline``: the whole seed solution, end to end, in one command.

With no arguments it uses the built-in demo dataset (generated when absent) and the demo recipe:
it prepares the data, trains every member of the ensemble on each fold, builds the ensemble from
the out-of-fold predictions, predicts the test split and scores it when the answers are known,
and prints one table: per member and for the blend, the CV KL and the test KL, beside the uniform
score and the Bayes floor (``hms.workflow`` does the work). ``experiment=...`` and
``data_dir=...`` run the same steps with another recipe or the real Kaggle data
(``synth_preset=null``); a GPU is used when there is one.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, open_dict

from hms.cli import hydra_main
from hms.data.io import write_csv
from hms.workflow import format_report, run_pipeline


@hydra_main("pipeline")
def main(cfg: DictConfig) -> None:
    choices = HydraConfig.get().runtime.choices
    with open_dict(cfg):  # the config names chosen for this run, which the runs are composed with
        cfg.choices = {"experiment": choices["experiment"], "ensemble": choices["ensemble"]}
    report = run_pipeline(cfg)
    print(format_report(report))
    out = Path(cfg.scores)
    write_csv(pd.DataFrame(report["table"]), out)
    print(f"table: {out}")


if __name__ == "__main__":
    main()
