"""A run folder's contract: what a finished run of ``hms.train`` holds, and how a reader knows.

A run folder (``outputs/runs/<experiment>/<model>/fold<k>``) is trusted only through its
completion record, ``complete.json``, which ``hms.training`` writes last, after every output:

- ``config_sha256``: the digest of the resolved config, leaving out what only changes how a run
  is shown or logged (``COSMETIC``);
- ``data``: what the run was built from: the train split's input fingerprint
  (``hms.data.cache.fingerprint``: the csv's bytes, the signal files' names, sizes and
  modification times), the cache folder and the folds file it read;
- ``files``: size and SHA-256 of each output (``best.ckpt``, ``oof.parquet``,
  ``oof_stage1.parquet``, ``metrics.json``, ``config.yaml``).

A run takes the folder's lock (``.lock``: a second run of the same folder is refused, not
interleaved); once its model and data are built it removes the record and every output it will
write again, so a run that is killed while it trains leaves a folder without a record, which no
reader takes for finished. ``read_record``
returns a record only when every file it names is there, unchanged; ``hms.pipeline`` (reuse),
``hms.ensembling`` (the members' runs) and label refinement (stage-1 predictions of every fold)
read runs through it.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import hashlib
import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from hms.data.io import atomic_path, file_digest
from hms.errors import HMSDataError, HMSRunError

RECORD = "complete.json"
RECORD_FORMAT = "hms-run/1"
LOCK = ".lock"
OUTPUTS = ("best.ckpt", "oof.parquet", "oof_stage1.parquet", "metrics.json", "config.yaml")
STAGE_DIRS = ("stage1", "stage2")
REPORT_DIR = "report"
ERROR_FILE = "error.txt"
COSMETIC = (
    "trainer.enable_progress_bar", "trainer.log_every_n_steps", "logger", "callbacks", "tags",
    "ckpt_path", "report",
)  # fmt: skip  # what only changes how a run is shown or logged, not what it computes


def config_digest(cfg: DictConfig | dict) -> str:
    """SHA-256 of the resolved config without the ``COSMETIC`` keys."""
    plain = OmegaConf.to_container(cfg, resolve=True) if OmegaConf.is_config(cfg) else cfg
    cfg = OmegaConf.create(plain)  # a copy, without the struct flag
    for key in COSMETIC:
        OmegaConf.update(cfg, key, None, force_add=True)
    blob = json.dumps(OmegaConf.to_container(cfg, resolve=True), sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()


@contextlib.contextmanager
def run_lock(run_dir: Path) -> Iterator[None]:
    """Hold the run folder's lock for the block; refuse at once if another process holds it.

    ``flock`` dies with its process, so a killed run never leaves the folder locked."""
    run_dir.mkdir(parents=True, exist_ok=True)
    with (run_dir / LOCK).open("a+") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            fh.seek(0)
            holder = fh.read().strip() or "another process"
            raise HMSRunError(
                f"{run_dir}: another run is using this run folder ({holder}); wait for it to "
                "end or give another experiment_name"
            ) from None
        fh.seek(0)
        fh.truncate()
        fh.write(f"pid {os.getpid()} on {os.uname().nodename}")
        fh.flush()
        try:
            yield
        finally:
            fh.seek(0)
            fh.truncate()
            fcntl.flock(fh, fcntl.LOCK_UN)


def clear_run(run_dir: Path, keep_stages: bool = False) -> None:
    """Remove the completion record first, then every output a run writes (the stage
    checkpoints too, unless the run resumes from one of them)."""
    (run_dir / RECORD).unlink(missing_ok=True)
    for name in (*OUTPUTS, ERROR_FILE):
        (run_dir / name).unlink(missing_ok=True)
    shutil.rmtree(run_dir / REPORT_DIR, ignore_errors=True)
    if not keep_stages:
        for stage in STAGE_DIRS:
            shutil.rmtree(run_dir / stage, ignore_errors=True)


def write_record(run_dir: Path, cfg: DictConfig, data: dict[str, Any]) -> dict[str, Any]:
    """The completion record, written last: the config digest, the data, the outputs' digests."""
    files = {name: file_digest(run_dir / name) for name in OUTPUTS if (run_dir / name).is_file()}
    missing = {"best.ckpt", "oof.parquet", "metrics.json", "config.yaml"} - set(files)
    if missing:
        raise HMSRunError(f"{run_dir}: cannot mark the run complete, {sorted(missing)} missing")
    record = {
        "format": RECORD_FORMAT,
        "config_sha256": config_digest(cfg),
        "experiment": str(cfg.experiment_name),
        "model": str(cfg.model.name),
        "fold": int(cfg.fold),
        "data": data,
        "files": files,
        "finished": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
    }
    with atomic_path(run_dir / RECORD) as tmp:
        tmp.write_text(json.dumps(record, indent=2))
    return record


def read_record(run_dir: Path, need: tuple[str, ...] = ()) -> tuple[dict[str, Any] | None, str]:
    """The run's completion record if every file it names is unchanged (and the files ``need``
    are among them), else ``(None, why)``."""
    path = run_dir / RECORD
    if not path.is_file():
        why = "interrupted, or running now" if (run_dir / "config.yaml").is_file() else "absent"
        return None, f"no completion record {RECORD} ({why})"
    try:
        record = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        return None, f"{RECORD} is not readable JSON ({exc})"
    if not isinstance(record, dict) or record.get("format") != RECORD_FORMAT:
        return None, f"{RECORD} is not an hms run record of format {RECORD_FORMAT}"
    files = record.get("files")
    if not isinstance(files, dict):
        return None, f"{RECORD} lists no files"
    for name in need:
        if name not in files:
            return None, f"the run wrote no {name}"
    for name, want in files.items():
        if name not in OUTPUTS:
            return None, f"{RECORD} names a file that is not a run output: {name!r}"
        file = run_dir / name
        if not file.is_file():
            return None, f"{name} is missing"
        if not isinstance(want, dict) or file.stat().st_size != want.get("size"):
            return None, f"{name} changed after the run finished (size)"
        if file_digest(file)["sha256"] != want.get("sha256"):
            return None, f"{name} changed after the run finished (content)"
    return record, ""


def require_record(run_dir: Path, need: tuple[str, ...] = ()) -> dict[str, Any]:
    """``read_record`` or an ``HMSDataError`` naming the folder and why it is not trusted."""
    record, why = read_record(run_dir, need)
    if record is None:
        raise HMSDataError(
            run_dir, f"not a finished hms.train run: {why}; train it again (python -m hms.train)"
        )
    return record
