"""Benchmark of the data layer: synthesis, cache build, random access, memory.

    python scripts/bench_data.py --preset demo --out /tmp/hms_bench
    python scripts/bench_data.py --preset full --out /tmp/hms_bench --keep

For each preset it prints synthesis EEG files/s, cache build files/s, random-access samples/s
from the cache through a torch DataLoader (training-style: a random window per sample), and the
peak resident memory of each stage (this process, and its worker processes). Results go in
docs/benchmarks.md with the machine, the date and this command.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path


def _rss_mib(who: int) -> float:
    return resource.getrusage(who).ru_maxrss / 1024  # Linux reports KiB


def _proc_mem(pid: int | str = "self") -> dict[str, float]:
    """Anonymous vs file-backed resident memory (MiB) of a process, from /proc.

    Pages of memory-mapped cache files count in RSS but belong to the page cache: they can be
    dropped at any time and are shared by all workers. ``RssAnon`` is what a process really owns.
    """
    out = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("RssAnon", "RssFile", "VmHWM"):
            out[key] = int(value.split()[0]) / 1024
    return out


def _stage(args: list[str]) -> dict:
    """Run one stage in a fresh interpreter so that its peak RSS is its own."""
    out = subprocess.run(
        [sys.executable, __file__, "--stage", *args], check=True, capture_output=True, text=True
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def stage_synth(out: Path, preset: str, workers: int) -> dict:
    from hms.synth import generate

    if out.exists():
        shutil.rmtree(out)
    t0 = time.perf_counter()
    generate(out, preset=preset, seed=0, workers=workers, progress=False)
    seconds = time.perf_counter() - t0
    n_eegs = sum(1 for _ in (out / "train_eegs").iterdir()) + sum(
        1 for _ in (out / "test_eegs").iterdir()
    )
    n_specs = sum(1 for _ in (out / "train_spectrograms").iterdir())
    size = sum(f.stat().st_size for f in out.rglob("*") if f.is_file())
    return {
        "seconds": seconds,
        "eeg_files": n_eegs,
        "spectrogram_files": n_specs,
        "eeg_files_per_s": n_eegs / seconds,
        "gib_on_disk": size / 2**30,
        "peak_rss_mib": _rss_mib(resource.RUSAGE_SELF),
        "peak_rss_children_mib": _rss_mib(resource.RUSAGE_CHILDREN),
    }


def stage_cache(data: Path, cache: Path, workers: int) -> dict:
    from hms.data.prepared import prepare

    if cache.exists():
        shutil.rmtree(cache)
    t0 = time.perf_counter()
    prepared = prepare(data, cache, workers=workers, progress=False)
    seconds = time.perf_counter() - t0
    files = 0
    size = 0
    for path in prepared.caches.values():
        m = json.loads((path / "manifest.json").read_text())
        files += m["n_eegs"] + m["n_spectrograms"]
        size += sum(f.stat().st_size for f in path.iterdir())
    return {
        "seconds": seconds,
        "files": files,
        "files_per_s": files / seconds,
        "cache_gib": size / 2**30,
        "train_cache": str(prepared.caches["train"]),
        "peak_rss_mib": _rss_mib(resource.RUSAGE_SELF),
        "peak_rss_children_mib": _rss_mib(resource.RUSAGE_CHILDREN),
    }


def stage_loader(cache_path: Path, workers: int, batches: int, batch_size: int) -> dict:
    import numpy as np
    import torch
    from torch.utils.data import DataLoader

    from hms.data.cache import HMSCache
    from hms.data.dataset import CacheDataset

    torch.set_num_threads(1)
    cache = HMSCache(cache_path)
    index_mib = (
        sum(df.memory_usage(deep=True).sum() for df in (cache.samples, cache.windows, cache.eegs))
        / 2**20
    )
    ds = CacheDataset(cache, random_window=True)
    loader = DataLoader(
        ds,
        batch_size=batch_size,
        sampler=torch.utils.data.RandomSampler(ds, replacement=True, num_samples=10**9),
        num_workers=workers,
        persistent_workers=workers > 0,
        prefetch_factor=4 if workers else None,
    )
    it = iter(loader)
    for _ in range(3):  # start the workers, warm up
        next(it)
    t0 = time.perf_counter()
    n = 0
    for _ in range(batches):
        batch = next(it)
        n += len(batch["eeg"])
    seconds = time.perf_counter() - t0
    assert np.isfinite(batch["eeg"].numpy()).all()
    main_mem = _proc_mem()
    worker_pids = [w.pid for w in getattr(it, "_workers", [])]
    worker_anon = [_proc_mem(pid).get("RssAnon", 0.0) for pid in worker_pids]
    return {
        "rss_anon_mib": main_mem["RssAnon"],
        "rss_file_mib": main_mem["RssFile"],
        "worker_rss_anon_mib": worker_anon,
        "workers": workers,
        "batch_size": batch_size,
        "samples": n,
        "samples_per_s": n / seconds,
        "eeg_shape": list(batch["eeg"].shape),
        "spec_shape": list(batch["spec"].shape),
        "index_mib": index_mib,
        "n_samples": len(cache),
        "peak_rss_mib": _rss_mib(resource.RUSAGE_SELF),
        "peak_rss_children_mib": _rss_mib(resource.RUSAGE_CHILDREN),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--preset", default="demo", choices=["tiny", "demo", "full"])
    p.add_argument("--out", type=Path, default=Path("/tmp/hms_bench"))
    p.add_argument("--workers", type=int, default=2, help="processes for synthesis and cache")
    p.add_argument("--loader-workers", type=int, nargs="+", default=[0, 2])
    p.add_argument("--batches", type=int, default=100)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--keep", action="store_true", help="keep the generated data and cache")
    p.add_argument("--stage", nargs="+", help=argparse.SUPPRESS)
    args = p.parse_args()

    if args.stage:  # child process
        name, *rest = args.stage
        if name == "synth":
            res = stage_synth(Path(rest[0]), rest[1], int(rest[2]))
        elif name == "cache":
            res = stage_cache(Path(rest[0]), Path(rest[1]), int(rest[2]))
        else:
            res = stage_loader(Path(rest[0]), int(rest[1]), int(rest[2]), int(rest[3]))
        print(json.dumps(res))
        return

    data = args.out / f"{args.preset}-data"
    cache = args.out / f"{args.preset}-cache"
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores")
    synth = _stage(["synth", str(data), args.preset, str(args.workers)])
    print(
        f"[{args.preset}] synthesis: {synth['eeg_files']} EEG files + "
        f"{synth['spectrogram_files']} spectrograms in {synth['seconds']:.1f} s = "
        f"{synth['eeg_files_per_s']:.1f} EEG files/s, {synth['gib_on_disk']:.2f} GiB; peak RSS "
        f"{synth['peak_rss_mib']:.0f} MiB (+ workers {synth['peak_rss_children_mib']:.0f} MiB)"
    )
    built = _stage(["cache", str(data), str(cache), str(args.workers)])
    print(
        f"[{args.preset}] cache build: {built['files']} files in {built['seconds']:.1f} s = "
        f"{built['files_per_s']:.1f} files/s, {built['cache_gib']:.2f} GiB; peak RSS "
        f"{built['peak_rss_mib']:.0f} MiB (+ workers {built['peak_rss_children_mib']:.0f} MiB)"
    )
    for w in args.loader_workers:
        res = _stage(
            ["loader", built["train_cache"], str(w), str(args.batches), str(args.batch_size)]
        )
        print(
            f"[{args.preset}] random access, DataLoader workers={w} batch={res['batch_size']}: "
            f"{res['samples_per_s']:.0f} samples/s (eeg {res['eeg_shape']}, spec "
            f"{res['spec_shape']}); index {res['index_mib']:.1f} MiB for {res['n_samples']} "
            f"samples; RSS at the end: anonymous {res['rss_anon_mib']:.0f} MiB, mapped files "
            f"{res['rss_file_mib']:.0f} MiB; workers' anonymous "
            f"{[round(x) for x in res['worker_rss_anon_mib']]} MiB"
        )
    if not args.keep:
        shutil.rmtree(args.out, ignore_errors=True)


if __name__ == "__main__":
    main()
