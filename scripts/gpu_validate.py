"""The GPU measurement of the seed recipe, as a few steps that each write a JSON file.

    python scripts/gpu_validate.py --results results/gpu                     # every step
    python scripts/gpu_validate.py --results results/gpu --steps env data     # some of them
    python scripts/gpu_validate.py --results results/gpu --steps report       # the Markdown
    python scripts/gpu_validate.py --smoke --results /tmp/gpu-smoke            # tiny, on the CPU

Steps (each well under 10 minutes on one H100 with 16 cores, chained in one call or run one by
one; ``--work`` keeps the data, cache and runs between calls):

1. ``env``: torch, CUDA, the GPU, the versions of the packages hms needs, and that hms imports.
2. ``data``: ``hms.synth`` at ``--preset`` (``full``; ``--fraction`` scales its training data)
   with ``--workers`` processes, then ``hms.prepare`` with as many; wall times and sizes.
3. ``throughput``: ``scripts/bench_train.py`` for the four members at the seed's input sizes
   with ``trainer=gpu`` (bf16-mixed, channels-last), ``--batch-size`` and ``--loader-workers``,
   then again with ``compile=true``: model and data samples/s, their ratio, peak GPU memory.
4. ``quality``: ``hms.pipeline experiment=gpu_seed ensemble=seed folds=[0]``: every member on
   fold 0 with the seed's recipe (both stages, from scratch: the machine has no network), then
   the test split predicted and scored beside the feature baseline, uniform and the floor.
5. ``correctness``: the EEG spectrogram on the device against the CPU's; one training step of
   every member in bf16 autocast with channels-last against float32 (logits, loss, gradient);
   the quality step's ensemble predicting the real Kaggle test sample on the device against the
   CPU; its ONNX export (``hms.export format=onnx``) with onnxruntime's CUDA provider (when
   installed) against PyTorch: the largest differences, each beside its tolerance.
6. ``predict``: ``scripts/bench_predict.py`` (test EEGs/s of the whole seed ensemble, PyTorch and
   its ONNX export) and ``scripts/bench_annotate.py`` (windows/s of a 24-h EDF) on the device.
7. ``report``: the JSON files of the results folder as the Markdown tables of
   docs/benchmarks.md.

``--smoke`` runs the same steps on the tiny preset on the CPU with tiny settings, so the script
cannot rot between GPU sessions (``tests/test_gpu_validate.py`` runs it).
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
STEPS = ("env", "data", "throughput", "quality", "correctness", "predict", "report")
MEMBERS = ("effnet_b0", "resnet1d_gru", "multispec_b0", "multispec_b1")
PACKAGES = (
    "torch", "onnxruntime", "pytorch-lightning", "timm", "hydra-core", "omegaconf", "numpy",
    "pandas", "pyarrow", "scipy", "scikit-learn", "lightgbm", "mne", "edfio", "wandb",
)  # fmt: skip


class StepFailed(RuntimeError):
    pass


def _write(results: Path, name: str, obj: Any) -> None:
    """``name.json`` in the results folder, written aside and renamed."""
    tmp = results / f".{name}.json.tmp"
    tmp.write_text(json.dumps(obj, indent=2, default=float))
    tmp.replace(results / f"{name}.json")


def _run(cmd: list[str], log: Path, timeout: float | None = None) -> float:
    """Run ``cmd`` from the repository root with its output in ``log``; its wall seconds."""
    t0 = time.perf_counter()
    with log.open("w") as out:
        done = subprocess.run(
            cmd, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT, timeout=timeout, check=False
        )
    if done.returncode != 0:
        tail = log.read_text(errors="replace")[-3000:]
        raise StepFailed(f"{' '.join(cmd[:4])} ... exited {done.returncode}; {log}:\n{tail}")
    return time.perf_counter() - t0


def _du_gib(path: Path) -> float:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) / 2**30


class Plan:
    """What each step runs: the GPU settings, or the tiny CPU ones of ``--smoke``."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args, self.smoke = args, args.smoke
        self.work = Path(args.work).resolve()
        self.data = self.work / "data"
        self.cache = self.work / "cache"
        self.outputs = self.work / "outputs"
        self.preset = "tiny" if self.smoke else args.preset
        self.device = "cpu" if self.smoke else "cuda"
        self.workers = 1 if self.smoke else args.workers
        self.experiment = "tiny" if self.smoke else "gpu_seed"

    def common(self) -> list[str]:
        return [f"paths.output_dir={self.outputs}", f"paths.cache_dir={self.cache}"]

    def synth_overrides(self) -> list[str]:
        if self.smoke or self.args.fraction >= 1.0:
            return []
        from hms.synth.presets import get_preset

        p = get_preset(self.preset)
        f = self.args.fraction
        sizes = {
            "train_patients": max(10, round(p.train_patients * f)),
            "train_sessions": max(20, round(p.train_sessions * f)),
            "train_eegs": max(30, round(p.train_eegs * f)),
        }
        body = ", ".join(f"{k}: {v}" for k, v in sizes.items())
        return [f"presets={{{self.preset}: {{{body}}}}}"]


