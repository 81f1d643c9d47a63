"""Self-supervised pretraining (hms.pretraining, python -m hms.pretrain): it learns the pretext on
the built-in data, writes a file that the image members load through timm, and refuses what it
cannot pretrain."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate

from hms.cli import conf_dir
from hms.data.io import file_digest
from hms.errors import HMSDataError
from hms.pretraining import (
    CLIP,
    finished_pretraining,
    one_cycle,
    pretext_views,
    pretrain,
    run_pretraining,
    standardised,
    target_scale,
)
from tests.conftest import EFFNET, compose_train


def test_pretraining_learns_the_features_and_the_image_members_load_it(tiny, tmp_path: Path):
    root, _ = tiny
    out = tmp_path / "pretrained" / "effnet_b0.pth"
    overrides = [
        "experiment=tiny", *EFFNET, f"data.data_dir={root}",
        f"paths.cache_dir={tmp_path / 'cache'}", f"paths.output_dir={tmp_path / 'outputs'}",
        "data.batch_size=8", "pretrain.epochs=4",
        "pretrain.stats_batches=4", f"pretrain.out={out}",
    ]  # fmt: skip
    proc = subprocess.run(
        [sys.executable, "-m", "hms.pretrain", *overrides],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert f"pretrained_file={out}" in proc.stdout
    meta = json.loads(out.with_name(out.name + ".json").read_text())
    assert meta["model"] == "effnet_b0" and meta["epochs"] == 4 and meta["n_features"] > 100
    assert meta["epoch_loss"][-1] < meta["epoch_loss"][0]  # the pretext is learned
    # no temporary file left behind
    assert {p.name for p in out.parent.iterdir()} == {out.name, out.name + ".json"}

    saved = torch.load(out, weights_only=True)
    assert not any(k.startswith("classifier.") for k in saved)
    # Both image members read the file through timm: effnet_b0 and multispec_b0 (whose image,
    # Kaggle and EEG maps side by side, has the same single channel).
    for model in (EFFNET, ("model=multispec_b0",)):
        cfg = compose_train(tmp_path, root, *model, "pretrained=true", f"pretrained_file={out}")
        backbone = instantiate(cfg.model, _convert_="all").net.backbone.state_dict()
        assert all(torch.equal(backbone[k], v) for k, v in saved.items())
    fresh = compose_train(tmp_path, root, *EFFNET, "pretrained=false")
    stem = instantiate(fresh.model, _convert_="all").net.backbone.state_dict()["conv_stem.weight"]
    assert not torch.equal(stem, saved["conv_stem.weight"])

    # The record says which pretraining the file holds: the same config finds it finished, a
    # changed setting or a changed file does not.
    with initialize_config_dir(str(conf_dir()), version_base="1.3"):
        same = compose("pretrain", overrides=overrides)
        other = compose("pretrain", overrides=[*overrides, "pretrain.epochs=5"])
    assert finished_pretraining(same) is not None and finished_pretraining(other) is None
    assert meta["sha256"] == file_digest(out)["sha256"]
    out.write_bytes(out.read_bytes()[:-1] + b"x")
    assert finished_pretraining(same) is None


def test_the_same_config_pretrains_the_same_backbone(tiny, tmp_path: Path):
    """The seed fixes the backbone's random start, the windows and their order: two pretrainings
    of one config (one process, whatever ran before) write the same weights."""
    root, _ = tiny
    overrides = [
        "experiment=tiny", *EFFNET, f"data.data_dir={root}",
        f"paths.cache_dir={tmp_path / 'cache'}", f"paths.output_dir={tmp_path / 'outputs'}",
        "data.batch_size=8", "pretrain.epochs=1", "pretrain.stats_batches=2", "seed=3",
    ]  # fmt: skip
    files = [tmp_path / "a.pth", tmp_path / "b.pth"]
    with initialize_config_dir(str(conf_dir()), version_base="1.3"):
        cfgs = [compose("pretrain", overrides=[*overrides, f"pretrain.out={f}"]) for f in files]
    losses = [run_pretraining(cfg).epoch_loss for cfg in cfgs]
    first, second = (torch.load(f, weights_only=True) for f in files)
    assert losses[0] == losses[1]
    assert first.keys() == second.keys()
    assert all(torch.equal(first[k], second[k]) for k in first)


def test_a_member_that_reads_the_kaggle_spectrogram_pretrains_on_its_own_image(
    tiny, tmp_path: Path
):
    """multispec_b0's backbone learns the pretext from its own image (Kaggle and EEG maps side
    by side), the targets from the same window's EEG; the Kaggle half is read."""
    root, _ = tiny
    small = ("model=multispec_b0", "model.net.map_size=[16,64]", *EFFNET[1:])  # the demo's size
    cfg = compose_train(tmp_path, root, *small, "pretrained=false")
    module = instantiate(cfg.model, _convert_="all")
    assert pretext_views(module.net) == ("eeg", "spec")
    dm = instantiate(cfg.data, views=list(pretext_views(module.net)))
    dm.prepare_data()
    dm.setup()
    seen: list[tuple[str, ...]] = []
    image = module.net.image
    module.net.image = lambda batch: seen.append(tuple(sorted(batch))) or image(batch)
    done = pretrain(module.net, dm, tmp_path / "m.pth", 2, 8, 3e-3, 0.01, 0, stats_batches=2)
    assert seen and set(seen) == {("eeg", "spec")}
    assert len(done.epoch_loss) == 2 and all(map(math.isfinite, done.epoch_loss))
    loaded = compose_train(
        tmp_path, root, *small, "pretrained=true", f"pretrained_file={done.path}"
    )
    backbone = instantiate(loaded.model, _convert_="all").net.backbone.state_dict()
    saved = torch.load(done.path, weights_only=True)
    assert all(torch.equal(backbone[k], v) for k, v in saved.items())

    eeg_only = instantiate(cfg.data, views=["eeg"])
    eeg_only.prepare_data()
    eeg_only.setup()
    with pytest.raises(HMSDataError, match=r"needs the views \['eeg', 'spec'\]"):
        pretrain(module.net, eeg_only, tmp_path / "x.pth", 1, 8, 1e-3, 0.0, 0)
    assert not (tmp_path / "x.pth").exists()


