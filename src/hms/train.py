"""``python -m hms.train model=effnet_b0 fold=0``: train one model on one fold, in two stages.

Stage 1 trains on every sample of the training folds; stage 2 starts from the best stage-1
weights and trains on the high-agreement samples with a lower learning rate. The run folder
(``run_dir``, deterministic: outputs/runs/<experiment>/<model>/fold<k>) receives

- ``best.ckpt``: the weights after the last stage (``HMSModule.load_from_checkpoint`` rebuilds
  it without Hydra),
- ``oof.parquet`` (and ``oof_stage1.parquet``): one row per validation sample: ids, fold, the six
  class probabilities under the submission's column names, the target and the vote count,
- ``metrics.json``: per stage val/kl, val/kl_hq, epochs and seconds, and the final scores,
- ``config.yaml``: the resolved config,

each written under a temporary name and renamed, so a killed run never leaves half a file.
In a multirun (``-m``) a failed job is reported in ``error.txt`` and the sweep goes on.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import time
import traceback
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytorch_lightning as pl
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from pytorch_lightning.callbacks import ModelCheckpoint

from hms.cli import hydra_main
from hms.constants import VOTE_COLUMNS
from hms.data.datamodule import HMSDataModule
from hms.data.io import atomic_path, write_parquet
from hms.data.labels import TARGET_COLUMNS
from hms.errors import HMSDataError
from hms.metrics import HQ_VOTES, kl_per_row
from hms.models.inference import predict_loader
from hms.models.module import HMSModule

STAGES = ("stage1", "stage2")


# --------------------------------------------------------------------------- files


def write_json(obj: Any, path: Path) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, default=float))


def oof_frame(dm: HMSDataModule, index: np.ndarray, probs: np.ndarray) -> pd.DataFrame:
    """Out-of-fold rows for validation samples ``index`` of the train cache."""
    samples = dm.train_cache.samples.iloc[index]
    frame = pd.DataFrame(
        {
            "sample_id": samples["sample_id"].to_numpy(),
            "eeg_id": samples["eeg_id"].to_numpy(),
            "patient_id": samples["patient_id"].to_numpy(),
            "fold": dm.sample_fold[index],
        }
    )
    for i, col in enumerate(VOTE_COLUMNS):
        frame[col] = probs[:, i]
    for col in TARGET_COLUMNS:
        frame[col] = samples[col].to_numpy()
    frame["n_votes"] = samples["n_votes"].to_numpy()
    return frame


REPORT_DIR = "report"


def write_report(frames: dict[str, pd.DataFrame], out_dir: Path, title: str) -> None:
    """The run's pictures (``hms.plot.ensemble_report``): the held-out fold after each stage."""
    from hms.plot import ensemble_report

    first = next(iter(frames.values()))
    votes = first[list(TARGET_COLUMNS)].to_numpy() * first[["n_votes"]].to_numpy()
    probs = {}
    for stage, frame in frames.items():
        if not np.array_equal(frame["sample_id"], first["sample_id"]):
            raise RuntimeError(f"{stage}: out-of-fold rows differ from the first stage's")
        probs[f"after {stage}"] = frame[list(VOTE_COLUMNS)].to_numpy()
    ensemble_report(votes, probs, out_dir, title=f"{title}: held-out fold")


def score_oof(frame: pd.DataFrame) -> dict[str, float]:
    rows = kl_per_row(frame[list(TARGET_COLUMNS)].to_numpy(), frame[list(VOTE_COLUMNS)].to_numpy())
    hq = frame["n_votes"].to_numpy() >= HQ_VOTES
    return {
        "val/kl": float(rows.mean()),
        "val/kl_hq": float(rows[hq].mean()) if hq.any() else float("nan"),
        "n_val": len(frame),
        "n_val_hq": int(hq.sum()),
    }


def refined_targets(dm: HMSDataModule, source: Path, alpha: float) -> np.ndarray:
    """Targets of every train sample, low-agreement ones blended with stage-1 OOF predictions."""
    files = sorted(Path(source).glob("fold*/oof_stage1.parquet"))
    oof = pd.concat([pd.read_parquet(f) for f in files]) if files else pd.DataFrame()
    have = set(oof["fold"].unique()) if len(oof) else set()
    missing = sorted(set(range(dm.n_folds)) - have)
    if missing:
        raise HMSDataError(
            source,
            f"label refinement needs stage-1 OOF predictions of every fold; folds {missing} have "
            "no fold*/oof_stage1.parquet (run the sweep without refine first)",
        )
    samples = dm.train_cache.samples
    oof = oof.set_index("sample_id").reindex(samples["sample_id"])
    if oof["eeg_id"].isna().any() or not np.array_equal(oof["eeg_id"], samples["eeg_id"]):
        raise HMSDataError(source, "OOF predictions do not match this train.csv's samples")
    votes = samples[list(TARGET_COLUMNS)].to_numpy(np.float64)
    pred = oof[list(VOTE_COLUMNS)].to_numpy(np.float64)
    low = samples["n_votes"].to_numpy() < dm.min_votes
    targets = votes.copy()
    targets[low] = alpha * votes[low] + (1 - alpha) * pred[low]
    return targets / targets.sum(axis=1, keepdims=True)


