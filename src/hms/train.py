"""``python -m hms.train model=effnet_b0 fold=0``: train one model on one fold, in two stages.

Stage 1 trains on every sample of the training folds; stage 2 starts from the best stage-1
weights and trains on the high-agreement samples with a lower learning rate. The run folder
(``run_dir``, deterministic: outputs/runs/<experiment>/<model>/fold<k>) receives ``best.ckpt``,
``oof.parquet`` (and ``oof_stage1.parquet``), ``metrics.json``, ``config.yaml`` and ``report/``
(``hms.training`` does the work and describes the files). In a multirun (``-m``) a failed job is
reported in ``error.txt`` and the sweep goes on.
"""

from __future__ import annotations

import traceback
from pathlib import Path

from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig

from hms.cli import hydra_main
from hms.training import train


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
        (run_dir / "error.txt").write_text(traceback.format_exc())
        print(f"error: job {run_dir} failed: {exc} (see error.txt); the sweep goes on")
        return None


if __name__ == "__main__":
    main()
