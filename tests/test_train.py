"""Training: every model config, fast_dev_run, the two stages, OOF, resume, sweeps, wandb."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate

from hms.cli import conf_dir, model_names
from hms.constants import VOTE_COLUMNS
from hms.data.datamodule import HMSDataModule
from hms.data.labels import TARGET_COLUMNS
from hms.errors import HMSDataError
from hms.metrics import kl_divergence
from hms.models.losses import kl_loss
from hms.models.module import HMSModule, predict_loader
from hms.training import train

MODELS = tuple(model_names())  # every conf/model/*.yaml: a new family is covered by its file


def compose_train(tmp_path: Path, data_dir: Path, *overrides: str):
    with initialize_config_dir(str(conf_dir()), version_base="1.3"):
        return compose(
            "train",
            overrides=[
                "experiment=tiny",
                f"data.data_dir={data_dir}",
                f"paths.cache_dir={tmp_path / 'cache'}",
                f"paths.output_dir={tmp_path / 'outputs'}",
                *overrides,
            ],
        )


def _script(name: str):
    """A module of scripts/ (not a package), loaded from its file."""
    path = Path(__file__).resolve().parents[1] / "scripts" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def shared_cache(tmp_path_factory):
    """One cache folder for the module's tests (built on first use by the data module)."""
    return tmp_path_factory.mktemp("train-cache")


@pytest.mark.parametrize("model", MODELS)
def test_every_model_config_trains_one_step(model, tiny, tmp_path, shared_cache):
    root, _ = tiny
    cfg = compose_train(tmp_path, root, f"model={model}", f"paths.cache_dir={shared_cache}")
    dm = instantiate(cfg.data)
    dm.prepare_data()
    dm.setup()
    module: HMSModule = instantiate(cfg.model, _convert_="all")
    assert module.hparams.name == model
    if module.net.one_pass:  # fitted once, by test_fast_dev_run_each_family; no gradient step
        return
    if module.net.needs_fitting:  # e.g. norm: dataset needs the training fold's statistics first
        module.net.fit_normalization([next(iter(dm.train_dataloader()))])
    batch = next(iter(dm.train_dataloader()))
    module.train()
    opt = torch.optim.AdamW(module.parameters(), lr=1e-3)
    before = [p.detach().clone() for p in module.parameters()]
    logits = module(module.augment(batch))  # what training_step does, without a Trainer
    loss = kl_loss(logits, batch["target"])
    loss.backward()
    opt.step()
    assert torch.isfinite(loss)
    changed = sum(not torch.equal(a, b) for a, b in zip(before, module.parameters(), strict=True))
    assert changed > 0.9 * len(before)
    assert module.hparams.name == model


def _check_run(run_dir: Path, n_folds: int = 3) -> dict:
    for name in ("best.ckpt", "oof.parquet", "metrics.json", "config.yaml", "oof_stage1.parquet"):
        assert (run_dir / name).is_file(), name
    metrics = json.loads((run_dir / "metrics.json").read_text())
    oof = pd.read_parquet(run_dir / "oof.parquet")
    assert len(oof) == metrics["n_val"] and oof["sample_id"].is_unique
    np.testing.assert_allclose(oof[list(VOTE_COLUMNS)].sum(axis=1), 1.0, atol=1e-6)
    np.testing.assert_allclose(oof[list(TARGET_COLUMNS)].sum(axis=1), 1.0, atol=1e-6)
    assert oof["fold"].nunique() == 1 and (oof["n_votes"] >= 1).all()
    assert not list(run_dir.glob(".*.tmp"))  # no half-written file left behind
    return metrics


@pytest.mark.parametrize("model", MODELS)
def test_fast_dev_run_each_family(model, tiny, tmp_path, shared_cache):
    root, _ = tiny
    cfg = compose_train(
        tmp_path, root, f"model={model}", "debug=fast", f"paths.cache_dir={shared_cache}",
        "data.batch_size=4",
    )  # fmt: skip
    metrics = train(cfg)
    module = HMSModule.load_from_checkpoint(Path(cfg.run_dir) / "best.ckpt")
    stages = ["stage1"] if module.net.one_pass else ["stage1", "stage2"]  # one-pass: one stage
    assert set(metrics["stages"]) == set(stages)
    _check_run(Path(cfg.run_dir))
    assert module.hparams.name == model and module.stage == stages[-1]


