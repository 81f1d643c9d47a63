"""Fault injection: each command killed with SIGKILL at several points, then run again.

Every command runs as a real subprocess on the tiny preset. It is killed (its whole process
group, as a job scheduler or an out-of-memory kill of the job does) when a chosen point of its
work is reached, seen from outside by the files it has written so far. Then:

- what it left is not taken for finished (no completion record, no final file or folder);
- run again, it completes, and its outputs equal those of a run that was never interrupted;
- nothing stale is reused (a killed re-run with other settings leaves nothing of the old run).
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from hms import runs
from hms.blend import ENSEMBLE_FILE
from hms.ensembling import load_member
from hms.errors import HMSDataError
from tests.conftest import RESNET

pytestmark = pytest.mark.slow

ENV = {**os.environ, "OMP_NUM_THREADS": "1", "HYDRA_FULL_ERROR": "1"}


def command(verb: str, *args: str) -> list[str]:
    return [sys.executable, "-m", f"hms.{verb}", *args]


def run_ok(argv: list[str], cwd: Path) -> None:
    out = subprocess.run(argv, cwd=cwd, env=ENV, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, f"{argv[2]} failed:\n{out.stderr[-3000:]}"


def kill_at(argv: list[str], cwd: Path, point: Callable[[float], bool], what: str) -> None:
    """Run ``argv`` and SIGKILL its process group as soon as ``point(start)`` holds (``start``:
    the time it was started, so that an earlier run's leftovers do not count)."""
    start = time.time() - 0.05
    proc = subprocess.Popen(
        argv, cwd=cwd, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        start_new_session=True,
    )  # fmt: skip
    deadline = time.monotonic() + 600
    while proc.poll() is None and time.monotonic() < deadline:
        if point(start):
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            return
        time.sleep(0.005)
    err = proc.stderr.read().decode()[-2000:] if proc.stderr else ""
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGKILL)
    pytest.fail(f"{argv[2]} ended (status {proc.returncode}) before the kill point {what}: {err}")


def digests(root: Path, skip: tuple[str, ...] = ()) -> dict[str, str]:
    """SHA-256 of every file under ``root`` by relative path (names in ``skip`` left out)."""
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file() and p.name not in skip
    }


def exists(pattern: str, root: Path, count: int = 1) -> Callable[[float], bool]:
    """At least ``count`` paths matching ``pattern`` under ``root``, written since ``start``."""

    def point(start: float) -> bool:
        found = 0
        for path in root.glob(pattern):
            try:
                found += path.stat().st_mtime >= start
            except FileNotFoundError:  # renamed or removed meanwhile
                continue
        return found >= count

    return point


# --------------------------------------------------------------------------- synth


def test_synth_killed_then_run_again_equals_an_uninterrupted_run(tmp_path):
    # The reference is an uninterrupted run of the same command in the same environment: the
    # generator's samples depend on the number of BLAS threads (found 2026-12-07: 48 of the tiny
    # preset's 74 files differ between OMP_NUM_THREADS=1 and 2), which ENV sets to 1.
    reference = tmp_path / "reference"
    run_ok(command("synth", f"out_dir={reference}", "preset=tiny", "workers=1", "progress=false"),
           tmp_path)  # fmt: skip
    out = tmp_path / "tiny"
    argv = command("synth", f"out_dir={out}", "preset=tiny", "workers=1", "progress=false")
    points = {
        "tables written, rendering begun": exists("train.csv", out),
        "half of the train EEGs written": exists("train_eegs/*.parquet", out, count=15),
        "test EEGs being written": exists("test_eegs/*.parquet", out),
    }
    for what, point in points.items():
        kill_at(argv, tmp_path, point, what)
        assert not (out / "synth_meta.json").exists(), what  # not marked complete
        assert (out / ".synth_partial").exists(), what  # and marked as interrupted
    run_ok(argv, tmp_path)
    skip = ("synth_meta.json",)  # holds the seconds the generation took
    assert digests(out, skip) == digests(reference, skip)
    meta, ref = (json.loads((d / "synth_meta.json").read_text()) for d in (out, reference))
    for m in (meta, ref):
        m["summary"].pop("seconds")
    assert meta == ref


