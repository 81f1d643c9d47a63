"""Train one model on one fold, in two stages: the work of ``python -m hms.train``.

Stage 1 trains on every sample of the training folds; stage 2 starts from the best stage-1
weights and trains on the high-agreement samples with a lower learning rate. ``train(cfg)`` goes
through named steps: start the run folder, build the module and the data, fit each stage
(``_fit_stage`` by gradient steps with a Lightning Trainer, or ``_fit_one_pass`` for a member
fitted in one pass), score it on the held-out fold (``_score_stage``), and write the outputs
(``_write_outputs``). The run folder (``run_dir``, deterministic:
outputs/runs/<experiment>/<model>/fold<k>) receives

- ``best.ckpt``: the weights after the last stage (``HMSModule.load_from_checkpoint`` rebuilds
  it without Hydra),
- ``oof.parquet`` (and ``oof_stage1.parquet``): one row per validation sample: ids, fold, the six
  class probabilities under the submission's column names, the target and the vote count,
- ``metrics.json``: per stage val/kl, val/kl_hq, epochs and seconds, and the final scores,
- ``config.yaml``: the resolved config,
- ``report/``: the held-out fold's pictures after each stage (``hms.report.ensemble_report``),
- ``complete.json``: the completion record, written last (``hms.runs``),

each written under a temporary name and renamed, so a killed run never leaves half a file. A run
holds the folder's lock while it works; once its model and data are built (a run refused for its
arguments or data leaves the folder as it was) it removes the record and the outputs it will
write again: a run killed while it trains leaves a folder that no reader takes for finished.
"""

from __future__ import annotations

import json
import sys
import time
import traceback
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytorch_lightning as pl
import torch
from hydra.errors import InstantiationException
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from pytorch_lightning.callbacks import ModelCheckpoint, ProgressBar
from pytorch_lightning.utilities import rank_zero_only

from hms import runs
from hms.constants import HQ_VOTES, VOTE_COLUMNS
from hms.data.datamodule import HMSDataModule
from hms.data.io import atomic_path, file_digest, write_parquet
from hms.data.labels import TARGET_COLUMNS
from hms.errors import HMSDataError
from hms.metrics import kl_summary
from hms.models import imagenet
from hms.models.module import HMSModule, predict_loader
from hms.progress import is_terminal
from hms.report import ensemble_report

STAGES = runs.STAGE_DIRS
REPORT_DIR = runs.REPORT_DIR


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


def write_report(frames: dict[str, pd.DataFrame], out_dir: Path, title: str) -> None:
    """The run's pictures (``hms.report.ensemble_report``): the held-out fold after each stage."""
    first = next(iter(frames.values()))
    votes = first[list(TARGET_COLUMNS)].to_numpy() * first[["n_votes"]].to_numpy()
    probs = {}
    for stage, frame in frames.items():
        if not np.array_equal(frame["sample_id"], first["sample_id"]):
            raise RuntimeError(f"{stage}: out-of-fold rows differ from the first stage's")
        probs[f"after {stage}"] = frame[list(VOTE_COLUMNS)].to_numpy()
    ensemble_report(votes, probs, out_dir, title=f"{title}: held-out fold")


def score_oof(frame: pd.DataFrame) -> dict[str, float]:
    summary = kl_summary(
        frame[list(TARGET_COLUMNS)].to_numpy(),
        frame[list(VOTE_COLUMNS)].to_numpy(),
        frame["n_votes"].to_numpy(),
    )
    return {
        "val/kl": summary.kl,
        "val/kl_hq": summary.kl_hq,
        "n_val": summary.n,
        "n_val_hq": summary.n_hq,
    }