def test_pretraining_refuses_a_member_that_is_not_an_image_model(tiny, tmp_path: Path):
    root, _ = tiny
    cfg = compose_train(tmp_path, root, "model=resnet1d_gru", "pretrained=false")
    net = instantiate(cfg.model, _convert_="all").net
    with pytest.raises(HMSDataError, match="needs an image member"):
        pretrain(net, None, tmp_path / "x.pth", 1, 4, 1e-3, 0.0, 0)  # type: ignore[arg-type]
    assert not (tmp_path / "x.pth").exists()


@pytest.mark.slow
def test_the_pipeline_pretrains_once_and_its_members_start_from_the_file(tiny, tmp_path: Path):
    """``python -m hms.pipeline pretrain.enabled=true pretrain.model=own``: the backbone is
    pretrained on the member's own image before the member's runs, which start from it; a
    second run reuses the file and the runs; pretraining again with other settings trains those
    runs again."""
    root, _ = tiny
    out = tmp_path / "outputs"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "WANDB_MODE": "disabled"}
    effnet = ",".join(f'"{o}"' for o in EFFNET[1:])
    cmd = [
        sys.executable, "-m", "hms.pipeline", "experiment=tiny", f"data_dir={root}",
        "synth_preset=null", "ensemble=duo", "members=[effnet_b0]", "folds=[0,1]",
        f"paths.output_dir={out}", f"paths.cache_dir={tmp_path / 'cache'}",
        f'train_overrides=["debug=fast","data.batch_size=4",{effnet}]',
        "pretrain.enabled=true", "pretrain.epochs=2", "pretrain.members=[effnet_b0]",
        "pretrain.model=own",
    ]  # fmt: skip
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    weights = out / "pretrained" / "tiny" / "effnet_b0.pth"
    assert "pretrain epoch 2/2" in done.stdout and f"pretrained backbone: {weights}" in done.stdout
    digest = file_digest(weights)
    for fold in (0, 1):
        record = json.loads((out / "runs/tiny/effnet_b0" / f"fold{fold}/complete.json").read_text())
        assert record["data"]["pretrained_file"] == digest

    again = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=900)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "pretrain epoch" not in again.stdout and again.stdout.count("reusing") == 2
    assert file_digest(weights) == digest

    longer = subprocess.run(
        [*cmd, "pretrain.epochs=3"], capture_output=True, text=True, env=env, timeout=900
    )
    assert longer.returncode == 0, longer.stderr[-3000:]
    assert "pretrain epoch 3/3" in longer.stdout and "reusing" not in longer.stdout


def test_targets_are_standardised_and_a_feature_undefined_on_a_window_is_not_a_nan():
    """A feature that is not finite on some window (e.g. a ratio over a flat chain) neither
    spoils the statistics nor makes a target NaN."""
    torch.manual_seed(0)
    values = torch.randn(64, 3) * torch.tensor([1.0, 10.0, 0.1]) + torch.tensor([0.0, 5.0, -1.0])
    values[3, 0], values[7, 1], values[9, 2] = float("nan"), float("inf"), float("-inf")
    centre, spread = target_scale(lambda eeg: eeg, [{"eeg": values[:32]}, {"eeg": values[32:]}])
    finite = values[:, 1][torch.isfinite(values[:, 1])]
    assert torch.isclose(centre[1], finite.median(), atol=0.5)  # the finite values' median
    assert torch.isfinite(centre).all() and (spread > 0).all()
    z = standardised(values, centre, spread)
    assert torch.isfinite(z).all() and z.abs().max() <= CLIP
    assert z[3, 0] == 0 and z[7, 1] == CLIP and z[9, 2] == -CLIP
    # the scale makes the three features comparable
    assert torch.allclose(z.std(dim=0), z.std(dim=0).mean(), rtol=0.5)


@pytest.mark.parametrize("steps", [1, 2, 3, 4, 10, 11, 40])
def test_the_schedule_runs_every_step_of_any_length(steps: int):
    """torch's OneCycleLR divides by zero when its warm-up is a single step (10 steps at 0.1):
    the pretraining schedule runs any number of steps and peaks at the learning rate."""
    param = torch.nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.AdamW([param], lr=1e-3)
    schedule = one_cycle(optimizer, 1e-3, steps)
    rates = []
    for _ in range(steps):
        rates.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        schedule.step()
    assert max(rates) == pytest.approx(1e-3) and all(0 < r <= 1e-3 * (1 + 1e-9) for r in rates)
