"""The whole seed solution, end to end, in one call: the work of ``python -m hms.pipeline``.

``run_pipeline(cfg)`` takes the pipeline config (``conf/pipeline.yaml``, with ``cfg.choices``
holding the chosen ``experiment`` and ``ensemble`` config names) and

1. makes sure the data is there (``ensure_data``: the built-in dataset is generated when absent);
2. optionally (``pretrain.enabled``) pretrains image backbones on the train split's unlabelled
   windows (``hms.pretraining``): one shared backbone (``pretrain.model=NAME``) or each of the
   ``pretrain.members`` on its own image (``own``), and those members start from the files;
   then trains every member of the ensemble on each of ``folds`` through ``hms.training`` (the run
   configs composed by ``train_config`` and all checked first); a run whose folder already holds
   the outputs of the same resolved config (``finished``) is reused, not retrained;
3. builds the ensemble from the out-of-fold predictions (``hms.ensembling``);
4. predicts the test split (``hms.submission``) and writes the submission;
5. scores it when the answers are known (the built-in datasets' ``test_answers.csv``),

and returns one table: per member and for the blend (rows found by their ``key``, see
``hms.ensembling``), the CV KL and the test KL, beside the uniform score and the Bayes floor.
Composing the run configs needs Hydra initialised (the command's, or
``hydra.initialize_config_dir(str(hms.cli.conf_dir()))`` in a notebook or a test).
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from hydra import compose
from hydra.errors import MissingConfigException
from omegaconf import DictConfig, OmegaConf, open_dict

from hms import runs
from hms.blend import SPACES, blend_members
from hms.constants import VOTE_COLUMNS
from hms.data.cache import fingerprint
from hms.data.io import HMSLayout, check_writable, read_csv_checked
from hms.ensembling import BLEND_ROWS, ROW_CONFIGURED, ROW_UNIFORM, build_ensemble, format_table
from hms.errors import HMSDataError, check_choice
from hms.metrics import align, bayes_floor, kl_summary, score_submission
from hms.pretraining import run_pretraining
from hms.submission import predict
from hms.synth import generate
from hms.synth.generate import META_NAME, PARTIAL_NAME
from hms.training import check_config, pretrained_input, refine_inputs, refine_sources, train


def _trainer(cfg: DictConfig) -> str:
    if cfg.accelerator != "auto":
        return str(cfg.accelerator)
    return "gpu" if torch.cuda.is_available() else "cpu"


def _common(cfg: DictConfig) -> list[str]:
    return [
        f"paths.output_dir={cfg.paths.output_dir}",
        f"paths.cache_dir={cfg.paths.cache_dir}",
        f"experiment_name={cfg.experiment_name}",
    ]


def ensure_data(cfg: DictConfig) -> Path:
    """The data folder; the built-in dataset is generated there when it is absent, or when a
    generation was interrupted there (its ``train.csv`` alone does not make it complete). A
    built-in dataset already there (its ``synth_meta.json``) is used only if it is the one asked
    for (``synth_preset``, ``synth_seed``, this generator version): ``generate`` checks it."""
    data_dir = Path(cfg.data_dir)
    interrupted = (data_dir / PARTIAL_NAME).exists()
    built_in = (data_dir / META_NAME).is_file()
    if built_in and cfg.synth_preset is not None and not interrupted:
        generate(data_dir, preset=str(cfg.synth_preset), seed=int(cfg.synth_seed), workers=2)
        return data_dir  # the same dataset (skipped), or an error naming the one it holds
    if (data_dir / "train.csv").is_file() and not interrupted:
        return data_dir
    if cfg.synth_preset is None:
        if interrupted:
            raise HMSDataError(
                data_dir, "an interrupted python -m hms.synth left this folder incomplete"
            )
        raise HMSDataError(data_dir, "no train.csv here (give data_dir=... an HMS-layout folder)")
    print(f"[pipeline] generating the built-in {cfg.synth_preset} dataset in {data_dir}")
    generate(data_dir, preset=str(cfg.synth_preset), seed=int(cfg.synth_seed), workers=2)
    return data_dir


OWN = "own"  # pretrain.model: each member pretrains its backbone on its own image


def pretrain_source(cfg: DictConfig, model: str) -> str | None:
    """The model whose pretraining ``model``'s runs start from: itself with ``pretrain.model=own``,
    else ``pretrain.model`` (one backbone shared by the members); None when it starts as
    configured (pretraining off, or not one of ``pretrain.members``)."""
    p = cfg.pretrain
    if not (p.enabled and model in set(p.members)):
        return None
    return model if p.model == OWN else str(p.model)


def pretrained_file(cfg: DictConfig, source: str) -> str:
    """Where the pipeline writes the backbone that ``source``'s image pretrained, spelled as
    ``pretrain.dir`` is (a run's config, and so its reuse, compares the string)."""
    return f"{str(cfg.pretrain.dir).rstrip('/')}/{source}.pth"


def pretrain_config(cfg: DictConfig, source: str) -> DictConfig:
    """The ``hms.pretrain`` config of the pipeline's pretraining on ``source``'s image: the runs'
    settings (experiment, data, ``train_overrides``) with the ``pretrain`` block's epochs."""
    overrides = [
        f"experiment={cfg.choices.experiment}",
        f"model={source}",
        f"trainer={_trainer(cfg)}",
        f"data.data_dir={cfg.data_dir}",
        *_common(cfg),
        *cfg.train_overrides,
        f"pretrain.epochs={cfg.pretrain.epochs}",
        f"pretrain.out={pretrained_file(cfg, source)}",
    ]
    return compose("pretrain", overrides=overrides)


def train_config(cfg: DictConfig, model: str, fold: int) -> DictConfig:
    """The ``hms.train`` config of one run of the pipeline (composed, so Hydra must be
    initialised: the command's, or ``hydra.initialize_config_dir`` in a notebook or test)."""
    source = pretrain_source(cfg, model)
    pretrained = []
    if source is not None:
        pretrained = ["pretrained=true", f"pretrained_file={pretrained_file(cfg, source)}"]
    overrides = [
        f"experiment={cfg.choices.experiment}",
        f"model={model}",
        f"fold={fold}",
        f"trainer={_trainer(cfg)}",
        f"data.data_dir={cfg.data_dir}",  # as given: the reuse check compares strings
        *_common(cfg),
        *pretrained,
        *cfg.train_overrides,
    ]
    return compose("train", overrides=overrides)


def finished(run_cfg: DictConfig) -> bool:
    """The run folder holds a finished run (``hms.runs.read_record``: every output unchanged) of
    the same resolved config, on the same train data (and, refined, from the same teachers'
    predictions)."""
    record, _ = runs.read_record(Path(run_cfg.run_dir))
    if record is None or record["config_sha256"] != runs.config_digest(run_cfg):
        return False
    data = HMSLayout(run_cfg.data.data_dir)
    if record["data"].get("train_inputs") != fingerprint(data, "train"):
        return False
    if record["data"].get("pretrained_file") != pretrained_input(run_cfg):
        return False
    return record["data"].get("refine_inputs") == refine_inputs(run_cfg)


def teachers_first(
    plan: list[tuple[str, int, DictConfig]],
) -> list[tuple[str, int, DictConfig]]:
    """The plan with every member after the members whose runs its refinement reads
    (``refine.source``: a teacher's runs folder), so that a teacher's folds are all finished
    before a student's first run; otherwise in the ensemble's order."""
    folders = {m: Path(c.run_dir).resolve().parent for m, _, c in plan}
    needs: dict[str, set[str]] = {m: set() for m in folders}
    for member, _, run_cfg in plan:
        if run_cfg.refine.enabled:
            sources = {Path(p).resolve() for p in refine_sources(run_cfg)}
            needs[member] |= {m for m, f in folders.items() if f in sources and m != member}
    order: list[str] = []
    while len(order) < len(needs):
        ready = [m for m in needs if m not in order and needs[m] <= set(order)]
        if not ready:
            cycle = sorted(m for m in needs if m not in order)
            raise HMSDataError(None, f"members {cycle} refine from each other's runs (a cycle)")
        order.append(ready[0])
    return sorted(plan, key=lambda run: (order.index(run[0]), run[1]))


def plan_runs(cfg: DictConfig, members: list[str]) -> list[tuple[str, int, DictConfig]]:
    """``(member, fold, run config)`` of every run, each config composed and checked
    (``hms.training.check_config``) before any work starts."""
    plan = [(m, int(f), train_config(cfg, m, int(f))) for m in members for f in cfg.folds]
    for _, _, run_cfg in plan:
        check_config(run_cfg)
    return teachers_first(plan)


def train_members(plan: list[tuple[str, int, DictConfig]], reuse: bool) -> dict[str, list[dict]]:
    """Train (or, with ``reuse``, reuse a finished run of) every run of the plan."""
    results: dict[str, list[dict]] = {}
    for model, fold, run_cfg in plan:
        if reuse and finished(run_cfg):
            print(f"[pipeline] {model} fold {fold}: reusing {run_cfg.run_dir}")
            metrics = json.loads((Path(run_cfg.run_dir) / "metrics.json").read_text())
        else:
            print(f"[pipeline] training {model} fold {fold} -> {run_cfg.run_dir}")
            metrics = train(run_cfg)
        results.setdefault(model, []).append(metrics)
    return results


def _test_scores(kl: float, kl_hq: float) -> dict[str, float]:
    return {"test": kl, "test_hq": kl_hq}


def _member_test_scores(votes: np.ndarray, probs: np.ndarray) -> dict[str, float]:
    summary = kl_summary(votes, probs)
    return _test_scores(summary.kl, summary.kl_hq)


def check_arguments(cfg: DictConfig) -> list[str]:
    """The members to train, and every output location checked, before any work."""
    members = list(cfg.ensemble.members)
    if cfg.members is not None:  # a subset of the ensemble's members, e.g. to try one model
        unknown = sorted(set(cfg.members) - set(members))
        if unknown or not cfg.members:
            raise HMSDataError(
                None, f"members={list(cfg.members)}: choose among the ensemble's {members}"
            )
        members = [m for m in members if m in set(cfg.members)]
    if not cfg.folds or len(set(cfg.folds)) != len(cfg.folds):
        raise HMSDataError(
            None, f"folds must be a non-empty list of distinct folds, got {cfg.folds}"
        )
    check_choice("use", cfg.use, ("configured", "fitted"))
    check_choice("space", cfg.space, SPACES)
    check_writable(cfg.weights_dir, "weights folder", folder=True)
    check_writable(cfg.submission, "submission", folder=False)
    check_writable(cfg.scores, "scores table", folder=False)
    check_writable(Path(cfg.paths.output_dir) / "runs", "run folders", folder=True)
    if cfg.synth_preset is not None:
        check_writable(cfg.data_dir, "built-in dataset", folder=True)
    if cfg.pretrain.enabled:
        unknown = sorted(set(cfg.pretrain.members) - set(cfg.ensemble.members))
        if unknown or not cfg.pretrain.members:
            raise HMSDataError(
                None,
                f"pretrain.members={list(cfg.pretrain.members)}: choose among the ensemble's "
                f"{list(cfg.ensemble.members)}",
            )
        check_writable(cfg.pretrain.dir, "pretrained weights folder", folder=True)
    return members


def ensemble_config(cfg: DictConfig, members: list[str]) -> DictConfig:
    """The ``hms.ensemble`` config of a pipeline: its folds, blend and weights folder, and its
    own ensemble block (with what its command line changed there, e.g. a member added with
    ``+ensemble.members.NAME={weight: w}``) cut to ``members``."""
    ens_cfg = compose(
        "ensemble",
        overrides=[
            f"ensemble={cfg.choices.ensemble}",
            *_common(cfg),
            f"folds=[{','.join(str(int(f)) for f in cfg.folds)}]",
            f"use={cfg.use}",
            f"space={cfg.space}",
            f"weights_dir={Path(cfg.weights_dir)}",
        ],
    )
    with open_dict(ens_cfg):
        ens_cfg.ensemble = OmegaConf.create(OmegaConf.to_container(cfg.ensemble, resolve=False))
        ens_cfg.ensemble.members = {m: ens_cfg.ensemble.members[m] for m in members}
    return ens_cfg


def run_pipeline(cfg: DictConfig) -> dict[str, Any]:
    t0 = time.perf_counter()
    members = check_arguments(cfg)
    plan = plan_runs(cfg, members)
    sources = dict.fromkeys(s for m in members if (s := pretrain_source(cfg, m)) is not None)
    try:  # composed (so checked) before any work
        pretrainings = {s: pretrain_config(cfg, s) for s in sources}
    except MissingConfigException as exc:
        choices = [OWN, *(exc.options or [])]
        raise HMSDataError(
            None, f"pretrain.model must be one of {choices}, got {cfg.pretrain.model!r}"
        ) from exc
    data_dir = ensure_data(cfg)
    timings: dict[str, float] = {}

    if pretrainings:
        t = time.perf_counter()
        for source, pretrain_cfg in pretrainings.items():
            done = run_pretraining(pretrain_cfg, reuse=bool(cfg.reuse_runs))
            print(f"[pipeline] {source}'s pretrained backbone: {done.path}")
        timings["pretrain"] = time.perf_counter() - t

    t = time.perf_counter()
    train_members(plan, bool(cfg.reuse_runs))
    timings["train"] = time.perf_counter() - t

    t = time.perf_counter()
    weights_dir = Path(cfg.weights_dir)
    ens_cfg = ensemble_config(cfg, members)
    summary = build_ensemble(ens_cfg)
    print(format_table(summary))
    timings["ensemble"] = time.perf_counter() - t

    t = time.perf_counter()
    submission_path = Path(cfg.submission)
    result = predict(
        test_path=data_dir,
        weights_dir=weights_dir,
        out=submission_path,
        device="auto",
        return_members=True,
    )
    submission, member_probs = result
    timings["predict"] = time.perf_counter() - t

    table = []
    for row in summary["table"]:
        entry = {"key": row["key"], "name": row["name"], "cv": row["kl"], "cv_hq": row["kl_hq"]}
        if row.get("reference"):
            entry["reference"] = True
        table.append(entry)
    report: dict[str, Any] = {
        "experiment": cfg.choices.experiment,
        "data_dir": str(data_dir),
        "folds": [int(f) for f in cfg.folds],
        "weights": summary[f"{cfg.use}_weights"],
        "submission": str(submission_path),
        "table": table,
        "networks": summary.get("networks", {}),
    }
    answers = data_dir / "test_answers.csv"
    if answers.is_file():  # the scores of hms.score, and each member's and blend's
        solution = read_csv_checked(answers, ("eeg_id", *VOTE_COLUMNS), "test answers")
        test = score_submission(solution, submission)
        ids, votes, _ = align(solution, submission)
        order = pd.Index(submission["eeg_id"]).get_indexer(ids)
        by_key = {r["key"]: r for r in table}
        for name, probs in member_probs.items():
            by_key[name].update(_member_test_scores(votes, probs[order]))
        by_key = {r["key"]: r for r in table}
        by_key[BLEND_ROWS[cfg.use]].update(
            _test_scores(test["kl_divergence"], test["kl_divergence_hq"])
        )
        if cfg.use != "configured":
            w = summary["configured_weights"]
            probs = blend_members({m: member_probs[m][order] for m in w}, w, cfg.space)
            by_key[ROW_CONFIGURED].update(_member_test_scores(votes, probs))
        by_key[ROW_UNIFORM].update(_test_scores(test["uniform"], test["uniform_hq"]))
        latent = data_dir / "test_latent.csv"
        if latent.is_file():
            lat_df = read_csv_checked(latent, ("eeg_id", *VOTE_COLUMNS), "test latent")
            floor = {"key": "bayes_floor", "name": "Bayes floor (latent)", "cv": np.nan,
                     "cv_hq": np.nan}  # fmt: skip
            lat = bayes_floor(solution, lat_df)
            floor.update(_test_scores(lat["bayes_floor"], lat["bayes_floor_hq"]))
            table.append(floor)
    timings["total"] = time.perf_counter() - t0
    report["seconds"] = {k: round(v, 1) for k, v in timings.items()}
    return report


def format_report(report: dict[str, Any]) -> str:
    lines = [
        f"hms pipeline: experiment {report['experiment']}, data {report['data_dir']}, "
        f"folds {report['folds']}",
        f"{'':34s} {'weight':>7s} {'CV KL':>8s} {'CV >=10':>8s} {'test KL':>8s} {'test>=10':>8s}",
    ]

    def num(x: Any) -> str:
        return f"{x:8.4f}" if x is not None and np.isfinite(x) else f"{'-':>8s}"

    for row in report["table"]:
        w = report["weights"].get(row["name"])
        weight = "" if w is None else f"{w:7.3f}"
        name = row["name"]
        if row.get("reference"):
            name, weight = f"{name} (reference)", "-"
        lines.append(
            f"{name:34s} {weight:>7s} {num(row.get('cv'))} "
            f"{num(row.get('cv_hq'))} {num(row.get('test'))} {num(row.get('test_hq'))}"
        )
    lines += [f"{name}: {network}" for name, network in report.get("networks", {}).items()]
    s = report["seconds"]
    pretrain = f"pretrain {s['pretrain']:.0f} s, " if "pretrain" in s else ""
    lines.append(
        f"submission: {report['submission']}  ({pretrain}train {s['train']:.0f} s, ensemble "
        f"{s['ensemble']:.0f} s, predict {s['predict']:.0f} s, total {s['total']:.0f} s)"
    )
    return "\n".join(lines)
