"""A weights folder of untrained networks, for the benchmarks (``bench_predict.py``,
``bench_kit.py``, ``bench_annotate.py`` through them): speed and size do not depend on the
weights, and a network with dataset normalisation gets statistics of random inputs. The
checkpoints hold what ``hms.ensemble`` writes into a weights folder (weights, hyperparameters,
stage; no optimiser state), at each recipe's input sizes."""

from __future__ import annotations

import json
from pathlib import Path

import pytorch_lightning as pl
import torch
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from omegaconf import OmegaConf

import hms
from hms.blend import ENSEMBLE_FILE, EnsembleSpec
from hms.cli import conf_dir


def configured_weights(ensemble: str) -> dict[str, float]:
    """The blend weights of ``conf/ensemble/<ensemble>.yaml``: its blended members (a reference
    member, ``blend: false``, is left out), as ``hms.ensemble`` configures them."""
    members = OmegaConf.load(conf_dir() / "ensemble" / f"{ensemble}.yaml").members
    return {m: float(spec.weight) for m, spec in members.items() if spec.get("blend", True)}


def write_weights(
    out: Path,
    weights: dict[str, float],
    folds: int,
    experiment: str | None = None,
    tta_flip: bool = False,
    name: str = "bench",
) -> Path:
    """``folds`` untrained checkpoints of each member of ``weights`` at the sizes of
    ``experiment`` (None: the seed's), and ``ensemble.json``."""
    checkpoints, data = {}, {}
    for member in weights:
        overrides = [f"model={member}", "pretrained=false", f"experiment={experiment or 'none'}"]
        with initialize_config_dir(config_dir=str(conf_dir()), version_base="1.3"):
            cfg = compose("train", overrides=overrides)
        (out / member).mkdir(parents=True)
        checkpoints[member] = []
        for fold in range(folds):
            torch.manual_seed(fold)
            module = instantiate(cfg.model, _convert_="all")
            if module.net.needs_fitting:
                module.net.fit_normalization([module.net.example_batch(4)])
            rel = f"{member}/fold{fold}.ckpt"
            torch.save(
                {
                    "state_dict": module.state_dict(),
                    "hyper_parameters": {**dict(module.hparams), "tta_flip": tta_flip},
                    "pytorch-lightning_version": pl.__version__,
                    "hms_stage": "stage2",
                },
                out / rel,
            )
            checkpoints[member].append(rel)
        data[member] = {
            "recording": OmegaConf.to_container(cfg.data.recording, resolve=True),
            "window": OmegaConf.to_container(cfg.data.window, resolve=True),
        }
    spec = EnsembleSpec(
        name=name, weights=weights, checkpoints=checkpoints, data=data,
        hms_version=hms.__version__,
    )  # fmt: skip
    (out / ENSEMBLE_FILE).write_text(json.dumps(spec.to_json(), indent=2))
    return out