def _stage1_oof(dm: HMSDataModule, source: Path) -> pd.DataFrame:
    """The stage-1 OOF predictions of the finished runs (``hms.runs.read_record``) of every fold
    under ``source``, made on this data, in the order of the train cache's samples."""
    frames, missing = [], []
    for fold in range(dm.n_folds):
        record, _ = runs.read_record(source / f"fold{fold}", need=("oof_stage1.parquet",))
        if record is None:
            missing.append(fold)
            continue
        if record["data"].get("train_inputs") != dm.train_cache.manifest["inputs"]:
            raise HMSDataError(
                source / f"fold{fold}", "its stage-1 predictions were made on other train data"
            )
        frames.append(pd.read_parquet(source / f"fold{fold}" / "oof_stage1.parquet"))
    if missing:
        raise HMSDataError(
            source,
            f"label refinement needs stage-1 OOF predictions of every fold; folds {missing} have "
            "no finished run with fold*/oof_stage1.parquet (run the sweep without refine first)",
        )
    samples = dm.train_cache.samples
    oof = pd.concat(frames).set_index("sample_id").reindex(samples["sample_id"])
    if oof["eeg_id"].isna().any() or not np.array_equal(oof["eeg_id"], samples["eeg_id"]):
        raise HMSDataError(source, "OOF predictions do not match this train.csv's samples")
    return oof


def refined_targets(
    dm: HMSDataModule,
    sources: Path | Sequence[Path],
    alpha: float,
    below_votes: int | None = None,
) -> np.ndarray:
    """Targets of every train sample: those with fewer than ``below_votes`` votes (default the
    data's ``min_votes``) blended with the mean of the stage-1 OOF predictions of the finished
    runs of every fold under each of ``sources`` (this model's first sweep, or other members':
    knowledge transfer from a stronger model), on this data."""
    sources = [Path(sources)] if isinstance(sources, str | Path) else [Path(p) for p in sources]
    pred = np.mean(
        [_stage1_oof(dm, p)[list(VOTE_COLUMNS)].to_numpy(np.float64) for p in sources], axis=0
    )
    samples = dm.train_cache.samples
    votes = samples[list(TARGET_COLUMNS)].to_numpy(np.float64)
    low = samples["n_votes"].to_numpy() < (dm.min_votes if below_votes is None else below_votes)
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


class EpochLines(ProgressBar):
    """Lightning's progress where a redrawn bar would fill a log (stderr not a terminal,
    ``hms.progress``): one line per epoch, with its losses and validation scores."""

    SHOWN = ("train/loss_epoch", "val/loss", "val/kl", "val/kl_hq")

    def __init__(self, label: str) -> None:
        super().__init__()
        self.label, self._enabled, self._start = label, True, time.monotonic()
        self._validated = False  # validation ran this epoch (not every epoch does)

    def disable(self) -> None:
        self._enabled = False

    def enable(self) -> None:
        self._enabled = True

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._start, self._validated = time.monotonic(), False

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._validated = not trainer.sanity_checking

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not self._enabled or not trainer.is_global_zero:
            return
        metrics = trainer.callback_metrics
        shown = "  ".join(
            f"{key.removesuffix('_epoch')} {float(metrics[key]):.4f}"
            for key in self.SHOWN
            if key in metrics and (self._validated or not key.startswith("val/"))
        )
        print(
            f"{self.label} epoch {trainer.current_epoch + 1}/{trainer.max_epochs}: {shown}  "
            f"({time.monotonic() - self._start:.0f} s)",
            file=sys.stderr,
            flush=True,
        )


@dataclass
class Fitted:
    """How a stage was fitted: its trainer (None for a one-pass fit), the best checkpoint and the
    metric that chose it, the epochs and the seconds it took."""

    trainer: pl.Trainer | None
    best_checkpoint: str
    monitor: str
    epochs: int
    seconds: float


