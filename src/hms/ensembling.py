"""Fold runs -> an ensemble: the work of ``python -m hms.ensemble`` (and of the pipeline).

``build_ensemble(cfg)`` reads each member's out-of-fold predictions
(``<runs_dir>/<member>/fold*/oof.parquet``), aligns them by sample, and scores the
cross-validated KL (all samples, and those with >= 10 votes) of

- every member alone,
- the configured blend (``conf/ensemble/<name>.yaml``; ``seed`` is the seed solution's 0.50 /
  0.15 / 0.35),
- weights fitted on the OOF predictions (non-negative, summing to 1; optionally a per-class bias),
  scored twice: in-sample (optimistic) and cross-validated by fold (weights fitted on the other
  folds, applied to the held-out one): the number to trust.

A member marked ``blend: false`` (the feature baseline in ``conf/ensemble/seed.yaml``) is a
reference: it is scored, written and predicted like the others, with weight 0 in every blend.

It then writes the chosen ensemble (``use=configured|fitted``) to ``weights_dir``: the member
checkpoints (``<member>/fold<k>.ckpt``) and ``ensemble.json`` (``hms.blend``), which
``hms.predict`` reads, and the report (``hms.report.ensemble_report``). The folder is built
beside the target and renamed into place, so an interrupted run never leaves half an ensemble.
``format_table`` is the table the command prints.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from omegaconf import DictConfig, OmegaConf
from scipy.optimize import minimize

import hms
from hms import runs as run_records
from hms.blend import (
    ENSEMBLE_FILE,
    MAX_FILES_PER_MEMBER,
    MAX_MEMBERS,
    MEMBER_NAME,
    SPACES,
    EnsembleSpec,
    blend,
    read_ensemble,
)
from hms.constants import HQ_VOTES, N_CLASSES, VOTE_COLUMNS
from hms.data.io import atomic_dir, check_writable, file_digest, output_lock, write_parquet
from hms.data.labels import TARGET_COLUMNS
from hms.errors import HMSDataError, check_choice
from hms.metrics import kl_per_row, kl_summary
from hms.report import ensemble_report

# The keys of the table's rows other than the members' (whose key is the member's name).
ROW_CONFIGURED, ROW_FITTED, ROW_FITTED_CV, ROW_UNIFORM = (
    "blend:configured", "blend:fitted", "blend:fitted_cv", "uniform",
)  # fmt: skip
BLEND_ROWS = {"configured": ROW_CONFIGURED, "fitted": ROW_FITTED}  # by the ``use`` setting

_KEYS = ["sample_id", "eeg_id", "patient_id", "fold"]


@dataclass
class MemberRuns:
    """One member's fold runs: OOF rows (sorted by sample_id), the run folders and their
    completion records by fold."""

    name: str
    oof: pd.DataFrame
    runs: dict[int, Path]
    records: dict[int, dict[str, Any]] = field(default_factory=dict)

    @property
    def probs(self) -> np.ndarray:
        return self.oof[list(VOTE_COLUMNS)].to_numpy(np.float64)


def load_member(name: str, runs_dir: Path, folds: list[int] | None = None) -> MemberRuns:
    """The finished runs (``hms.runs.read_record``) of every fold (or only ``folds``) of one
    member: their ``oof.parquet`` and ``best.ckpt``. A fold folder without a valid completion
    record (a killed or failed run, or one being written) is refused, never used."""
    runs_dir = Path(runs_dir)
    present = {}
    for path in sorted(runs_dir.glob("fold*")):
        suffix = path.name.removeprefix("fold")
        if path.is_dir() and suffix.isdigit():
            present[int(suffix)] = path
    wanted = sorted(present) if folds is None else sorted(folds)
    absent = [f for f in wanted if f not in present]
    if not present:
        raise HMSDataError(
            runs_dir, f"member {name!r} has no run here (python -m hms.train model={name} fold=K)"
        )
    if absent:
        raise HMSDataError(
            runs_dir,
            f"member {name!r} has no run for folds {absent}; found folds {sorted(present)} "
            f"(python -m hms.train model={name} fold=K)",
        )
    found, records, unfinished = {}, {}, []
    for fold in wanted:
        record, why = run_records.read_record(present[fold], need=("best.ckpt", "oof.parquet"))
        if record is None:
            unfinished.append(f"fold{fold}: {why}")
        else:
            found[fold], records[fold] = present[fold], record
    if unfinished:
        hint = "" if folds is not None else "; choose finished folds with folds=[...]"
        raise HMSDataError(
            runs_dir, f"member {name!r} has unfinished runs: {'; '.join(unfinished)}{hint}"
        )
    inputs = {r["data"].get("train_inputs") for r in records.values()}
    if len(inputs) > 1:
        raise HMSDataError(runs_dir, f"member {name!r}: its folds were trained on other data")
    parts = []
    for fold, run in sorted(found.items()):
        frame = pd.read_parquet(run / "oof.parquet")
        missing_cols = [c for c in (*_KEYS, *VOTE_COLUMNS, *TARGET_COLUMNS) if c not in frame]
        if missing_cols:
            raise HMSDataError(run / "oof.parquet", f"missing columns {missing_cols}")
        if set(frame["fold"].unique()) != {fold}:
            raise HMSDataError(run / "oof.parquet", f"rows of another fold than {fold}")
        parts.append(frame)
    oof = pd.concat(parts, ignore_index=True).sort_values("sample_id", ignore_index=True)
    if oof["sample_id"].duplicated().any():
        raise HMSDataError(runs_dir, f"member {name!r}: a sample appears in two folds")
    return MemberRuns(name, oof, found, records)


def align_members(members: list[MemberRuns]) -> pd.DataFrame:
    """Check that every member covers the same folds and samples; returns the shared rows."""
    ref = members[0]
    for m in members[1:]:
        if set(m.runs) != set(ref.runs):
            raise HMSDataError(
                None,
                f"members cover different folds: {ref.name} {sorted(ref.runs)}, "
                f"{m.name} {sorted(m.runs)}",
            )
        for fold in ref.runs:
            a = set(ref.oof.loc[ref.oof["fold"] == fold, "sample_id"])
            b = set(m.oof.loc[m.oof["fold"] == fold, "sample_id"])
            if a != b:
                raise HMSDataError(
                    m.runs[fold] / "oof.parquet",
                    f"fold {fold}: samples differ from {ref.name}'s ({len(a ^ b)} not shared); "
                    "were the runs trained on the same data and folds?",
                )
        same = np.allclose(
            m.oof[list(TARGET_COLUMNS)].to_numpy(), ref.oof[list(TARGET_COLUMNS)].to_numpy()
        )
        if not same:
            raise HMSDataError(None, f"{m.name} and {ref.name} have different targets")
    return ref.oof[[*_KEYS, *TARGET_COLUMNS, "n_votes"]].copy()


# --------------------------------------------------------------------------- scores and fitting


def scores(targets: np.ndarray, probs: np.ndarray, n_votes: np.ndarray) -> dict[str, float]:
    """A row of the table: the KL of all samples and of the high-agreement ones."""
    summary = kl_summary(targets, probs, n_votes)
    return {"kl": summary.kl, "kl_hq": summary.kl_hq}


def _unpack(z: np.ndarray, n: int, fit_bias: bool) -> tuple[np.ndarray, np.ndarray | None]:
    w = np.exp(z[:n] - z[:n].max())
    w /= w.sum()
    bias = None
    if fit_bias:
        bias = np.append(z[n:], 0.0)  # the last class is the reference: 5 free values
        bias -= bias.mean()
    return w, bias


def fit_weights(
    probs: list[np.ndarray], targets: np.ndarray, space: str = "prob", fit_bias: bool = False
) -> tuple[np.ndarray, np.ndarray | None]:
    """Weights (non-negative, summing to 1) and optionally a per-class log bias minimising the
    mean KL of the blend on these rows (L-BFGS on a softmax parametrisation)."""
    n = len(probs)

    def loss(z: np.ndarray) -> float:
        w, bias = _unpack(z, n, fit_bias)
        return float(kl_per_row(targets, blend(probs, w, space, bias)).mean())

    z0 = np.zeros(n + (N_CLASSES - 1 if fit_bias else 0))
    result = minimize(loss, z0, method="L-BFGS-B")
    return _unpack(result.x, n, fit_bias)


def fold_cv_blend(
    probs: list[np.ndarray],
    targets: np.ndarray,
    folds: np.ndarray,
    space: str,
    fit_bias: bool,
) -> np.ndarray | None:
    """Predictions of weights fitted on the other folds, for each fold (None with one fold)."""
    unique = np.unique(folds)
    if len(unique) < 2:
        return None
    out = np.zeros_like(probs[0])
    for fold in unique:
        held = folds == fold
        w, bias = fit_weights([p[~held] for p in probs], targets[~held], space, fit_bias)
        out[held] = blend([p[held] for p in probs], w, space, bias)
    return out


# --------------------------------------------------------------------------- writing


def _member_data(run: Path) -> dict[str, Any]:
    """The preprocessing settings a run was trained with (from its config.yaml)."""
    cfg = OmegaConf.load(run / "config.yaml")
    return {
        "recording": OmegaConf.to_container(cfg.data.recording, resolve=True),
        "window": OmegaConf.to_container(cfg.data.window, resolve=True),
    }


def _member_network(run: Path) -> str:
    """The network a run trained, in words (``hms.models.imagenet.describe_network``)."""
    from hms.models.imagenet import describe_network

    return describe_network(OmegaConf.load(run / "config.yaml").model)


def check_member_runs(members: list[MemberRuns]) -> None:
    """Each run's checkpoint checked as ``hms.predict`` checks the weights folder's, before any
    score is computed or file copied (``hms.backends.pytorch.check_checkpoint``: bounded, its
    tensors those of the network its hyperparameters build, finite), and the runs' settings."""
    from hms.backends.pytorch import ExpectedState, check_checkpoint
    from hms.data.preprocess import RecordingSettings, WindowSettings

    built: dict[str, ExpectedState] = {}
    for m in members:
        for run in m.runs.values():
            data = _member_data(run)
            try:
                RecordingSettings(**data["recording"])
                window = WindowSettings.from_dict(data["window"])
            except (TypeError, ValueError) as exc:
                raise HMSDataError(run / "config.yaml", f"data settings: {exc}") from None
            check_checkpoint(run / "best.ckpt", m.name, window, built)