# --------------------------------------------------------------------------- prepare


def _cache_digests(cache: Path) -> dict[str, str]:
    found = {}
    for folder in sorted(p for p in cache.iterdir() if p.is_dir() and not p.name.startswith(".")):
        manifest = json.loads((folder / "manifest.json").read_text())
        for key in [
            k for k in manifest if k.endswith("seconds") or k == "created"
        ]:  # when, how long
            manifest.pop(key)
        found[folder.name] = json.dumps(manifest, sort_keys=True)
        for name, digest in digests(folder, skip=("manifest.json",)).items():
            found[f"{folder.name}/{name}"] = digest
    for file in sorted(cache.glob("folds-*.csv")):
        found[file.name] = hashlib.sha256(file.read_bytes()).hexdigest()
    return found


def test_prepare_killed_then_run_again_equals_an_uninterrupted_run(tiny, tmp_path):
    data, _ = tiny
    argv = lambda cache: command(  # noqa: E731
        "prepare", f"data_dir={data}", f"cache_dir={cache}", "workers=1"
    )
    run_ok(argv(tmp_path / "reference"), tmp_path)
    cache = tmp_path / "cache"
    points = {
        "train cache being built": exists(".train-*.building-*/eeg.bin", cache),
        "train cache done, test cache being built": exists(".test-*.building-*", cache),
    }
    for what, point in points.items():
        kill_at(argv(cache), tmp_path, point, what)
        for folder in cache.glob("[!.]*-*"):  # a cache folder is there only when complete
            assert (folder / "manifest.json").is_file(), (what, folder)
    run_ok(argv(cache), tmp_path)
    assert _cache_digests(cache) == _cache_digests(tmp_path / "reference")
    assert not list(cache.glob(".*.building-*"))  # the killed builds' leftovers are gone


# --------------------------------------------------------------------------- train


def train_argv(data: Path, cache: Path, out: Path, *extra: str) -> list[str]:
    return command(
        "train", "experiment=tiny", *RESNET, "fold=0", f"data.data_dir={data}",
        f"paths.cache_dir={cache}", f"paths.output_dir={out}", *extra,
    )  # fmt: skip


@pytest.fixture(scope="module")
def reference_run(tiny, tmp_path_factory) -> tuple[Path, Path]:
    """An uninterrupted hms.train run (fold 0) and the cache it shares with the others."""
    data, _ = tiny
    work = tmp_path_factory.mktemp("faults-train")
    run_ok(train_argv(data, work / "cache", work / "outputs"), work)
    return work / "outputs" / "runs" / "tiny" / "resnet1d_gru", work / "cache"


def _same_run(run: Path, reference: Path) -> None:
    for name in ("oof.parquet", "oof_stage1.parquet"):
        got, want = pd.read_parquet(run / name), pd.read_parquet(reference / name)
        pd.testing.assert_frame_equal(got, want)
    got, want = (json.loads((r / "metrics.json").read_text()) for r in (run, reference))
    np.testing.assert_equal(got["final"], want["final"])  # NaN (no high-agreement row) too
    for stage in want["stages"]:
        for key in ("val/kl", "val/kl_hq", "epochs"):
            np.testing.assert_equal(got["stages"][stage][key], want["stages"][stage][key])


