"""Output a person can read (issue 25, item 5): where stderr is not a terminal, progress is a
line per phase (and, in a long phase, a line a minute), and training a line per epoch, never a
redrawn bar; ``logger=tensorboard`` works from the README's set-up and writes event files."""

from __future__ import annotations

import io
import os
import subprocess
import sys
import time

import pytest

from hms import progress as progress_module
from hms.parallel import run_jobs
from hms.progress import LineProgress, is_terminal, progress

from .conftest import RESNET


def _square(x: int) -> int:
    return x * x


def test_a_phase_is_one_line_where_stderr_is_not_a_terminal(capsys, monkeypatch):
    monkeypatch.delenv("HMS_PROGRESS", raising=False)
    assert not is_terminal()  # pytest's capture is not a terminal
    assert run_jobs(_square, list(range(7)), 1, "squares", unit="number") == [
        x * x for x in range(7)
    ]
    err = capsys.readouterr().err
    assert "\r" not in err
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("squares: 7/7 numbers in "), err
    for _ in progress(range(3), desc="batches", unit="batch"):
        pass
    assert capsys.readouterr().err.startswith("batches: 3/3 batches in ")
    for _ in progress(range(3), desc="silent", enabled=False):
        pass
    assert capsys.readouterr().err == ""


def test_a_long_phase_says_how_far_it_is_and_a_failed_one_says_nothing(monkeypatch):
    stream = io.StringIO()
    bar = LineProgress(total=4, desc="windows", unit="window", interval=0.05, stream=stream)
    for _ in range(4):
        time.sleep(0.06)
        bar.update()
    bar.close()
    lines = stream.getvalue().splitlines()
    assert len(lines) >= 3 and lines[-1].startswith("windows: 4/4 windows in "), lines
    assert "left" in lines[0] and lines[0].startswith("windows: 1/4 windows in ")
    stream = io.StringIO()
    bar = LineProgress(total=10, desc="files", unit="file", stream=stream)
    bar.update(3)
    bar.close()  # a phase stopped by an error: the error is the line to read
    assert stream.getvalue() == ""
    monkeypatch.setenv("HMS_PROGRESS", "bar")
    assert is_terminal()
    assert not isinstance(progress(range(2)), LineProgress)  # tqdm's bar
    monkeypatch.setenv("HMS_PROGRESS", "lines")
    assert isinstance(progress(range(2)), LineProgress)
    monkeypatch.setenv(progress_module.ENV_INTERVAL, "nonsense")
    assert LineProgress(total=1).interval == progress_module.DEFAULT_INTERVAL_S


def test_training_logs_a_line_per_epoch_and_tensorboard_writes_its_events(tiny, tmp_path):
    """``hms.train`` with its progress bar on, its stderr a pipe (as under nohup or in CI): one
    line per epoch with the epoch's losses, no carriage return; ``logger=tensorboard`` (the
    dev set-up installs tensorboard) writes event files in the run folder."""
    root, _ = tiny
    env = {**os.environ, "OMP_NUM_THREADS": "1", "WANDB_MODE": "disabled"}
    env.pop("HMS_PROGRESS", None)
    cmd = [
        sys.executable, "-m", "hms.train", "experiment=tiny", *RESNET, "fold=0",
        f"data.data_dir={root}", f"paths.output_dir={tmp_path / 'out'}",
        f"paths.cache_dir={tmp_path / 'cache'}", "trainer.enable_progress_bar=true",
        "stage1.epochs=3", "stage2.epochs=1", "logger=tensorboard", "data.prepare_workers=2",
    ]  # fmt: skip
    done = subprocess.run(cmd, capture_output=True, env=env, timeout=600)  # bytes: \r kept
    log = (done.stdout + done.stderr).decode()
    assert done.returncode == 0, log[-3000:]
    assert "\r" not in log, log[-2000:]
    epochs = [line for line in log.splitlines() if " epoch " in line and "/loss" in line]
    assert [line.split(":")[0] for line in epochs] == [
        "[resnet1d_gru fold 0] stage1 epoch 1/3", "[resnet1d_gru fold 0] stage1 epoch 2/3",
        "[resnet1d_gru fold 0] stage1 epoch 3/3", "[resnet1d_gru fold 0] stage2 epoch 1/1",
    ]  # fmt: skip
    assert all("train/loss " in line and "val/kl " in line for line in epochs), epochs
    assert any(line.startswith("train EEGs: ") for line in log.splitlines())
    assert len(log) < 20_000, len(log)  # the summary tables and a line per phase and epoch
    events = list((tmp_path / "out").rglob("events.out.tfevents.*"))
    assert events and all(e.stat().st_size > 0 for e in events), events
    assert "tensorboard" in {p.name for p in events[0].parents}


@pytest.mark.parametrize("mode", ["lines", "bar"])
def test_predict_shows_phases_as_lines_unless_asked_for_bars(mode, weights, tiny, tmp_path):
    root, _ = tiny
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HMS_PROGRESS": mode}
    done = subprocess.run(
        [sys.executable, "-m", "hms.predict", f"test_path={root}", f"weights_dir={weights}",
         f"out={tmp_path / 'sub.csv'}", "device=cpu"],
        capture_output=True, env=env, timeout=600,
    )  # fmt: skip  # bytes, so that a carriage return stays one
    err = done.stderr.decode()
    assert done.returncode == 0, err[-2000:]
    if mode == "lines":
        assert "\r" not in err
        lines = err.splitlines()
        assert any(line.startswith("test EEGs: 8/8 files in ") for line in lines), lines
        assert any(line.startswith("resnet1d_gru 2/2: 1/1 batch in ") for line in lines), lines
    else:
        assert "\r" in err  # tqdm's bar, as on a terminal
    assert (tmp_path / "sub.csv").is_file()


def test_progress_writes_where_tqdm_writes(monkeypatch, capsys):
    """Lines go to stderr (as tqdm's bars), so ``> file`` keeps stdout's results apart."""
    monkeypatch.setenv("HMS_PROGRESS", "lines")
    bar = progress(total=1, desc="x")
    bar.update()
    bar.close()
    out = capsys.readouterr()
    assert out.out == "" and out.err.startswith("x: 1/1 step in ")