# --------------------------------------------------------------------------- training


def _resume_stage(ckpt_path: str | None) -> str | None:
    if not ckpt_path:
        return None
    path = Path(ckpt_path)
    if not path.is_file():
        raise HMSDataError(path, "checkpoint to resume from not found")
    try:  # tensors and plain data only: a checkpoint may come from anywhere
        stage = torch.load(path, map_location="cpu", weights_only=True).get("hms_stage", "stage1")
    except Exception as exc:  # torch raises many types for a file that is not a checkpoint
        raise HMSDataError(
            path, f"not a checkpoint hms can resume from ({type(exc).__name__}: {str(exc)[:300]})"
        ) from exc
    if stage not in STAGES:
        raise HMSDataError(path, f"checkpoint of unknown stage {stage!r}")
    return stage


def _is_rank_zero() -> bool:
    """False in the extra processes that DDP starts (they re-run this command)."""
    keys = ("LOCAL_RANK", "NODE_RANK", "RANK", "SLURM_PROCID")
    return all(int(os.environ.get(key, "0") or 0) == 0 for key in keys)


def _close_loggers(loggers: list, status: str) -> None:
    for logger in loggers:
        try:
            logger.finalize(status)
        except Exception:  # closing must never hide the original outcome
            traceback.print_exc()
    if "wandb" in sys.modules:
        import wandb

        if wandb.run is not None:
            wandb.finish(exit_code=0 if status == "success" else 1)


def _fit_stage(
    cfg: DictConfig,
    stage: str,
    module: HMSModule,
    dm: HMSDataModule,
    run_dir: Path,
    loggers: list,
    callbacks: list,
    resume: str | None,
) -> tuple[pl.Trainer, str, str]:
    """One stage of gradient training; the module ends with the stage's best weights.
    Returns the trainer, the best checkpoint's path and the metric it was chosen by."""
    monitor = cfg[stage].monitor  # None: keep the last epoch (no choice made on the held-out fold)
    if monitor == "val/kl_hq" and not (dm.n_votes[dm.val_idx] >= HQ_VOTES).any():
        monitor = "val/kl"
    checkpoint = ModelCheckpoint(
        dirpath=run_dir / stage,
        filename="epoch{epoch:02d}",
        monitor=monitor,
        mode="min",
        save_top_k=1,
        save_last=True,
        auto_insert_metric_name=False,
    )
    trainer: pl.Trainer = instantiate(
        cfg.trainer,
        max_epochs=int(cfg[stage].epochs),
        logger=loggers or False,
        callbacks=[*callbacks, checkpoint],
        default_root_dir=str(run_dir),
    )
    module.train()  # the previous stage's OOF prediction left it in eval mode
    trainer.fit(
        module,
        datamodule=dm,
        ckpt_path=cfg.ckpt_path if stage == resume else None,
        weights_only=True,  # a resumed checkpoint is read as tensors and plain data only
    )
    if checkpoint.best_model_path:  # the best epoch of this stage, not the last
        best = torch.load(checkpoint.best_model_path, map_location="cpu", weights_only=True)
        module.load_state_dict(best["state_dict"])
    return trainer, checkpoint.best_model_path, monitor or "last epoch"


def save_module_checkpoint(module: HMSModule, path: Path) -> None:
    """A checkpoint of a module that no Trainer fitted, in the layout Lightning writes (what
    ``HMSModule.load_from_checkpoint`` and ``hms.predict`` read)."""
    checkpoint = {
        "state_dict": module.state_dict(),
        "hyper_parameters": dict(module.hparams),
        "pytorch-lightning_version": pl.__version__,
        "epoch": 0,
        "global_step": 0,
    }
    module.on_save_checkpoint(checkpoint)
    torch.save(checkpoint, path)


