"""Learning curves of training runs: training loss and validation KL per epoch, side by side.

Reads the CSV logs (``logger=csv``, the default) that ``python -m hms.train`` writes in each run
folder (``<run_dir>/logs/version_*/metrics.csv``) and draws, per run, the epoch mean of the
training loss (the KL on augmented training batches) and the validation KL on all samples and on
those with >= 10 votes, one panel per run. It also prints them as a table. Run from the
repository root, e.g.:

    python scripts/learning_curves.py outputs/runs/demo/resnet1d_gru/fold0 \\
        outputs/runs/demo/effnet_b0/fold0 --labels resnet effnet --out curves.png

A run trained in two stages shows the second stage's epochs after the first's, past a dotted line.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import pandas as pd

COLUMNS = {"train/loss_epoch": "train loss", "val/kl": "val KL", "val/kl_hq": "val KL >= 10 votes"}


def read_curves(run_dir: Path) -> pd.DataFrame:
    """Per-epoch rows (epoch, stage, train loss, val KL, val KL hq) of one run, stages in order.

    hms.train logs both stages through one logger, so a second stage appends to the same file with
    its epochs counted from 0 again: a stage starts wherever the epoch number goes down (and with
    each further ``version_*`` folder, e.g. after a resume)."""
    logs = sorted(
        Path(run_dir).glob("logs/version_*/metrics.csv"),
        key=lambda p: int(p.parent.name.split("_")[-1]),
    )
    if not logs:
        raise FileNotFoundError(f"{run_dir}: no logs/version_*/metrics.csv (train with logger=csv)")
    frames, offset, stage = [], 0, 0
    for path in logs:
        raw = pd.read_csv(path).dropna(subset=["epoch"])
        cols = [c for c in COLUMNS if c in raw]
        starts = raw["epoch"].diff().fillna(-1) < 0  # the first row, and every restart
        raw = raw.assign(stage=stage + starts.cumsum())
        for stage, rows in raw.groupby("stage", sort=True):
            per_epoch = rows.groupby("epoch")[cols].first().reset_index()
            per_epoch["epoch"] += offset + 1
            per_epoch["stage"] = stage
            offset = int(per_epoch["epoch"].max())
            frames.append(per_epoch)
    return pd.concat(frames, ignore_index=True)


def plot(
    curves: dict[str, pd.DataFrame], out: Path, title: str | None = None, cols: int | None = None
) -> None:
    n = len(curves)
    cols = min(cols or n, n)
    rows = -(-n // cols)
    fig, axes = plt.subplots(
        rows, cols, figsize=(4.2 * cols, 3.2 * rows + 0.4), sharey=True, squeeze=False
    )
    for ax in axes.flat[n:]:
        ax.set_visible(False)
    for ax, (label, frame) in zip(axes.flat[:n], curves.items(), strict=True):
        for col, name in COLUMNS.items():
            if col in frame:
                rows = frame[["epoch", col]].dropna()
                ax.plot(rows["epoch"], rows[col], marker="o", ms=3, label=name)
        stage2 = frame.loc[frame["stage"] == 2, "epoch"]
        if len(stage2):
            ax.axvline(stage2.min() - 0.5, color="grey", ls=":", lw=1)
            ax.text(stage2.min() - 0.4, 0.02, "stage 2", transform=ax.get_xaxis_transform())
        ax.set_title(label)
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
    for row in axes:
        row[0].set_ylabel("KL divergence")
    axes[0][0].legend(fontsize=8)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", nargs="+", type=Path, help="run folders (hms.train's run_dir)")
    parser.add_argument("--labels", nargs="*", default=None, help="one title per run")
    parser.add_argument("--out", type=Path, default=Path("learning_curves.png"))
    parser.add_argument("--title", default=None)
    parser.add_argument("--cols", type=int, default=None, help="panels per row (default: all)")
    args = parser.parse_args()
    labels = args.labels or [f"{r.parent.name} {r.name}" for r in args.runs]
    if len(labels) != len(args.runs):
        parser.error(f"{len(args.runs)} runs but {len(labels)} labels")
    curves = {label: read_curves(run) for label, run in zip(labels, args.runs, strict=True)}
    for label, frame in curves.items():
        print(f"## {label}")
        print(frame.round(3).to_string(index=False))
    plot(curves, args.out, args.title, args.cols)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
