"""scripts/gpu_validate.py --smoke: the GPU measurement's steps on the tiny preset on the CPU, so
that the script a GPU session depends on runs end to end between those sessions."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_smoke_runs_every_step_and_reports(tmp_path):
    env = {**os.environ, "WANDB_MODE": "disabled", "OMP_NUM_THREADS": "1"}
    results = tmp_path / "results"
    done = subprocess.run(
        [sys.executable, "scripts/gpu_validate.py", "--smoke", "--results", str(results)],
        cwd=ROOT, capture_output=True, text=True, env=env, timeout=900, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    for step in ("env", "data", "throughput", "quality", "correctness", "predict"):
        assert (results / f"{step}.json").is_file(), step
    data = json.loads((results / "data.json").read_text())
    assert data["preset"] == "tiny" and data["counts"]["train_eegs"] == 30
    rows = json.loads((results / "throughput.json").read_text())["rows"]
    assert {r["model"] for r in rows} == {"effnet_b0", "resnet1d_gru", "multispec_b0",
                                          "multispec_b1"}  # fmt: skip
    assert all(r["model_samples_s"] > 0 and r["data_samples_s"] > 0 for r in rows)
    quality = json.loads((results / "quality.json").read_text())
    names = {r["name"] for r in quality["table"]}
    assert {"effnet_b0", "resnet1d_gru", "features_gbm", "uniform"} <= names
    assert all(0 < r["test"] < 5 for r in quality["table"] if r["name"] in MEMBER_ROWS)
    correct = json.loads((results / "correctness.json").read_text())
    assert correct["within_tolerance"], correct
    assert set(correct["training_step"]) == set(MEMBER_ROWS[:4])
    assert correct["predict_abs"] == 0 and correct["onnx_abs"] <= 1e-4  # on the CPU, smoke
    pred = json.loads((results / "predict.json").read_text())
    assert pred["test_eegs_per_s"]["reused"] > 0 and pred["annotate"][0]["windows"] > 0
    assert pred["test_eegs_per_s"]["onnx"]["reused"] > 0
    report = (results / "report.md").read_text()
    assert "| effnet_b0 |" in report and "test EEGs/s" in report


MEMBER_ROWS = ("effnet_b0", "resnet1d_gru", "multispec_b0", "multispec_b1", "features_gbm")
