"""End to end on the tiny built-in dataset: train two folds of two small members and the feature
baseline, ensemble, predict and score, through ``python -m hms.pipeline`` (the README's main
command, tiny-sized)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
from omegaconf import OmegaConf

from hms.constants import SUBMISSION_COLUMNS, VOTE_COLUMNS
from hms.errors import HMSDataError
from hms.metrics import kl_divergence
from hms.synth.generate import PARTIAL_NAME
from hms.workflow import ensure_data


@pytest.mark.slow
def test_pipeline_trains_ensembles_predicts_and_scores(tiny, tmp_path):
    root, _ = tiny
    data = tmp_path / "data"
    shutil.copytree(root, data)
    out = tmp_path / "outputs"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "WANDB_MODE": "disabled"}
    cmd = [
        sys.executable, "-m", "hms.pipeline", "experiment=tiny", f"data_dir={data}",
        "synth_preset=null", "ensemble=duo", "folds=[0,1]", f"paths.output_dir={out}",
        f"paths.cache_dir={tmp_path / 'cache'}",
        'train_overrides=["debug=fast","data.batch_size=4"]',
    ]  # fmt: skip
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    text = done.stdout
    for name in (
        "effnet_b0",
        "resnet1d_gru",
        "features_gbm (reference)",  # the feature baseline: scored, not blended
        "blend: fitted, CV by fold",
        "uniform",
        "Bayes floor",
    ):
        assert name in text, text

    sub = pd.read_csv(out / "submissions" / "tiny-duo.csv")
    test = pd.read_csv(data / "test.csv")
    assert list(sub.columns) == list(SUBMISSION_COLUMNS)
    assert sub["eeg_id"].tolist() == test["eeg_id"].tolist()
    np.testing.assert_allclose(sub[list(VOTE_COLUMNS)].sum(axis=1), 1.0, atol=1e-6)
    assert not sub.isna().any().any()

    scores = pd.read_csv(out / "submissions" / "tiny-duo-scores.csv").set_index("name")
    answers = pd.read_csv(data / "test_answers.csv").set_index("eeg_id").loc[sub["eeg_id"]]
    expected = kl_divergence(answers[list(VOTE_COLUMNS)].to_numpy(), sub[list(VOTE_COLUMNS)])
    assert abs(scores.loc["blend: fitted, in-sample", "test"] - expected) < 1e-9
    assert scores.loc["features_gbm", "reference"] == True  # noqa: E712 (scored, not blended)
    for model in ("effnet_b0", "resnet1d_gru", "features_gbm"):
        for fold in (0, 1):
            assert (out / "runs" / "tiny" / model / f"fold{fold}" / "best.ckpt").is_file()

    # Again: every run is reused (same resolved config), the table is the same.
    again = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=900)
    assert again.returncode == 0, again.stderr[-3000:]
    assert again.stdout.count("reusing") == 6

    # A subset of the members: only its runs (reused) and its rows; an unknown one is refused.
    one = [
        *cmd, "members=[resnet1d_gru]", f"weights_dir={tmp_path / 'one'}",
        f"submission={tmp_path / 'one.csv'}", f"scores={tmp_path / 'one-scores.csv'}",
    ]  # fmt: skip
    done = subprocess.run(one, capture_output=True, text=True, env=env, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.count("reusing") == 2 and "effnet_b0" not in done.stdout
    assert pd.read_csv(tmp_path / "one.csv")["eeg_id"].tolist() == test["eeg_id"].tolist()
    bad = subprocess.run([*one, "members=[resnet]"], capture_output=True, text=True, env=env)
    assert bad.returncode == 2 and "members=['resnet']" in bad.stderr, bad.stderr[-2000:]


def test_an_interrupted_synthesis_is_not_taken_for_data(tmp_path):
    """A killed hms.synth leaves train.csv beside its partial marker: the pipeline regenerates
    the built-in dataset (or, for a folder it was not asked to generate, says so); a complete
    built-in dataset of another seed is refused."""
    data = tmp_path / "d"
    data.mkdir()
    (data / "train.csv").write_text("eeg_id\n")  # what a generation killed midway leaves
    (data / PARTIAL_NAME).write_text("{}")
    cfg = OmegaConf.create({"data_dir": str(data), "synth_preset": None, "synth_seed": 0})
    with pytest.raises(HMSDataError, match=r"interrupted python -m hms\.synth"):
        ensure_data(cfg)
    cfg.synth_preset = "tiny"
    assert ensure_data(cfg) == data
    assert (data / "synth_meta.json").is_file() and not (data / PARTIAL_NAME).exists()
    assert len(pd.read_csv(data / "train.csv")) > 0
    assert ensure_data(cfg) == data  # complete: used as it is
    cfg.synth_seed = 1  # another built-in dataset than the one there: refused, not used
    with pytest.raises(HMSDataError, match="holds another synthetic dataset"):
        ensure_data(cfg)