def test_two_stages_oof_and_resume(tiny, tmp_path, shared_cache):
    root, _ = tiny
    cfg = compose_train(
        tmp_path, root, "model=resnet1d_gru", f"paths.cache_dir={shared_cache}",
        "stage1.epochs=2", "stage2.epochs=1", "report=true",
    )  # fmt: skip
    metrics = train(cfg)
    run_dir = Path(cfg.run_dir)
    _check_run(run_dir)
    page = (run_dir / "report" / "report.html").read_text()
    assert "after stage1" in page and "after stage2" in page
    assert (run_dir / "report" / "reliability.png").stat().st_size > 10_000
    s1, s2 = metrics["stages"]["stage1"], metrics["stages"]["stage2"]
    assert s2["n_train"] < s1["n_train"]  # stage 2: high-agreement samples only
    assert metrics["final"]["val/kl"] == s2["val/kl"]
    oof = pd.read_parquet(run_dir / "oof.parquet")
    assert kl_divergence(oof[list(TARGET_COLUMNS)], oof[list(VOTE_COLUMNS)]) == pytest.approx(
        metrics["final"]["val/kl"]
    )
    # The checkpoint rebuilds the model without Hydra and reproduces the OOF predictions.
    dm: HMSDataModule = instantiate(cfg.data)
    dm.setup()
    module = HMSModule.load_from_checkpoint(run_dir / "best.ckpt", map_location="cpu")
    index, probs = predict_loader(module, dm.val_dataloader())
    assert np.array_equal(dm.train_cache.samples["sample_id"].to_numpy()[index], oof["sample_id"])
    np.testing.assert_allclose(probs, oof[list(VOTE_COLUMNS)].to_numpy(), atol=1e-5)
    # Both stages log to one CSV file; the learning-curve script tells them apart.
    curves = _script("learning_curves").read_curves(run_dir)
    assert curves["stage"].tolist() == [1, 1, 2] and curves["epoch"].tolist() == [1, 2, 3]
    assert curves["val/kl"].notna().all() and curves["train/loss_epoch"].notna().all()

    # Resume from the stage-1 checkpoint: stage 1 goes on to its last epoch, then stage 2.
    resumed = compose_train(
        tmp_path, root, "model=resnet1d_gru", f"paths.cache_dir={shared_cache}",
        "stage1.epochs=3", "stage2.epochs=1", f"ckpt_path={run_dir / 'stage1' / 'last.ckpt'}",
    )  # fmt: skip
    again = train(resumed)
    assert again["stages"]["stage1"]["epochs"] == 3
    assert "stage2" in again["stages"]


def test_label_refinement_reads_finished_runs_of_every_fold(tiny, tmp_path, shared_cache):
    root, _ = tiny
    first = ("model=resnet1d_gru", f"paths.cache_dir={shared_cache}", "debug=fast")
    source = tmp_path / "outputs" / "runs" / "tiny" / "resnet1d_gru"
    refine = (*first, "refine.enabled=true", f"refine.source={source}", "experiment_name=refined")
    with pytest.raises(HMSDataError, match=r"needs refine\.source"):
        train(compose_train(tmp_path, root, *first, "refine.enabled=true"))
    with pytest.raises(HMSDataError, match="own experiment folder"):  # it would overwrite them
        train(compose_train(tmp_path, root, *first, "refine.enabled=true",
                            f"refine.source={source}"))  # fmt: skip
    with pytest.raises(HMSDataError, match=r"folds \[0, 1, 2\] have no finished run"):
        train(compose_train(tmp_path, root, *refine))
    for fold in (0, 1, 2):
        train(compose_train(tmp_path, root, *first, f"fold={fold}"))
    (source / "fold2" / "complete.json").unlink()  # as a run killed after stage 1 leaves it
    with pytest.raises(HMSDataError, match=r"folds \[2\] have no finished run"):
        train(compose_train(tmp_path, root, *refine))
    train(compose_train(tmp_path, root, *first, "fold=2"))
    metrics = train(compose_train(tmp_path, root, *refine))
    assert "final" in metrics


