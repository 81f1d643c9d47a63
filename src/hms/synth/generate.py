"""Generate a synthetic HMS dataset: plan from the seed, write the tables, render every session
(in a process pool), then write ``synth_meta.json`` last as the mark of a complete dataset."""

from __future__ import annotations

import json
import logging
import shutil
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

from hms.constants import CONSENSUS_NAMES, VOTE_COLUMNS
from hms.data.io import atomic_path, check_writable, write_csv
from hms.errors import HMSDataError, check_int
from hms.parallel import run_jobs
from hms.synth.plan import Plan, Session, make_plan
from hms.synth.presets import get_preset
from hms.synth.render import render_session
from hms.synth.tables import (
    bayes_floor,
    events_frame,
    test_frames,
    train_frame,
    train_latent_frame,
)

log = logging.getLogger(__name__)

GENERATOR_VERSION = "2.0"
META_NAME = "synth_meta.json"
PARTIAL_NAME = ".synth_partial"  # present while a generation is under way (or was interrupted)
OUR_DIRS = ("train_eegs", "train_spectrograms", "test_eegs", "test_spectrograms")
OUR_FILES = (
    *("train.csv", "test.csv", "sample_submission.csv", "test_answers.csv", "test_latent.csv"),
    *("train_latent.csv", "events.csv", "patients.csv", META_NAME),
)


def _identity(preset: Any, seed: int, labels_only: bool) -> dict[str, Any]:
    """What makes two datasets the same (as JSON would store it: tuples become lists)."""
    ident = {"preset": asdict(preset), "seed": int(seed), "generator_version": GENERATOR_VERSION}
    ident["labels_only"] = bool(labels_only)
    return json.loads(json.dumps(ident))


def _existing(out: Path) -> dict[str, Any] | None:
    meta = out / META_NAME
    if not meta.is_file():
        return None
    try:
        found = json.loads(meta.read_text())
    except (OSError, json.JSONDecodeError):
        return None
    return found if isinstance(found, dict) else None


def _prepare(out: Path, identity: dict[str, Any], overwrite: bool) -> bool:
    """Clear what a previous generation left; return False if the same dataset is complete."""
    meta = _existing(out)
    if meta is not None:
        same = all(meta.get(k) == v for k, v in identity.items())
        if same and not overwrite:
            return False
        if not same and not overwrite:
            held = meta.get("preset")
            name = held.get("name") if isinstance(held, dict) else None
            raise HMSDataError(
                out,
                f"out_dir holds another synthetic dataset (preset {name!r}, seed "
                f"{meta.get('seed')!r}); choose another out_dir or pass overwrite=true to "
                "replace it",
            )
    elif (
        out.is_dir() and any(out.iterdir()) and not (out / PARTIAL_NAME).exists() and not overwrite
    ):
        raise HMSDataError(
            out,
            "out_dir is not empty and was not written by hms.synth; choose another out_dir or "
            "pass overwrite=true",
        )
    out.mkdir(parents=True, exist_ok=True)
    (out / PARTIAL_NAME).write_text(json.dumps(identity))
    for name in OUR_FILES:
        (out / name).unlink(missing_ok=True)
    for name in OUR_DIRS:
        if (out / name).is_dir():
            shutil.rmtree(out / name)
    return True


def _render_task(args: tuple[Session, int, str]) -> dict[str, float]:
    session, seed, root = args
    return render_session(session, seed, root)


def _render_all(plan: Plan, out: Path, workers: int, progress: bool) -> list[dict[str, float]]:
    sessions = [*plan.train, *plan.test]
    for name in OUR_DIRS:
        (out / name).mkdir(parents=True, exist_ok=True)
    tasks = [(s, plan.seed, str(out)) for s in sessions]
    # spawn: safe whatever the parent imported (torch, threads)
    return run_jobs(
        _render_task, tasks, workers, "synth sessions", "session", progress, chunksize=4
    )


