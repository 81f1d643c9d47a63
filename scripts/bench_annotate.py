"""Speed and peak memory of ``python -m hms.annotate`` on long EDF recordings.

Writes EDF files of the requested lengths (once; kept in ``--work``) by tiling the built-in
dataset's test EEGs at 256 Hz with clinical channel names, then annotates each in a fresh process
and reports wall time, windows/s and the process's peak RSS. Memory should not grow with the
recording's length (``hms.annotate`` reads it in chunks).

    python scripts/bench_annotate.py --weights-dir outputs/ensembles/demo/seed --hours 1 24

The EDF writer here streams one-second data records, so writing a 24-hour file needs no more
memory than a 50-s tile; the tests write their EDF files with MNE's exporter instead.
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.signal import resample_poly

from hms.constants import EEG_CHANNELS, SAMPLE_RATE
from hms.data.io import read_eeg

RATE = 256
PHYS = 3276.7  # µV: the physical range of every channel (0.1 µV per digital step)


def _field(value, width: int) -> bytes:
    return str(value).ljust(width)[:width].encode("ascii")


def _name(ch: str) -> str:
    modern = {"T3": "T7", "T4": "T8", "T5": "P7", "T6": "P8"}
    return "ECG EKG" if ch == "EKG" else f"EEG {modern.get(ch, ch).upper()}-REF"


def write_long_edf(path: Path, data_dir: Path, hours: float) -> None:
    """An EDF of ``hours``, 20 channels at 256 Hz, tiled from ``data_dir``'s test EEGs."""
    ids = pd.read_csv(data_dir / "test.csv")["eeg_id"].tolist()
    tiles = []
    for eeg_id in ids:
        x = np.nan_to_num(read_eeg(data_dir / "test_eegs" / f"{eeg_id}.parquet"))[
            : 50 * SAMPLE_RATE
        ]
        tiles.append(resample_poly(x, RATE, SAMPLE_RATE, axis=0))
    n_records = int(hours * 3600)
    ns = len(EEG_CHANNELS)
    header = b"".join(
        [
            _field(0, 8), _field("X X X bench", 80), _field("Startdate 01-MAR-2024 X X X", 80),
            _field("01.03.24", 8), _field("22.00.00", 8), _field(256 * (ns + 1), 8),
            _field("", 44), _field(n_records, 8), _field(1, 8), _field(ns, 4),
            *[_field(_name(c), 16) for c in EEG_CHANNELS], *[_field("", 80)] * ns,
            *[_field("uV", 8)] * ns, *[_field(-PHYS, 8)] * ns, *[_field(PHYS, 8)] * ns,
            *[_field(-32767, 8)] * ns, *[_field(32767, 8)] * ns, *[_field("", 80)] * ns,
            *[_field(RATE, 8)] * ns, *[_field("", 32)] * ns,
        ]
    )  # fmt: skip
    tmp = path.with_suffix(".tmp")
    with tmp.open("wb") as f:
        f.write(header)
        tile_s = 50
        for start in range(0, n_records, tile_s):
            x = tiles[(start // tile_s) % len(tiles)]
            n = min(tile_s, n_records - start)
            digital = np.clip(np.round(x[: n * RATE] / PHYS * 32767), -32767, 32767)
            records = digital.astype("<i2").reshape(n, RATE, ns).transpose(0, 2, 1)
            f.write(np.ascontiguousarray(records).tobytes())
    tmp.rename(path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--weights-dir", required=True)
    parser.add_argument("--hours", type=float, nargs="+", default=[1.0, 24.0])
    parser.add_argument("--data-dir", default="data/demo")
    parser.add_argument("--work", default="/tmp/hms-bench-annotate")
    parser.add_argument("--step-s", type=float, default=10.0)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--json", default=None)
    parser.add_argument("extra", nargs="*", help="more hms.annotate overrides")
    args = parser.parse_args()
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    rows = []
    for hours in args.hours:
        edf = work / f"bench-{hours:g}h.edf"
        if not edf.is_file():
            t = time.perf_counter()
            write_long_edf(edf, Path(args.data_dir), hours)
            size = edf.stat().st_size / 2**20
            print(f"wrote {edf} ({size:.0f} MiB) in {time.perf_counter() - t:.0f} s")
        out = work / f"out-{hours:g}h"
        cmd = [
            "/usr/bin/time", "-f", "%M %e", sys.executable, "-m", "hms.annotate",
            f"recording={edf}", f"weights_dir={args.weights_dir}", f"out_dir={out}",
            f"step_s={args.step_s}", f"device={args.device}", "progress=false", *args.extra,
        ]  # fmt: skip
        done = subprocess.run(cmd, capture_output=True, text=True)
        if done.returncode != 0:
            sys.exit(f"annotate failed on {edf}:\n{done.stderr[-3000:]}")
        peak_kib, wall = done.stderr.strip().splitlines()[-1].split()
        summary = json.loads((out / "annotate.json").read_text())
        rows.append(
            {
                "hours": hours,
                "windows": summary["windows"],
                "members": summary["members"],
                "device": summary["device"],
                "annotate_s": summary["seconds"],
                "process_s": float(wall),
                "windows_per_s": summary["windows"] / summary["seconds"],
                "peak_rss_mib": int(peak_kib) / 1024,
            }
        )
        print(done.stdout.strip().splitlines()[-1])
    print(
        f"\n{platform.node()} {platform.processor() or platform.machine()}, step {args.step_s:g} s"
    )
    print("| recording | windows | device | annotate s | windows/s | peak RSS (MiB) |")
    print("| ---: | ---: | --- | ---: | ---: | ---: |")
    for r in rows:
        print(
            f"| {r['hours']:g} h | {r['windows']} | {r['device']} | {r['annotate_s']:.0f} | "
            f"{r['windows_per_s']:.1f} | {r['peak_rss_mib']:.0f} |"
        )
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