def test_a_refused_rerun_keeps_the_finished_run_and_a_second_run_is_locked_out(
    tiny, tmp_path, shared_cache
):
    from hms import runs
    from hms.errors import HMSRunError

    root, _ = tiny
    cfg = compose_train(tmp_path, root, "model=resnet1d_gru", f"paths.cache_dir={shared_cache}",
                        "debug=fast")  # fmt: skip
    train(cfg)
    run_dir = Path(cfg.run_dir)
    record, why = runs.read_record(run_dir)
    assert record is not None and record["config_sha256"] == runs.config_digest(cfg), why
    # hms.pipeline reuses it for the same config only (display and logging keys aside).
    from hms.workflow import finished

    assert finished(cfg)
    shown = cfg.copy()
    shown.trainer.enable_progress_bar = True
    assert finished(shown)
    other = cfg.copy()
    other.seed = 7
    assert not finished(other)
    # A re-run refused for its settings or data (here: more folds than patients) leaves the
    # finished run as it was; one that gets past its checks removes the old outputs before it
    # trains (tests/test_faults.py kills such re-runs and finds nothing of the old run).
    before = {p.name: p.read_bytes() for p in run_dir.iterdir() if p.is_file()}
    bad = compose_train(tmp_path, root, "model=resnet1d_gru", f"paths.cache_dir={shared_cache}",
                        "debug=fast", "data.folds.n_folds=40")  # fmt: skip
    with pytest.raises(HMSDataError):
        train(bad)
    assert {p.name: p.read_bytes() for p in run_dir.iterdir() if p.is_file()} == before
    assert runs.read_record(run_dir)[0] is not None
    runs.clear_run(run_dir)  # what a run does first once its checks have passed
    left = {p.name for p in run_dir.iterdir()}
    assert left <= {runs.LOCK}, left
    assert runs.read_record(run_dir)[0] is None
    # A second run of the same folder while one holds it is refused, and leaves it as it was.
    train(cfg)
    with runs.run_lock(run_dir):
        with pytest.raises(HMSRunError, match="another run is using this run folder"):
            train(cfg)
        assert runs.read_record(run_dir)[0] is not None


def test_multirun_goes_on_after_a_failure_and_exits_non_zero(tiny, tmp_path, shared_cache):
    root, _ = tiny
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    out = subprocess.run(
        [sys.executable, "-m", "hms.train", "-m", "experiment=tiny", "model=resnet1d_gru",
         "fold=0,7,1", "debug=fast", f"data.data_dir={root}", f"paths.cache_dir={shared_cache}",
         f"paths.output_dir={tmp_path / 'outputs'}"],
        capture_output=True, text=True, cwd=tmp_path, env=env, timeout=600,
    )  # fmt: skip
    assert out.returncode == 1, out.stderr[-3000:]  # every job ran; one failed
    assert "fold must be in 0..2" in out.stderr
    runs = tmp_path / "outputs" / "runs" / "tiny" / "resnet1d_gru"
    for fold in (0, 1):
        _check_run(runs / f"fold{fold}")
    assert "fold must be in 0..2" in (runs / "fold7" / "error.txt").read_text()
    assert not (runs / "fold7" / "best.ckpt").exists()


def test_wandb_offline_run_is_written(tiny, tmp_path, shared_cache, monkeypatch):
    root, _ = tiny
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    cfg = compose_train(  # not fast_dev_run: it replaces the loggers with a dummy
        tmp_path, root, "model=resnet1d_gru", f"paths.cache_dir={shared_cache}", "logger=wandb",
        "tags=[test]", "+trainer.limit_train_batches=1", "+trainer.limit_val_batches=1",
        "stage2.enabled=false",
    )  # fmt: skip
    train(cfg)
    import wandb

    assert wandb.run is None  # the run was closed
    runs = list((Path(cfg.run_dir) / "wandb").glob("offline-run-*"))
    assert len(runs) == 1 and list(runs[0].glob("*.wandb"))


