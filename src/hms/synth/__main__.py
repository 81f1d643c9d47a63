"""``python -m hms.synth out_dir=DIR preset=tiny|demo|large|full seed=0``: write a synthetic
dataset."""

from __future__ import annotations

import json
import logging
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from hms.cli import hydra_main
from hms.synth.generate import generate
from hms.synth.presets import preset_overrides


@hydra_main("synth")
def main(cfg: DictConfig) -> None:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    presets = cfg.get("presets")
    if OmegaConf.is_config(presets):
        presets = OmegaConf.to_container(presets, resolve=True)
    summary = generate(
        out_dir=Path(cfg.out_dir).expanduser(),
        preset=str(cfg.preset),
        seed=cfg.seed,
        workers=cfg.workers,
        overwrite=bool(cfg.overwrite),
        labels_only=bool(cfg.labels_only),
        preset_overrides=preset_overrides(presets, str(cfg.preset)),
        progress=bool(cfg.progress),
    )
    if not summary.get("skipped"):  # a skip is reported by generate's log line
        print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
