"""``python -m hms.train model=effnet_b0 fold=0``: train one model on one fold, in two stages.

Stage 1 trains on every sample of the training folds; stage 2 starts from the best stage-1
weights and trains on the high-agreement samples with a lower learning rate. The run folder
(``run_dir``, deterministic: outputs/runs/<experiment>/<model>/fold<k>) receives ``best.ckpt``,
``oof.parquet`` (and ``oof_stage1.parquet``), ``metrics.json``, ``config.yaml`` and ``report/``
(``hms.training`` does the work and describes the files). In a multirun (``-m``) a failed job is
reported in its folder's ``error.txt`` and the sweep goes on; when every job has run, the sweep
exits with status 1 if any failed.
"""

from __future__ import annotations

import traceback
from pathlib import Path

from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig

from hms.cli import hydra_main
from hms.runs import ERROR_FILE
from hms.training import train


class SweepJobFailed(RuntimeError):
    """One job of a sweep failed (its ``error.txt`` says why). Hydra runs the other jobs, then
    ends the sweep with this error and exit status 1."""


def _is_multirun() -> bool:
    return HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN


@hydra_main("train")
def main(cfg: DictConfig) -> float | None:
    try:
        return train(cfg).get("final", {}).get("val/kl")  # other DDP ranks have no final
    except Exception as exc:
        if not _is_multirun():
            raise
        run_dir = Path(cfg.run_dir)
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / ERROR_FILE).write_text(traceback.format_exc())
        print(f"error: job {run_dir} failed: {exc} (see {ERROR_FILE}); the sweep goes on")
        raise SweepJobFailed(f"{run_dir}: {exc} (see {run_dir / ERROR_FILE})") from None


if __name__ == "__main__":
    main()
