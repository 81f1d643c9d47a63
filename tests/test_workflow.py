"""The pipeline's library (hms.workflow): the order of its runs."""

from __future__ import annotations

from contextlib import contextmanager

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from omegaconf import OmegaConf, open_dict

from hms.cli import conf_dir
from hms.errors import HMSDataError
from hms.workflow import (
    check_arguments,
    ensemble_config,
    plan_runs,
    pretrain_config,
    pretrain_source,
    teachers_first,
    train_config,
)


@contextmanager
def pipeline_config(*overrides: str):
    """The demo pipeline's config (as the command composes it) inside an initialised Hydra, so
    that the run configs can be composed from it."""
    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(str(conf_dir()), version_base="1.3"):
            cfg = compose("pipeline", overrides=list(overrides))
            with open_dict(cfg):
                cfg.choices = {"experiment": "demo", "ensemble": "demo"}
            yield cfg
    finally:
        GlobalHydra.instance().clear()


def run(root, member: str, fold: int, sources=None):
    refine = {"enabled": bool(sources), "source": [f"{root}/{s}" for s in sources or []]}
    return member, fold, OmegaConf.create({"run_dir": f"{root}/{member}/fold{fold}",
                                           "refine": refine})  # fmt: skip


def test_students_run_after_every_fold_of_their_teachers(tmp_path):
    plan = [
        run(tmp_path, "effnet_b0", 0, ["resnet1d_gru"]),
        run(tmp_path, "effnet_b0", 1, ["resnet1d_gru"]),
        run(tmp_path, "resnet1d_gru", 0), run(tmp_path, "resnet1d_gru", 1),
        run(tmp_path, "multispec_b0", 0, ["resnet1d_gru", "features_gbm"]),
        run(tmp_path, "features_gbm", 0),
    ]  # fmt: skip
    order = [(m, f) for m, f, _ in teachers_first(plan)]
    assert order == [
        ("resnet1d_gru", 0), ("resnet1d_gru", 1), ("effnet_b0", 0), ("effnet_b0", 1),
        ("features_gbm", 0), ("multispec_b0", 0),
    ]  # fmt: skip
    plain = [run(tmp_path, "a", 0), run(tmp_path, "b", 0), run(tmp_path, "a", 1)]
    assert [(m, f) for m, f, _ in teachers_first(plain)] == [("a", 0), ("a", 1), ("b", 0)]


def test_a_cycle_of_teachers_is_refused(tmp_path):
    plan = [run(tmp_path, "a", 0, ["b"]), run(tmp_path, "b", 0, ["a"])]
    with pytest.raises(HMSDataError, match=r"members \['a', 'b'\] refine from each other"):
        teachers_first(plan)


def test_the_blend_gets_the_ensemble_the_pipelines_command_line_changed(tmp_path):
    """``python -m hms.pipeline members=[eeg_transformer] '+ensemble.members.eeg_transformer=
    {weight: 0.15}'`` (docs/architecture.md): the member added on the command line is blended."""
    overrides = [f"paths.root_dir={tmp_path}", "members=[eeg_transformer]",
                 "+ensemble.members.eeg_transformer={weight: 0.15}"]  # fmt: skip
    with pipeline_config(*overrides) as cfg:
        members = check_arguments(cfg)
        ens_cfg = ensemble_config(cfg, members)
    assert members == ["eeg_transformer"]
    assert OmegaConf.to_container(ens_cfg.ensemble.members) == {"eeg_transformer": {"weight": 0.15}}
    assert ens_cfg.weights_dir == cfg.weights_dir and list(ens_cfg.folds) == list(cfg.folds)