def _summary(plan: Plan, tables: dict[str, Any], stats: list[dict[str, float]]) -> dict[str, Any]:
    train = tables["train"]
    votes = train[list(VOTE_COLUMNS)].to_numpy()
    latent = tables["train_latent"][list(VOTE_COLUMNS)].to_numpy()
    n = votes.sum(axis=1)
    answers = tables["test_answers.csv"][list(VOTE_COLUMNS)].to_numpy()
    test_latent = tables["test_latent.csv"][list(VOTE_COLUMNS)].to_numpy()
    uniform = np.full_like(latent, 1.0 / latent.shape[1])
    shares = train["expert_consensus"].value_counts(normalize=True)
    cont = [s for s in stats if "log_ratio" in s]
    return {
        "counts": {
            "train_patients": int(train["patient_id"].nunique()),
            "train_eegs": int(train["eeg_id"].nunique()),
            "train_spectrograms": int(train["spectrogram_id"].nunique()),
            "train_rows": len(train),
            "train_events": int(sum(len(x.events) for s in plan.train for x in s.excerpts)),
            "test_patients": int(tables["test.csv"]["patient_id"].nunique()),
            "test_eegs": len(tables["test.csv"]),
            "train_eeg_seconds": int(sum(x.length_s for s in plan.train for x in s.excerpts)),
        },
        "consensus_share": {c: round(float(shares.get(c, 0.0)), 4) for c in CONSENSUS_NAMES},
        "rows_under_10_votes": round(float((n < 10).mean()), 4),
        "bayes_floor_kl": {
            "train": round(bayes_floor(votes, latent), 4),
            "train_10plus_votes": round(bayes_floor(votes[n >= 10], latent[n >= 10]), 4)
            if (n >= 10).any()
            else None,
            "test": round(bayes_floor(answers, test_latent), 4),
            "train_uniform_prediction": round(bayes_floor(votes, uniform), 4),
        },
        "spectrogram_continuity": {
            "sessions_compared": len(cont),
            "mean_log_ratio_computed_vs_surrogate": round(
                float(np.mean([s["log_ratio"] for s in cont])), 4
            )
            if cont
            else None,
            "median_log_sd_computed": round(
                float(np.median([s["log_sd_computed"] for s in cont])), 4
            )
            if cont
            else None,
            "median_log_sd_surrogate": round(
                float(np.median([s["log_sd_surrogate"] for s in cont])), 4
            )
            if cont
            else None,
        },
    }


def generate(
    out_dir: str | Path,
    preset: str = "tiny",
    seed: int = 0,
    workers: int = 1,
    overwrite: bool = False,
    labels_only: bool = False,
    preset_overrides: dict[str, Any] | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Write a synthetic dataset in the Kaggle HMS layout under ``out_dir``; return its summary.

    If ``out_dir`` already holds the complete dataset of this preset and seed, nothing is
    written (``summary["skipped"]`` is True) unless ``overwrite``. ``labels_only`` writes the
    tables without rendering any signal (fast; for studying the labels).
    """
    # Arguments and the output folder first: nothing is written for a run that could not finish.
    out = Path(out_dir).expanduser()
    spec = get_preset(preset, preset_overrides)
    seed, workers = check_int("seed", seed, 0), check_int("workers", workers, 1)
    check_writable(out, "dataset folder", folder=True)
    identity = _identity(spec, seed, labels_only)
    if not _prepare(out, identity, overwrite):
        log.info("%s already holds the %s dataset for seed %d; skipping", out, preset, seed)
        meta = _existing(out) or {}
        return {**meta.get("summary", {}), "out_dir": str(out), "skipped": True}
    t0 = time.perf_counter()
    plan = make_plan(spec, seed)
    tables: dict[str, Any] = {"train": train_frame(plan), "train_latent": train_latent_frame(plan)}
    tables.update(test_frames(plan))
    write_csv(tables["train"], out / "train.csv")
    write_csv(tables["train_latent"], out / "train_latent.csv")
    for name in ("test.csv", "sample_submission.csv", "test_answers.csv", "test_latent.csv"):
        write_csv(tables[name], out / name)
    write_csv(events_frame(plan), out / "events.csv")
    write_csv(patients_frame(plan), out / "patients.csv")
    stats = [] if labels_only else _render_all(plan, out, workers, progress)
    summary = _summary(plan, tables, stats)
    summary["seconds"] = round(time.perf_counter() - t0, 1)
    meta = {
        **identity,
        "summary": summary,
        "files": {
            "events.csv": "rendered parameters of every event (primary class, neighbour, "
            "borderline m, amplitude ratio, artefact burden, raters, waveform/field)",
            "patients.csv": "background parameters of every patient",
            "train_latent.csv": "latent class distribution of each train label_id",
            "test_latent.csv": "latent class distribution of each test eeg_id",
            "test_answers.csv": "expert votes of each test eeg_id",
        },
    }
    with atomic_path(out / META_NAME) as tmp:
        tmp.write_text(json.dumps(meta, indent=2))
    (out / PARTIAL_NAME).unlink(missing_ok=True)
    return {**summary, "out_dir": str(out), "skipped": False}


def patients_frame(plan: Plan):
    """patients.csv: every patient's background parameters (dominant class, side, ...)."""
    import pandas as pd

    rows = []
    for p in plan.patients:
        d = asdict(p)
        fx, fy = d.pop("ekg_leak_focus")
        rows.append({**d, "ekg_leak_focus_x": fx, "ekg_leak_focus_y": fy})
    return pd.DataFrame(rows)