def test_train_killed_then_run_again_equals_an_uninterrupted_run(reference_run, tiny, tmp_path):
    data, _ = tiny
    ref_runs, cache = reference_run
    out = tmp_path / "outputs"
    member = out / "runs" / "tiny" / "resnet1d_gru"
    run = member / "fold0"
    argv = train_argv(data, cache, out)
    # A finished run of other settings first: its outputs must not survive a killed re-run.
    run_ok(train_argv(data, cache, out, "stage1.epochs=2"), tmp_path)
    assert runs.read_record(run)[0] is not None
    old = digests(run)
    points = {
        "stage 1 training": exists("stage1", run),
        "stage 2 training (stage-1 OOF written)": exists("oof_stage1.parquet", run),
    }
    for what, point in points.items():
        kill_at(argv, tmp_path, point, what)
        record, why = runs.read_record(run)
        assert record is None and "no completion record" in why, what
        stale = [n for n in ("best.ckpt", "oof.parquet", "metrics.json") if n in digests(run)]
        assert not [n for n in stale if digests(run)[n] == old[n]], (what, stale)
        with pytest.raises(HMSDataError, match="unfinished runs: fold0"):
            load_member("resnet1d_gru", member, [0])  # hms.ensemble refuses it
    run_ok(argv, tmp_path)
    _same_run(run, ref_runs / "fold0")
    assert runs.read_record(run)[0] is not None  # marked finished again


# --------------------------------------------------------------------------- ensemble, predict


def ensemble_argv(runs_dir: Path, weights: Path, *extra: str) -> list[str]:
    return command(
        "ensemble", "ensemble=duo", "~ensemble.members.effnet_b0",
        "~ensemble.members.features_gbm", f"runs_dir={runs_dir}", f"weights_dir={weights}",
        "folds=[0]", *extra,
    )  # fmt: skip


def _ensemble_json(weights: Path) -> dict:
    """ensemble.json without what names the folder (its path, hence its config's digest) or the
    seconds the build took."""
    spec = json.loads((weights / ENSEMBLE_FILE).read_text())
    for key in ("seconds", "weights_dir", "report"):
        spec["cv"].pop(key, None)
    spec["built_from"].pop("config_sha256")
    return spec


def test_ensemble_and_predict_killed_then_run_again(reference_run, tiny, tmp_path):
    data, _ = tiny
    ref_runs, _ = reference_run
    ref_weights, weights = tmp_path / "ref-weights", tmp_path / "weights"
    run_ok(ensemble_argv(ref_runs.parent, ref_weights), tmp_path)

    # hms.ensemble killed while its report is drawn: no weights folder appears.
    building = exists(".weights.building-*/report/*.png", tmp_path)
    kill_at(ensemble_argv(ref_runs.parent, weights), tmp_path, building, "report being drawn")
    assert not weights.exists()
    run_ok(ensemble_argv(ref_runs.parent, weights), tmp_path)
    assert _ensemble_json(weights) == _ensemble_json(ref_weights)
    assert digests(weights, ("ensemble.json",)) == digests(ref_weights, ("ensemble.json",))
    # Killed while replacing the folder with another one: the old folder stays whole.
    before = digests(weights)
    kill_at(
        ensemble_argv(ref_runs.parent, weights, "use=configured"), tmp_path, building,
        "replacement's report being drawn",
    )  # fmt: skip
    assert digests(weights) == before

    # hms.predict: the reference submission, then killed runs over an older submission.
    ref_sub, sub, cache = tmp_path / "ref.csv", tmp_path / "submission.csv", tmp_path / "cache"
    predict = lambda out, *extra: command(  # noqa: E731
        "predict", f"test_path={data}", f"weights_dir={weights}", f"out={out}", "progress=false",
        *extra,
    )  # fmt: skip
    run_ok(predict(ref_sub), tmp_path)
    sub.write_text("an older submission\n")
    points = {
        "test cache being built": exists(".test-*.building-*", cache),
        "cache built, members predicting": exists("test-*/manifest.json", cache),
    }
    for what, point in points.items():
        kill_at(predict(sub, f"cache_dir={cache}"), tmp_path, point, what)
        assert sub.read_text() == "an older submission\n", what
    run_ok(predict(sub, f"cache_dir={cache}"), tmp_path)
    assert sub.read_bytes() == ref_sub.read_bytes()