@pytest.mark.slow
def test_ddp_with_two_cpu_processes(tiny, tmp_path, shared_cache):
    """``trainer=ddp`` as on several GPUs, here with 2 CPU processes (gloo): both stages run,
    rank 0 alone writes the outputs, and validation gathers every validation sample."""
    root, _ = tiny
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    out = subprocess.run(
        [sys.executable, "-m", "hms.train", "experiment=tiny", "model=resnet1d_gru", "fold=0",
         "trainer=ddp", "trainer.accelerator=cpu", "trainer.devices=2",
         "trainer.precision=32-true", "trainer.sync_batchnorm=false",
         "trainer.enable_progress_bar=false",
         "data.num_workers=0", "data.pin_memory=false", "channels_last=false", "data.batch_size=2",
         f"data.data_dir={root}", f"paths.cache_dir={shared_cache}",
         f"paths.output_dir={tmp_path / 'outputs'}"],
        capture_output=True, text=True, cwd=tmp_path, env=env, timeout=900,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr[-3000:]
    run_dir = tmp_path / "outputs" / "runs" / "tiny" / "resnet1d_gru" / "fold0"
    metrics = _check_run(run_dir)
    assert set(metrics["stages"]) == {"stage1", "stage2"}
    logged = pd.read_csv(next(run_dir.glob("logs/version_*/metrics.csv")))
    assert logged["val/kl"].notna().any()
    assert "distributed_backend=gloo" in out.stderr + out.stdout


def test_slurm_launcher_config_composes(tmp_path):
    """``hydra/launcher=slurm`` selects submitit's SLURM launcher with our defaults."""
    with initialize_config_dir(str(conf_dir()), version_base="1.3"):
        cfg = compose(
            "train",
            overrides=["hydra/launcher=slurm", "hydra.launcher.partition=gpu"],
            return_hydra_config=True,
        )
    launcher = cfg.hydra.launcher
    assert (
        launcher._target_ == "hydra_plugins.hydra_submitit_launcher.submitit_launcher.SlurmLauncher"
    )
    assert launcher.partition == "gpu" and launcher.gpus_per_node == 1
    assert launcher.timeout_min > 0


@pytest.mark.slow
def test_sweep_through_submitit(tiny, tmp_path, shared_cache):
    """A fold sweep through the submitit launcher (its local executor: the same code path as
    SLURM without a cluster): every job writes its run folder; a failed job leaves its error.txt
    and makes the sweep exit non-zero."""
    root, _ = tiny
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    out = subprocess.run(
        [sys.executable, "-m", "hms.train", "-m", "hydra/launcher=submitit_local",
         "hydra.launcher.timeout_min=20", "experiment=tiny", "model=resnet1d_gru", "fold=0,7,1",
         "debug=fast", f"data.data_dir={root}", f"paths.cache_dir={shared_cache}",
         f"paths.output_dir={tmp_path / 'outputs'}"],
        capture_output=True, text=True, cwd=tmp_path, env=env, timeout=900,
    )  # fmt: skip
    assert out.returncode == 1, out.stderr[-3000:]  # every job ran; one failed
    runs = tmp_path / "outputs" / "runs" / "tiny" / "resnet1d_gru"
    for fold in (0, 1):
        _check_run(runs / f"fold{fold}")
    assert list((tmp_path / "outputs" / "runs" / "tiny").glob(".submitit/*"))
    assert "fold must be in 0..2" in (runs / "fold7" / "error.txt").read_text()


@pytest.mark.slow
@pytest.mark.parametrize("model", ("effnet_b0", "resnet1d_gru", "multispec_b0"))
def test_short_training_lowers_the_training_loss(model, tiny, tmp_path, shared_cache):
    """Each family learns: through hms.train with the demo's recipe for that model (its
    model_scale file: input size, widths, no masks or dropout), 30 short epochs on a tiny training
    fold bring the epoch-mean training KL well below where the first epochs start."""
    root, _ = tiny
    cfg = compose_train(
        tmp_path, root, f"model={model}", "scale=demo",
        f"paths.cache_dir={shared_cache}", "stage1.epochs=30", "stage1.monitor=null",
        "stage2.enabled=false", "data.batch_size=8", "optimizer.lr=3e-3",
        "refine.enabled=false",  # the demo's knowledge transfer needs the ResNet's runs
    )  # fmt: skip
    train(cfg)
    logs = pd.read_csv(next(Path(cfg.run_dir).glob("logs/version_*/metrics.csv")))
    loss = logs.groupby("epoch")["train/loss_epoch"].first().dropna()
    assert len(loss) == 30
    first, last = float(loss.iloc[:3].mean()), float(loss.iloc[-5:].mean())  # noisy: average
    assert last < 0.75 * first, loss.round(3).tolist()