def train(cfg: DictConfig) -> dict[str, Any]:
    """Train one (experiment, model, fold); returns the content of ``metrics.json``."""
    run_dir = Path(cfg.run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    with atomic_path(run_dir / "config.yaml") as tmp:
        OmegaConf.save(cfg, tmp, resolve=True)
    pl.seed_everything(cfg.seed, workers=True)

    module: HMSModule = instantiate(cfg.model, _convert_="all")
    dm: HMSDataModule = instantiate(cfg.data, views=list(module.inputs))
    dm.prepare_data()
    dm.setup()
    if cfg.compile:
        module.net = torch.compile(module.net)

    targets = None
    if cfg.refine.enabled:
        targets = refined_targets(dm, Path(cfg.refine.source), float(cfg.refine.alpha))

    # A member fitted in one pass instead of by gradient steps (the feature baseline: its net has
    # ``collect`` and ``fit``) has a single stage, without Trainer.
    one_pass = callable(getattr(module.net, "fit", None))
    stages = [s for s in STAGES if s == "stage1" or (cfg.stage2.enabled and not one_pass)]
    resume = _resume_stage(cfg.ckpt_path)
    metrics_path = run_dir / "metrics.json"
    metrics: dict[str, Any] = {
        "experiment": cfg.experiment_name,
        "model": cfg.model.name,
        "fold": int(cfg.fold),
        "n_train": len(dm.train_all_idx),
        "n_train_hq": int((dm.n_votes[dm.train_all_idx] >= dm.min_votes).sum()),
        "n_val": len(dm.val_idx),
        "stages": {},
    }
    if resume and metrics_path.is_file():
        metrics["stages"] = json.loads(metrics_path.read_text()).get("stages", {})
    frames: dict[str, pd.DataFrame] = {}  # out-of-fold rows after each stage, for the report
    if resume is None and _is_rank_zero():
        for stage in STAGES:  # checkpoints of an earlier run in this folder would be mistaken
            shutil.rmtree(run_dir / stage, ignore_errors=True)  # for this run's

    norms = getattr(module.net, "norms", {})
    if resume is None and any(getattr(n, "mode", "") == "dataset" for n in norms.values()):
        dm.set_stage(1, targets)  # statistics of the training fold, without augmentation
        module.net.fit_normalization(dm._loader(dm.train_dataset(), False, dm.batch_size))

    loggers = [instantiate(lg) for lg in (cfg.get("logger") or {}).values() if lg is not None]
    callbacks = [instantiate(cb) for cb in (cfg.get("callbacks") or {}).values() if cb]
    status = "failed"
    try:
        for number, stage in enumerate(stages, start=1):
            if resume is not None and stages.index(stage) < stages.index(resume):
                if (run_dir / f"oof_{stage}.parquet").is_file():
                    frames[stage] = pd.read_parquet(run_dir / f"oof_{stage}.parquet")
                continue  # finished before the interruption; the checkpoint holds its weights
            scfg = cfg[stage]
            dm.set_stage(number, targets)
            module.stage, module.lr_scale = stage, float(scfg.lr_scale)
            t0 = time.perf_counter()
            if one_pass:
                trainer, best_path, epochs, monitor = None, "", 0, "-"
                data = module.net.collect(dm.fit_dataloader(int(module.net.max_windows)))
                fit_info = module.net.fit(data, dm.patient_of_sample)
                metrics["fit"] = fit_info
            else:
                trainer, best_path, monitor = _fit_stage(
                    cfg, stage, module, dm, run_dir, loggers, callbacks, resume
                )
                epochs = int(trainer.current_epoch)
                if not trainer.is_global_zero:
                    continue
            seconds = time.perf_counter() - t0
            device = module.device if module.device.type != "meta" else torch.device("cpu")
            index, probs = predict_loader(
                module, dm.val_dataloader(), device, str(cfg.trainer.get("precision"))
            )
            frame = oof_frame(dm, index, probs)
            stage_metrics = score_oof(frame)
            stage_metrics.update(
                epochs=epochs,
                seconds=round(seconds, 1),
                n_train=len(dm.train_idx),
                monitor=monitor,
                best_checkpoint=str(best_path or ""),
            )
            metrics["stages"][stage] = stage_metrics
            frames[stage] = frame
            if stage == "stage1":
                write_parquet(frame, run_dir / "oof_stage1.parquet")
            write_json(metrics, metrics_path)
            print(
                f"[{cfg.model.name} fold {cfg.fold}] {stage}: val/kl {stage_metrics['val/kl']:.4f}"
                f"  val/kl_hq {stage_metrics['val/kl_hq']:.4f}  ({seconds:.0f} s)"
            )

        if trainer is not None and not trainer.is_global_zero:
            trainer.save_checkpoint(run_dir / "best.ckpt")  # collective: rank 0 writes
        else:
            with atomic_path(run_dir / "best.ckpt") as tmp:
                if trainer is None:
                    save_module_checkpoint(module, tmp)
                else:
                    trainer.save_checkpoint(tmp)
            write_parquet(frame, run_dir / "oof.parquet")
            metrics["final"] = {k: stage_metrics[k] for k in ("val/kl", "val/kl_hq")}
            write_json(metrics, metrics_path)
            if cfg.get("report", True):
                write_report(frames, run_dir / REPORT_DIR, f"{cfg.model.name} fold {cfg.fold}")
        status = "success"
    finally:
        _close_loggers(loggers, status)
    return metrics


def _is_multirun() -> bool:
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

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