@pytest.mark.parametrize(
    ("model", "files"),
    [
        ("effnet_b0", {"effnet_b0": "effnet_b0", "multispec_b0": "effnet_b0"}),
        ("own", {"effnet_b0": "effnet_b0", "multispec_b0": "multispec_b0"}),
        (None, {"effnet_b0": "multispec_b0", "multispec_b0": "multispec_b0"}),  # the default
    ],
)
def test_the_pretrained_members_start_from_the_file_their_pretraining_writes(
    tmp_path, model, files
):
    """``pretrain.model``: one backbone the members share, or each member's own image (own):
    every run config of a pretrained member names the file that pretraining writes, the others
    start as configured."""
    overrides = [f"paths.root_dir={tmp_path}", "pretrain.enabled=true"]
    overrides += [f"pretrain.model={model}"] if model else []
    with pipeline_config(*overrides) as cfg:
        epochs = cfg.pretrain.epochs
        members = check_arguments(cfg)
        runs = {m: train_config(cfg, m, 0) for m in members}
        sources = {m: pretrain_source(cfg, m) for m in members}
        pretrains = {s: pretrain_config(cfg, s) for s in set(sources.values()) - {None}}
    folder = tmp_path / "outputs" / "pretrained" / "demo"
    assert {m: s for m, s in sources.items() if s} == files
    for member, source in files.items():
        assert runs[member].pretrained
        assert runs[member].pretrained_file == str(folder / f"{source}.pth")
        assert pretrains[source].model.name == source
        assert pretrains[source].pretrain.out == runs[member].pretrained_file
        assert pretrains[source].pretrain.epochs == epochs
    for member in set(members) - set(files):
        assert runs[member].pretrained_file is None and sources[member] is None


def test_the_main_command_starts_the_image_members_from_imagenet_and_the_resnet(tmp_path):
    """The main command (no override: experiment=demo): no self-supervised pretraining; the image
    members start from the ImageNet weights the set-up installs and learn the few-rater targets
    half from the ResNet1D-GRU's out-of-fold predictions, whose runs are planned first."""
    with pipeline_config(f"paths.root_dir={tmp_path}") as cfg:
        members = check_arguments(cfg)
        plan = plan_runs(cfg, members)
    assert not cfg.pretrain.enabled
    runs = {m: c for m, f, c in plan if f == 0}
    teacher = str(tmp_path / "outputs" / "runs" / "demo" / "resnet1d_gru")
    for member in ("effnet_b0", "multispec_b0"):
        run = runs[member]
        assert run.model.net.pretrained and run.pretrained_file is None
        assert run.model.net.backbone == "tf_efficientnet_lite0"
        assert run.refine.enabled and str(run.refine.source) == teacher
    assert not runs["resnet1d_gru"].refine.enabled
    order = [m for m, _, _ in plan]
    assert order.index("resnet1d_gru") < min(order.index("effnet_b0"), order.index("multispec_b0"))


def test_the_longer_cpu_recipe_starts_the_image_members_from_imagenet(tmp_path):
    """experiment=cpu_long inherits the demo's recipe: its image members start from the ImageNet
    weights the set-up installs, without self-supervised pretraining (docs/learning.md)."""
    with pipeline_config(f"paths.root_dir={tmp_path}", "experiment=cpu_long") as cfg:
        with open_dict(cfg):
            cfg.choices.experiment = "cpu_long"
        members = check_arguments(cfg)
        runs = {m: train_config(cfg, m, 0) for m in members}
    assert not cfg.pretrain.enabled and {pretrain_source(cfg, m) for m in members} == {None}
    assert not any(run.pretrained_file for run in runs.values())
    for member in ("effnet_b0", "multispec_b0"):
        net = runs[member].model.net
        assert net.pretrained and net.backbone == "tf_efficientnet_lite0"
    assert runs["effnet_b0"].data.data_dir == str(tmp_path / "data" / "large")


def test_a_pretraining_model_that_does_not_exist_is_refused_before_any_work(tmp_path):
    from hms.workflow import run_pipeline

    root = tmp_path / "work"
    typo = (f"paths.root_dir={root}", "pretrain.enabled=true", "pretrain.model=efnet_b0")
    refused = r"pretrain.model must be one of \['own', .*got 'efnet_b0'"
    with pipeline_config(*typo) as cfg, pytest.raises(HMSDataError, match=refused):
        run_pipeline(cfg)
    assert not root.exists()  # no data generated, nothing written