def _fit_stage(
    cfg: DictConfig,
    stage: str,
    module: HMSModule,
    dm: HMSDataModule,
    run_dir: Path,
    loggers: list,
    callbacks: list,
    resume: str | None,
) -> Fitted:
    """One stage of gradient training; the module ends with the stage's best weights."""
    t0 = time.perf_counter()
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
    lines = []  # a line per epoch instead of Lightning's bar where stderr is not a terminal
    if cfg.trainer.get("enable_progress_bar", True) and not is_terminal():
        lines = [EpochLines(f"[{cfg.model.name} fold {cfg.fold}] {stage}")]
    trainer: pl.Trainer = instantiate(
        cfg.trainer,
        max_epochs=int(cfg[stage].epochs),
        logger=loggers or False,
        callbacks=[*callbacks, checkpoint, *lines],
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
    epochs = int(trainer.current_epoch)
    return Fitted(
        trainer, checkpoint.best_model_path, monitor or "last epoch", epochs,
        time.perf_counter() - t0,
    )  # fmt: skip


def _fit_one_pass(module: HMSModule, dm: HMSDataModule, metrics: dict[str, Any]) -> Fitted:
    """A member fitted in one pass over the training windows instead of by gradient steps (an
    ``OnePassNet``, the feature baseline); its fit report goes to metrics."""
    t0 = time.perf_counter()
    data = module.net.collect(dm.fit_dataloader(int(module.net.max_windows)))
    metrics["fit"] = module.net.fit(data, dm.patient_of_sample)
    return Fitted(None, "", "-", 0, time.perf_counter() - t0)


def _score_stage(
    cfg: DictConfig, module: HMSModule, dm: HMSDataModule, fitted: Fitted
) -> tuple[pd.DataFrame, dict[str, Any]]:
    """The held-out fold's out-of-fold rows after a stage, and the stage's metrics."""
    device = module.device if module.device.type != "meta" else torch.device("cpu")
    index, probs = predict_loader(
        module, dm.val_dataloader(), device, str(cfg.trainer.get("precision"))
    )
    frame = oof_frame(dm, index, probs)
    stage_metrics = score_oof(frame)
    stage_metrics.update(
        epochs=fitted.epochs,
        seconds=round(fitted.seconds, 1),
        n_train=len(dm.train_idx),
        monitor=fitted.monitor,
        best_checkpoint=str(fitted.best_checkpoint or ""),
    )
    return frame, stage_metrics


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


def _write_outputs(
    cfg: DictConfig,
    run_dir: Path,
    module: HMSModule,
    trainer: pl.Trainer | None,
    frames: dict[str, pd.DataFrame],
    metrics: dict[str, Any],
    last: str,
) -> None:
    """``best.ckpt``, ``oof.parquet``, the final scores in ``metrics.json`` and the report: the
    state after the ``last`` stage (rank 0 alone writes them)."""
    if trainer is not None and not trainer.is_global_zero:
        trainer.save_checkpoint(
            run_dir / "best.ckpt", weights_only=False
        )  # collective: rank 0 writes
        return
    with atomic_path(run_dir / "best.ckpt") as tmp:
        if trainer is None:
            save_module_checkpoint(module, tmp)
        else:
            trainer.save_checkpoint(tmp, weights_only=False)  # as before: optimiser states too
    write_parquet(frames[last], run_dir / "oof.parquet")
    metrics["final"] = {k: metrics["stages"][last][k] for k in ("val/kl", "val/kl_hq")}
    write_json(metrics, run_dir / "metrics.json")
    if cfg.get("report", True):
        write_report(frames, run_dir / REPORT_DIR, f"{cfg.model.name} fold {cfg.fold}")


def _start_run(cfg: DictConfig, resume: str | None) -> Path:
    """The run folder, cleared of what this run will write again (rank 0; the extra processes
    that DDP starts leave it to rank 0), with the resolved ``config.yaml``. It comes after the
    module and its data are built: a run refused for its arguments or data leaves the folder
    (a finished run there stays finished).

    A resumed run keeps its stage checkpoints and ``metrics.json``; only its record goes."""
    run_dir = Path(cfg.run_dir)
    if rank_zero_only.rank == 0:
        run_dir.mkdir(parents=True, exist_ok=True)
        saved = run_dir / "config.yaml"
        if resume is None:
            runs.clear_run(run_dir)
        else:  # the user's choice (e.g. more epochs); the record will name this config
            (run_dir / runs.RECORD).unlink(missing_ok=True)
        with atomic_path(saved) as tmp:
            OmegaConf.save(cfg, tmp, resolve=True)
    return run_dir


def _build(cfg: DictConfig) -> tuple[HMSModule, HMSDataModule]:
    """The module and its data (the train cache and folds prepared, the fold set up)."""
    module: HMSModule = instantiate(cfg.model, _convert_="all")
    dm: HMSDataModule = instantiate(cfg.data, views=list(module.inputs))
    dm.prepare_data()
    dm.setup()
    if cfg.compile:
        module.net = torch.compile(module.net)
    return module, dm


def _fit_normalization(module: HMSModule, dm: HMSDataModule, targets: np.ndarray | None) -> None:
    """A network with statistics to learn (``needs_fitting``: e.g. ``norm: dataset``) learns the
    training fold's first."""
    if module.net.needs_fitting:
        dm.set_stage(1, targets)  # statistics of the training fold, without augmentation
        module.net.fit_normalization(dm.statistics_dataloader())


def check_config(cfg: DictConfig) -> None:
    """What a composed training config must hold before any work: a recipe that sizes every
    model (its ``scale``) must have sized this one (``conf/model_scale/<scale>/<model>.yaml``),
    instead of training it at the seed's full size without a word; refinement needs its
    source."""
    if OmegaConf.is_missing(cfg, "model_scale"):
        raise HMSDataError(
            None,
            f"experiment {cfg.experiment_name!r} sizes each model in conf/model_scale/<its "
            f"scale>/<model>.yaml, and model {cfg.model.name!r} has no such file: add one that "
            "sets model_scale: <scale>/<model> and what the recipe changes of conf/model/",
        )
    _check_refine(cfg)
    _check_imagenet(cfg)


def refine_sources(cfg: DictConfig) -> list[Path]:
    """``refine.source``: one runs folder or a list of them."""
    source = cfg.refine.source
    if isinstance(source, str | Path):
        return [Path(source)]
    return [Path(p) for p in source]


def _check_refine(cfg: DictConfig) -> None:
    if not cfg.refine.enabled:
        return
    if not cfg.refine.source:
        raise HMSDataError(
            None,
            "refine.enabled=true needs refine.source=<the runs of a finished sweep of this "
            "model without refinement, or of other members>, e.g. "
            "outputs/runs/demo/resnet1d_gru",
        )
    for source in refine_sources(cfg):
        if Path(source).resolve() != Path(cfg.run_dir).resolve().parent:
            continue
        raise HMSDataError(
            source,
            "refine.source is this run's own experiment folder, which the refined runs would "
            "overwrite while the other folds still read it; give the refined runs another "
            "experiment_name",
        )


def train(cfg: DictConfig) -> dict[str, Any]:
    """Train one (experiment, model, fold); returns the content of ``metrics.json``. The run
    folder is locked while it works (rank 0): a second run of the same folder is refused."""
    check_config(cfg)
    resume = _resume_stage(cfg.ckpt_path)
    if rank_zero_only.rank != 0:
        return _train(cfg, resume)
    with runs.run_lock(Path(cfg.run_dir)):
        return _train(cfg, resume)


def refine_inputs(cfg: DictConfig) -> dict[str, str] | None:
    """The SHA-256 of every stage-1 OOF file that refinement reads (None without refinement):
    part of what a refined run was built from, so that a run refined from predictions that have
    changed since is not taken for finished."""
    if not cfg.refine.enabled:
        return None
    sums = {}
    for source in refine_sources(cfg):
        for path in sorted(Path(source).glob("fold*/oof_stage1.parquet")):
            sums[str(path)] = file_digest(path)["sha256"]
    return sums


def pretrained_input(cfg: DictConfig) -> dict[str, Any] | None:
    """What a run's network starts from, where it is not random (None): the local pretrained
    file's size and SHA-256, or the ImageNet source (``hms.models.imagenet``: the weights
    package and its pinned digest, or timm's hub). Part of what the run was built from, so that
    a run is not reused after its file was pretrained again or its start changed."""
    net = cfg.model.get("net") or {}
    if not (net.get("pretrained") and "backbone" in net):
        return None
    path = net.get("pretrained_file")
    if path:
        return file_digest(path) if Path(path).is_file() else {"missing": str(path)}
    return imagenet.resolve(str(net.backbone)).identity()


def _check_imagenet(cfg: DictConfig) -> None:
    """An image member that starts from ImageNet weights (``pretrained=true`` without a
    ``pretrained_file``) finds them on this machine now, or stops in one line naming the
    backbone and the ways to get them (``hms.models.imagenet``). A ``pretrained_file`` is
    checked where it is read: the pipeline's pretraining writes it after this check."""
    net = cfg.model.get("net") or {}
    if net.get("pretrained") and "backbone" in net and not net.get("pretrained_file"):
        imagenet.check_available(str(net.backbone))


def _data_identity(cfg: DictConfig, dm: HMSDataModule) -> dict[str, Any]:
    """What a run was built from, for its completion record."""
    identity = {
        "train_inputs": dm.train_cache.manifest["inputs"],
        "cache": dm.train_cache.path.name,
        "folds": Path(dm.prepared.folds).name,
    }
    refine = refine_inputs(cfg)
    if refine is not None:
        identity["refine_inputs"] = refine
    pretrained = pretrained_input(cfg)
    if pretrained is not None:
        identity["pretrained_file"] = pretrained
    return identity


def _loggers(cfg: DictConfig) -> list:
    """The configured loggers, made before any work: one whose package is not installed (e.g.
    ``logger=tensorboard`` without tensorboard) is refused in one line."""
    loggers = []
    for name, spec in (cfg.get("logger") or {}).items():
        if spec is None:
            continue
        try:
            loggers.append(instantiate(spec))
        except InstantiationException as exc:
            cause = exc.__cause__
            if not isinstance(cause, ImportError):
                raise
            first = str(cause).strip().splitlines()[0] if str(cause).strip() else repr(cause)
            raise HMSDataError(
                None, f"logger {name!r} needs a package that is not installed: {first}"
            ) from None
    return loggers


def _train(cfg: DictConfig, resume: str | None) -> dict[str, Any]:
    loggers = _loggers(cfg)
    pl.seed_everything(cfg.seed, workers=True)
    module, dm = _build(cfg)
    targets = None
    if cfg.refine.enabled:
        below = cfg.refine.get("below_votes")
        targets = refined_targets(
            dm, refine_sources(cfg), float(cfg.refine.alpha), None if below is None else int(below)
        )
    run_dir = _start_run(cfg, resume)  # checks passed: from here on the folder is this run's

    one_pass = module.net.one_pass  # no Trainer, a single stage
    stages = [s for s in STAGES if s == "stage1" or (cfg.stage2.enabled and not one_pass)]
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
    if resume is None:
        _fit_normalization(module, dm, targets)

    callbacks = [instantiate(cb) for cb in (cfg.get("callbacks") or {}).values() if cb]
    status = "failed"
    try:
        for number, stage in enumerate(stages, start=1):
            if resume is not None and stages.index(stage) < stages.index(resume):
                if (run_dir / f"oof_{stage}.parquet").is_file():
                    frames[stage] = pd.read_parquet(run_dir / f"oof_{stage}.parquet")
                continue  # finished before the interruption; the checkpoint holds its weights
            dm.set_stage(number, targets)
            module.stage, module.lr_scale = stage, float(cfg[stage].lr_scale)
            if one_pass:
                fitted = _fit_one_pass(module, dm, metrics)
            else:
                fitted = _fit_stage(cfg, stage, module, dm, run_dir, loggers, callbacks, resume)
                if not fitted.trainer.is_global_zero:
                    continue
            frames[stage], metrics["stages"][stage] = _score_stage(cfg, module, dm, fitted)
            if stage == "stage1":
                write_parquet(frames[stage], run_dir / "oof_stage1.parquet")
            write_json(metrics, metrics_path)
            scores = metrics["stages"][stage]
            print(
                f"[{cfg.model.name} fold {cfg.fold}] {stage}: val/kl {scores['val/kl']:.4f}"
                f"  val/kl_hq {scores['val/kl_hq']:.4f}  ({fitted.seconds:.0f} s)"
            )
        _write_outputs(cfg, run_dir, module, fitted.trainer, frames, metrics, stages[-1])
        if rank_zero_only.rank == 0:
            runs.write_record(run_dir, cfg, _data_identity(cfg, dm))
        status = "success"
    finally:
        _close_loggers(loggers, status)
    return metrics