INFERENCE_KEYS = ("state_dict", "hyper_parameters", "hms_stage", "pytorch-lightning_version",
                  "epoch", "global_step")  # fmt: skip


def inference_checkpoint(source: Path, dest: Path) -> None:
    """A run's checkpoint as prediction needs it: the weights, the hyperparameters that rebuild
    the module and the stage; no optimiser, scheduler or loop state (a resumed run reads its own
    run folder's checkpoints, never a weights folder's)."""
    import torch  # the ensemble step is in the torch world (docs/architecture.md)

    try:
        checkpoint = torch.load(source, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for a file that is not a checkpoint
        raise HMSDataError(
            source, f"not a checkpoint ({type(exc).__name__}: {str(exc)[:200]})"
        ) from None
    if not isinstance(checkpoint, dict) or "state_dict" not in checkpoint:
        raise HMSDataError(source, "not a checkpoint of hms.train (no state_dict)")
    torch.save({k: checkpoint[k] for k in INFERENCE_KEYS if k in checkpoint}, dest)


def write_weights_dir(
    ensemble: EnsembleSpec,
    members: list[MemberRuns],
    weights_dir: Path,
    config_sha256: str,
    extra: Callable[[Path], None] | None = None,
) -> None:
    """Build the weights folder in a fresh folder renamed onto ``weights_dir`` at the end: the
    checkpoints (``inference_checkpoint``: what prediction reads, without the optimiser state
    that is two thirds of a training checkpoint), what ``extra(folder)`` writes (the OOF blend,
    the report), and ``ensemble.json`` last, with what the folder was built from
    (``built_from``: the ensemble config's digest, and per checkpoint its run, the run's config
    digest, the run's ``best.ckpt`` SHA-256 and the written file's, which readers check). A
    killed build leaves the old folder (or none), never a part of the new one."""
    built_from: dict[str, Any] = {"config_sha256": config_sha256, "checkpoints": {}}
    ensemble.built_from = built_from
    with atomic_dir(weights_dir) as tmp:
        for m in members:
            (tmp / m.name).mkdir()
            for fold, run in sorted(m.runs.items()):
                rel = f"{m.name}/fold{fold}.ckpt"
                inference_checkpoint(run / "best.ckpt", tmp / rel)
                record = m.records.get(fold, {})
                built_from["checkpoints"][rel] = {
                    "run": str(run),
                    "run_config_sha256": record.get("config_sha256"),
                    "run_checkpoint_sha256": record.get("files", {})
                    .get("best.ckpt", {})
                    .get("sha256"),
                    "sha256": file_digest(tmp / rel)["sha256"],
                }
        if extra is not None:
            extra(tmp)
        (tmp / ENSEMBLE_FILE).write_text(json.dumps(ensemble.to_json(), indent=2))
        read_ensemble(tmp)  # what hms.predict reads: within its bounds, every file listed once


# --------------------------------------------------------------------------- building


REPORT_DIR = "report"  # the PNGs and report.html, inside the weights folder


def build_ensemble(cfg: DictConfig) -> dict[str, Any]:
    """Score members and blends on OOF, write the chosen ensemble; returns the summary."""
    t0 = time.perf_counter()
    ecfg = cfg.ensemble
    names = list(ecfg.members)
    if not names:
        raise HMSDataError(None, f"ensemble {ecfg.name!r} has no members")
    if len(names) > MAX_MEMBERS or not all(MEMBER_NAME.fullmatch(str(n)) for n in names):
        raise HMSDataError(
            None, f"ensemble {ecfg.name!r}: at most {MAX_MEMBERS} members with plain names "
            f"(letters, digits, '.', '_', '-'), got {names}",
        )  # fmt: skip
    # The arguments and the output folder are checked before any run is read.
    check_choice("space", cfg.space, SPACES)
    check_choice("use", cfg.use, ("configured", "fitted"))
    folds = cfg.get("folds")
    if folds is not None:
        if not (OmegaConf.is_list(folds) or isinstance(folds, list | tuple)) or not folds:
            raise HMSDataError(
                None, f"folds must be null (every finished fold) or a non-empty list such as "
                f"[0, 1], got {folds}",
            )  # fmt: skip
        folds = list(folds)
        if not all(isinstance(f, int) and not isinstance(f, bool) and f >= 0 for f in folds):
            raise HMSDataError(None, f"folds must list fold numbers (integers >= 0), got {folds}")
        if len(set(folds)) != len(folds):
            raise HMSDataError(None, f"folds lists a fold twice: {folds}")
    check_writable(cfg.weights_dir, "weights folder", folder=True)
    members = []
    for name in names:
        member_cfg = ecfg.members[name] or {}
        member_dir = Path(member_cfg.get("runs") or Path(cfg.runs_dir) / name)
        members.append(load_member(name, member_dir, folds))
    too_many = [m.name for m in members if len(m.runs) > MAX_FILES_PER_MEMBER]
    if too_many:
        raise HMSDataError(
            None, f"members {too_many} have more than {MAX_FILES_PER_MEMBER} folds: choose "
            "folds=[...]",
        )  # fmt: skip
    check_member_runs(members)
    with output_lock(cfg.weights_dir, "weights folder"):
        return _build(cfg, ecfg, names, members, t0)


def _build(
    cfg: DictConfig, ecfg: DictConfig, names: list[str], members: list[MemberRuns], t0: float
) -> dict[str, Any]:
    """The scores, the fitted weights and the weights folder of checked member runs."""
    rows = align_members(members)
    targets = rows[list(TARGET_COLUMNS)].to_numpy(np.float64)
    n_votes = rows["n_votes"].to_numpy()
    fold_of = rows["fold"].to_numpy()
    probs = [m.probs for m in members]
    space, fit_bias = str(cfg.space), bool(cfg.fit_bias)
    blended = np.array([bool((ecfg.members[n] or {}).get("blend", True)) for n in names])
    if not blended.any():
        raise HMSDataError(None, f"ensemble {ecfg.name!r}: every member has blend: false")
    in_blend = [p for p, b in zip(probs, blended, strict=True) if b]

    configured = np.array([float((ecfg.members[n] or {}).get("weight", 0.0)) for n in names])
    configured[~blended] = 0.0
    if configured.sum() <= 0:
        configured = blended.astype(np.float64)
    configured = configured / configured.sum()
    fitted_w = np.zeros(len(names))
    fitted_w[blended], fitted_bias = fit_weights(in_blend, targets, space, fit_bias)
    cv_probs = fold_cv_blend(in_blend, targets, fold_of, space, fit_bias)
    table = []
    for m, b in zip(members, blended, strict=True):
        row = {"key": m.name, "name": m.name, **scores(targets, m.probs, n_votes)}
        if not b:
            row["reference"] = True
        table.append(row)
    configured_probs = blend(probs, configured, space)
    table.append(
        {"key": ROW_CONFIGURED, "name": f"blend: configured ({ecfg.name})",
         **scores(targets, configured_probs, n_votes)}
    )  # fmt: skip
    fitted_probs = blend(probs, fitted_w, space, fitted_bias)
    table.append(
        {"key": ROW_FITTED, "name": "blend: fitted, in-sample",
         **scores(targets, fitted_probs, n_votes)}
    )  # fmt: skip
    if cv_probs is not None:
        table.append(
            {"key": ROW_FITTED_CV, "name": "blend: fitted, CV by fold",
             **scores(targets, cv_probs, n_votes)}
        )  # fmt: skip
    uniform = np.full_like(targets, 1.0 / N_CLASSES)
    table.append({"key": ROW_UNIFORM, "name": "uniform", **scores(targets, uniform, n_votes)})

    use = str(cfg.use)
    weights = configured if use == "configured" else fitted_w
    bias = fitted_bias if use == "fitted" else None
    chosen = configured_probs if use == "configured" else fitted_probs
    summary = {
        "ensemble": str(ecfg.name),
        "use": use,
        "space": space,
        "folds": sorted(int(f) for f in members[0].runs),
        "n_samples": len(rows),
        "n_samples_hq": int((n_votes >= HQ_VOTES).sum()),
        "configured_weights": dict(zip(names, configured.round(4).tolist(), strict=True)),
        "fitted_weights": dict(zip(names, fitted_w.round(4).tolist(), strict=True)),
        "references": [n for n, b in zip(names, blended, strict=True) if not b],
        "networks": {m.name: _member_network(next(iter(m.runs.values()))) for m in members},
        "fitted_bias": None if fitted_bias is None else fitted_bias.round(4).tolist(),
        "table": table,
    }
    ensemble = EnsembleSpec(
        name=str(ecfg.name),
        weights={n: float(w) for n, w in zip(names, weights, strict=True)},
        checkpoints={m.name: [f"{m.name}/fold{f}.ckpt" for f in sorted(m.runs)] for m in members},
        data={m.name: _member_data(next(iter(m.runs.values()))) for m in members},
        space=space,
        bias=None if bias is None else [float(b) for b in bias],
        cv=summary,
        hms_version=hms.__version__,
    )
    weights_dir = Path(cfg.weights_dir)
    oof = rows.copy()
    for i, col in enumerate(VOTE_COLUMNS):
        oof[col] = chosen[:, i]
    for m in members:
        for i, col in enumerate(VOTE_COLUMNS):
            oof[f"{m.name}:{col}"] = m.probs[:, i]

    def extra(folder: Path) -> None:  # written inside the new folder, before ensemble.json
        write_parquet(oof, folder / "oof_blend.parquet")
        if cfg.get("report", True):
            report_probs = {m.name: m.probs for m in members}
            report_probs[f"blend ({use})"] = chosen
            if cv_probs is not None and use == "fitted":
                report_probs["blend (fitted, CV by fold)"] = cv_probs
            files = ensemble_report(
                targets * n_votes[:, None], report_probs, folder / REPORT_DIR,
                title=f"ensemble {ecfg.name}: out-of-fold predictions",
            )  # fmt: skip
            summary["report"] = str(weights_dir / files[-1].relative_to(folder))

    summary["weights_dir"] = str(weights_dir)
    write_weights_dir(ensemble, members, weights_dir, run_records.config_digest(cfg), extra)
    summary["seconds"] = round(time.perf_counter() - t0, 1)
    return summary


def format_table(summary: dict[str, Any]) -> str:
    names = summary["fitted_weights"]
    lines = [
        f"ensemble {summary['ensemble']}: {len(names)} members, folds {summary['folds']}, "
        f"{summary['n_samples']} OOF samples ({summary['n_samples_hq']} with >= {HQ_VOTES} votes), "
        f"{summary['space']}-space blend",
        f"{'':34s} {'CV KL':>8s} {'KL >=10':>8s} {'weight':>8s} {'fitted':>8s}",
    ]
    for row in summary["table"]:
        name = row["name"]
        w = summary["configured_weights"].get(name)
        f = summary["fitted_weights"].get(name)
        weights = f"{'' if w is None else f'{w:8.3f}':>8s} {'' if f is None else f'{f:8.3f}':>8s}"
        if row.get("reference"):
            name, weights = f"{name} (reference)", f"{'not blended':>17s}"
        lines.append(f"{name:34s} {row['kl']:8.4f} {row['kl_hq']:8.4f} {weights}")
    for name, network in summary.get("networks", {}).items():
        lines.append(f"{name}: {network}")
    if summary["fitted_bias"] is not None:
        lines.append(f"fitted per-class log bias: {summary['fitted_bias']}")
    lines.append(f"wrote {summary['use']} weights to {summary['weights_dir']}/{ENSEMBLE_FILE}")
    if summary.get("report"):
        lines.append(f"report: {summary['report']}")
    return "\n".join(lines)