def step_env(plan: Plan) -> dict[str, Any]:
    import torch

    import hms

    info: dict[str, Any] = {
        "python": platform.python_version(),
        "machine": platform.machine(),
        "cpus": os.cpu_count(),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "cuda_available": torch.cuda.is_available(),
        "hms": getattr(hms, "__version__", "?"),
        "packages": {},
    }
    for name in PACKAGES:
        try:
            info["packages"][name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            info["packages"][name] = None
    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        info["gpu"] = props.name
        info["gpu_memory_gib"] = round(props.total_memory / 2**30, 1)
        info["bf16"] = bool(torch.cuda.is_bf16_supported())
    missing = [n for n, v in info["packages"].items() if v is None]
    if missing:
        raise StepFailed(f"packages missing: {missing} (carry their wheels; docs/benchmarks.md)")
    if not plan.smoke and not info["cuda_available"]:
        raise StepFailed("no CUDA device: run with --smoke on a CPU machine")
    return info


def step_data(plan: Plan) -> dict[str, Any]:
    logs = plan.work / "logs"
    if plan.data.exists():
        shutil.rmtree(plan.data)
    synth_s = _run(
        [
            sys.executable, "-m", "hms.synth", f"out_dir={plan.data}", f"preset={plan.preset}",
            f"workers={plan.workers}", "progress=false", *plan.synth_overrides(),
        ],
        logs / "synth.log",
    )  # fmt: skip
    prepare_s = _run(
        [
            sys.executable, "-m", "hms.prepare", f"data_dir={plan.data}",
            f"cache_dir={plan.cache}", f"workers={plan.workers}", "rebuild=true",
        ],
        logs / "prepare.log",
    )  # fmt: skip
    meta = json.loads((plan.data / "synth_meta.json").read_text())
    return {
        "preset": plan.preset,
        "fraction": 1.0 if plan.smoke else plan.args.fraction,
        "workers": plan.workers,
        "counts": meta["summary"]["counts"],
        "synth_s": synth_s,
        "prepare_s": prepare_s,
        "data_gib": _du_gib(plan.data),
        "cache_gib": _du_gib(plan.cache),
    }


def step_throughput(plan: Plan) -> dict[str, Any]:
    logs, rows = plan.work / "logs", []
    if plan.smoke:
        settings = [({}, ["experiment=tiny", "data.num_workers=0"])]
        timing = ["--steps", "1", "--warmup", "0", "--data-batches", "2", "--batch-size", "4"]
    else:
        gpu = ["trainer=gpu", "channels_last=true", f"data.num_workers={plan.args.loader_workers}"]
        settings = [({"compile": False}, gpu), ({"compile": True}, [*gpu, "compile=true"])]
        timing = ["--steps", "20", "--warmup", "5", "--data-batches", "40"]
        timing += ["--batch-size", str(plan.args.batch_size)]
    for extra, overrides in settings:
        for model in plan.args.models:
            out = plan.work / f"bench_train_{model}_{len(rows)}.json"
            _run(
                [
                    sys.executable, "scripts/bench_train.py", "--models", model,
                    "--device", plan.device, *timing, "--json", str(out),
                    f"data.data_dir={plan.data}", f"paths.cache_dir={plan.cache}", *overrides,
                ],
                logs / f"bench_train_{model}_{len(rows)}.log",
            )  # fmt: skip
            result = json.loads(out.read_text())
            for row in result["rows"]:
                rows.append({**row, **extra, "device": result["device"]})
    return {"rows": rows}


def step_quality(plan: Plan) -> dict[str, Any]:
    logs = plan.work / "logs"
    extra = ["debug=fast", "data.batch_size=4"] if plan.smoke else []
    train_overrides = "[" + ",".join(f'"{o}"' for o in [*extra, *plan.args.train]) + "]"
    scores = plan.work / "quality_scores.csv"
    seconds = _run(
        [
            sys.executable, "-m", "hms.pipeline", f"experiment={plan.experiment}",
            f"data_dir={plan.data}", "synth_preset=null", "ensemble=seed", "folds=[0]",
            f"accelerator={'cpu' if plan.smoke else 'gpu'}", *plan.common(),
            f"experiment_name=validate_{plan.experiment}", f"scores={scores}",
            f"train_overrides={train_overrides}",
        ],
        logs / "quality.log",
    )  # fmt: skip
    import pandas as pd

    table = pd.read_csv(scores).to_dict(orient="records")
    runs = {}
    for metrics in sorted(
        plan.outputs.glob(f"runs/validate_{plan.experiment}/*/fold0/metrics.json")
    ):
        m = json.loads(metrics.read_text())
        runs[m["model"]] = {
            "stages": {k: v.get("seconds") for k, v in m.get("stages", {}).items()},
            "final": m.get("final"),
        }
    return {"seconds": seconds, "table": table, "runs": runs}


# Tolerances of the correctness step: float32 against float32 on another device differs by
# rounding; bf16 keeps 8 bits of mantissa, so its logits and losses move by about 1 %.
TOLERANCES = {"spectrogram_db": 1e-2, "bf16_logits_rel": 5e-2, "bf16_loss_rel": 2e-2,
              "predict_abs": 1e-4, "onnx_abs": 1e-4}  # fmt: skip


def step_correctness(plan: Plan) -> dict[str, Any]:
    import numpy as np
    import torch
    from hydra import compose, initialize_config_dir
    from hydra.utils import instantiate

    from hms.cli import conf_dir
    from hms.models.losses import kl_loss
    from hms.submission import predict
    from hms.transforms import EEGSpectrogram

    device = torch.device(plan.device)
    out: dict[str, Any] = {"tolerances": TOLERANCES, "device": str(device)}
    eeg = 30 * torch.randn(8, 16, 10_000, generator=torch.Generator().manual_seed(0))
    spec = EEGSpectrogram()  # the seed's: 128 mel bands, 256 frames
    with torch.no_grad():
        on_device = spec.to(device).maps(eeg.to(device)).cpu()
        on_cpu = spec.cpu().maps(eeg)
    out["spectrogram_db"] = float((on_device - on_cpu).abs().max())

    steps = {}
    for model in plan.args.models:
        overrides = [f"model={model}", "pretrained=false", "experiment=none"]
        with initialize_config_dir(config_dir=str(conf_dir()), version_base="1.3"):
            cfg = compose("train", overrides=overrides)
        results = {}
        for name, bf16 in (("fp32", False), ("bf16_cl", True)):
            torch.manual_seed(0)
            module = instantiate(cfg.model, _convert_="all").to(device).train()
            if bf16 and plan.device == "cuda":
                module.net.to(memory_format=torch.channels_last)
            net = module.net
            batch = {k: v.to(device) for k, v in net.example_batch(4, seed=1).items()}
            if net.needs_fitting:
                net.fit_normalization([batch])
            target = torch.softmax(torch.randn(4, 6, generator=torch.Generator().manual_seed(2)),
                                   dim=-1).to(device)  # fmt: skip
            dtype = torch.bfloat16 if bf16 else torch.float32
            with torch.autocast(device.type, dtype=dtype, enabled=bf16):
                torch.manual_seed(3)  # the same dropout masks
                logits = module(batch).float()
                loss = kl_loss(logits, target)
            loss.backward()
            grad = torch.cat([p.grad.flatten() for p in module.parameters() if p.grad is not None])
            results[name] = (logits.detach().cpu(), float(loss), grad.norm().item())
        (l32, loss32, g32), (l16, loss16, g16) = results["fp32"], results["bf16_cl"]
        steps[model] = {
            "logits_rel": float((l16 - l32).abs().max() / l32.abs().max().clamp_min(1e-6)),
            "loss_rel": abs(loss16 - loss32) / max(abs(loss32), 1e-6),
            "grad_norm_rel": abs(g16 - g32) / max(g32, 1e-6),
        }
    out["training_step"] = steps

    weights = plan.outputs / "ensembles" / f"validate_{plan.experiment}" / "seed"
    kaggle = ROOT / "tests" / "data" / "kaggle_samples"
    if (weights / "ensemble.json").is_file() and (kaggle / "test.csv").is_file():
        args = {"progress": False, "return_members": True}
        _, cpu = predict(kaggle, weights, None, device="cpu", precision="32", **args)
        _, dev = predict(kaggle, weights, None, device=plan.device, precision="32", **args)
        out["predict_abs"] = max(float(np.abs(cpu[m] - dev[m]).max()) for m in cpu)
        onnx_dir = plan.work / "onnx"
        _run(
            [sys.executable, "-m", "hms.export", "format=onnx", f"weights_dir={weights}",
             f"out_dir={onnx_dir}"], plan.work / "logs" / "export_onnx.log",
        )  # fmt: skip
        import onnxruntime

        cuda = "CUDAExecutionProvider" in onnxruntime.get_available_providers()
        provider = plan.device if plan.device == "cpu" or cuda else None
        out["onnx_provider"] = "CUDAExecutionProvider" if provider == "cuda" else (
            "CPUExecutionProvider" if provider else "no CUDA provider (onnxruntime-gpu absent)"
        )  # fmt: skip
        if provider:
            _, got = predict(kaggle, onnx_dir, None, device=provider, **args)
            out["onnx_abs"] = max(float(np.abs(got[m] - dev[m]).max()) for m in dev)
    failed = [
        k for k, tol in TOLERANCES.items()
        if k in out and not out[k] <= tol
    ] + [
        f"{m}.{k}" for m, r in steps.items() for k, v in r.items()
        if not v <= TOLERANCES["bf16_logits_rel" if k == "logits_rel" else "bf16_loss_rel"]
    ]  # fmt: skip
    out["within_tolerance"] = not failed
    out["outside_tolerance"] = failed
    return out


def step_predict(plan: Plan) -> dict[str, Any]:
    logs = plan.work / "logs"
    folds = "1" if plan.smoke else "5"
    predict_cmd = [
        sys.executable, "scripts/bench_predict.py", "--data-dir", str(plan.data),
        "--folds", folds, "--device", plan.device, "--backends", "torch", "onnx",
    ]  # fmt: skip
    if plan.smoke:
        predict_cmd += ["--experiment", "tiny", "--num-workers", "0"]
    else:
        predict_cmd += ["--batch-size", "64", "--num-workers", str(plan.args.loader_workers)]
    _run(predict_cmd, logs / "bench_predict.log")
    text = (logs / "bench_predict.log").read_text()
    rates: dict[str, Any] = {}
    for line in text.splitlines():
        backend, _, rest = line.partition(": ")
        for key, label in (("with cache build:", "with_cache_build"), ("cache reused:", "reused")):
            if rest.startswith(key) and backend in ("torch", "onnx"):
                value = float(rest.split("=")[1].split()[0])
                rates.setdefault(backend, {})[label] = value
                if backend == "torch":
                    rates[label] = value
    weights = plan.outputs / "ensembles" / f"validate_{plan.experiment}" / "seed"
    annotate: list[dict[str, Any]] = []
    if (weights / "ensemble.json").is_file():
        out = plan.work / "bench_annotate.json"
        hours = ["0.02"] if plan.smoke else ["24"]
        _run(
            [
                sys.executable, "scripts/bench_annotate.py", "--weights-dir", str(weights),
                "--hours", *hours, "--data-dir", str(plan.data), "--work",
                str(plan.work / "annotate"), "--device", plan.device, "--json", str(out),
            ],
            logs / "bench_annotate.log",
        )  # fmt: skip
        annotate = json.loads(out.read_text())
    return {"test_eegs_per_s": rates, "annotate": annotate}


def step_report(results: Path) -> str:
    """The results folder's JSON files as Markdown tables."""

    def load(name: str) -> Any:
        path = results / f"{name}.json"
        return json.loads(path.read_text()) if path.is_file() else None

    lines: list[str] = []
    env = load("env")
    if env:
        lines.append(
            f"Machine: {env.get('gpu', 'no GPU')}, {env['cpus']} CPUs; torch {env['torch']}, "
            f"CUDA {env['cuda']}."
        )
    data = load("data")
    if data:
        c = data["counts"]
        lines += [
            "",
            f"Data: preset `{data['preset']}` x {data['fraction']:g} ({c['train_eegs']} train "
            f"EEGs, {c['test_eegs']} test EEGs): synthesis {data['synth_s']:.0f} s, cache "
            f"{data['prepare_s']:.0f} s with {data['workers']} workers; "
            f"{data['data_gib']:.1f} GiB + cache {data['cache_gib']:.1f} GiB.",
        ]
    thr = load("throughput")
    if thr:
        lines += [
            "",
            "| model | compile | batch | precision | model samples/s | data samples/s | "
            "data/model | peak GPU GiB |",
            "| --- | --- | ---: | --- | ---: | ---: | ---: | ---: |",
        ]
        for r in thr["rows"]:
            peak = r.get("peak_gpu_gib")
            lines.append(
                f"| {r['model']} | {r.get('compile', False)} | {r['batch_size']} | "
                f"{r['precision']} | {r['model_samples_s']:.0f} | {r['data_samples_s']:.0f} | "
                f"{r['data_over_model']:.1f} | {'-' if peak is None else f'{peak:.1f}'} |"
            )
    quality = load("quality")
    if quality:
        lines += ["", "| fold 0 | CV KL | test KL |", "| --- | ---: | ---: |"]
        for r in quality["table"]:

            def num(x: Any) -> str:
                return "-" if x is None or x != x else f"{x:.4f}"

            lines.append(f"| {r['name']} | {num(r.get('cv'))} | {num(r.get('test'))} |")
        lines.append(f"\nTraining and scoring took {quality['seconds']:.0f} s.")
    corr = load("correctness")
    if corr:
        tol = corr["tolerances"]
        lines += ["", f"Correctness on {corr['device']} (tolerance in brackets): spectrogram "
                  f"{corr['spectrogram_db']:.2e} dB [{tol['spectrogram_db']:g}]"]  # fmt: skip
        for key in ("predict_abs", "onnx_abs"):
            if key in corr:
                lines.append(f"- {key}: {corr[key]:.2e} [{tol[key]:g}]")
        if "onnx_provider" in corr:
            lines.append(f"- ONNX provider: {corr['onnx_provider']}")
        lines += ["", "| model | bf16+cl logits (rel) | loss (rel) | grad norm (rel) |",
                  "| --- | ---: | ---: | ---: |"]  # fmt: skip
        for m, r in corr["training_step"].items():
            lines.append(f"| {m} | {r['logits_rel']:.2e} | {r['loss_rel']:.2e} | "
                         f"{r['grad_norm_rel']:.2e} |")  # fmt: skip
        lines.append(f"\nWithin tolerance: {corr['within_tolerance']} "
                     f"{corr['outside_tolerance'] or ''}")  # fmt: skip
    pred = load("predict")
    if pred:
        rates = pred["test_eegs_per_s"]
        lines.append(
            f"\nPredict, whole seed ensemble: {rates.get('with_cache_build', 0):.1f} test EEGs/s "
            f"with the cache build, {rates.get('reused', 0):.1f} with the cache reused."
        )
        if "onnx" in rates:
            lines.append(
                f"Its ONNX export with onnxruntime: {rates['onnx'].get('reused', 0):.1f} test "
                "EEGs/s with the cache reused."
            )
        for r in pred["annotate"]:
            lines.append(
                f"Annotate {r['hours']:g} h: {r['windows']} windows, "
                f"{r['windows_per_s']:.1f} windows/s, peak RSS {r['peak_rss_mib']:.0f} MiB."
            )
    text = "\n".join(lines) + "\n"
    tmp = results / ".report.md.tmp"
    tmp.write_text(text)
    tmp.replace(results / "report.md")
    return text


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--results", type=Path, required=True, help="folder of the JSON files")
    parser.add_argument("--work", type=Path, default=None, help="data, cache, runs (default: "
                        "<results>/work)")  # fmt: skip
    parser.add_argument("--steps", nargs="+", default=list(STEPS), choices=STEPS)
    parser.add_argument("--smoke", action="store_true", help="tiny preset on the CPU")
    parser.add_argument("--preset", default="full")
    parser.add_argument("--fraction", type=float, default=1.0, help="of the preset's training data")
    parser.add_argument("--workers", type=int, default=16, help="synthesis and cache processes")
    parser.add_argument("--loader-workers", type=int, default=12)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--models", nargs="+", default=list(MEMBERS), choices=MEMBERS)
    parser.add_argument("--train", nargs="*", default=[], metavar="OVERRIDE",
                        help="hms.train overrides of the quality step, e.g. stage1.epochs=3 "
                        "(to fit a device session's minutes)")  # fmt: skip
    args = parser.parse_args()
    if not 0 < args.fraction <= 1:
        parser.error(f"--fraction must be in (0, 1], got {args.fraction}")
    args.results.mkdir(parents=True, exist_ok=True)
    args.work = args.work or args.results / "work"
    plan = Plan(args)
    (plan.work / "logs").mkdir(parents=True, exist_ok=True)
    steps = {
        "env": step_env,
        "data": step_data,
        "throughput": step_throughput,
        "quality": step_quality,
        "correctness": step_correctness,
        "predict": step_predict,
    }
    for name in args.steps:
        t0 = time.perf_counter()
        print(f"[gpu_validate] {name} ...", flush=True)
        try:
            if name == "report":
                print(step_report(args.results))
                continue
            result = steps[name](plan)
        except StepFailed as exc:
            print(f"[gpu_validate] {name} failed: {exc}", file=sys.stderr)
            return 1
        result["step_seconds"] = time.perf_counter() - t0
        result["date"] = time.strftime("%Y-%m-%d")
        _write(args.results, name, result)
        print(f"[gpu_validate] {name}: {result['step_seconds']:.0f} s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
