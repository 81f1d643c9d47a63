"""``python -m hms.synth.compare real=DIR synth=DIR [out=DIR]``: how far the built-in EEG is from
real EEG.

Describes each folder with ``hms.data.describe`` (50-s units; per class where ``train.csv`` has
labels) and prints, per statistic, the median and inter-quartile range of each folder, and whether
the real median lies inside the built-in data's inter-quartile range. With ``out`` it also writes
the per-unit table, the summary and a picture (``compare.png``), each atomically.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only

import matplotlib.pyplot as plt
import pandas as pd
from omegaconf import DictConfig

from hms.cli import hydra_main
from hms.constants import CLASS_COLORS
from hms.data.describe import STATS, describe_folder, iter_groups, summarise
from hms.data.io import atomic_path, check_writable, write_csv
from hms.errors import HMSDataError


def comparison_table(summary: pd.DataFrame) -> pd.DataFrame:
    """One row per group and statistic: "median [q25, q75]" per dataset, and, with both a real
    and a built-in folder, whether the real median is inside the built-in IQR."""
    cell = summary.assign(
        text=[
            "-" if n == 0 else f"{m:.3g} [{a:.3g}, {b:.3g}]"
            for n, m, a, b in summary[["units", "median", "q25", "q75"]].itertuples(index=False)
        ]
    )
    table = cell.pivot_table(
        index=["group", "statistic"], columns="dataset", values="text", aggfunc="first"
    )
    datasets = list(dict.fromkeys(summary["dataset"]))
    table = table[datasets].fillna("-")
    if {"real", "synth"} <= set(datasets):
        real = summary[(summary.dataset == "real") & (summary.group == "all")]
        real = real.set_index("statistic")["median"]
        synth = summary[summary.dataset == "synth"].set_index(["group", "statistic"])
        inside = []
        for group, stat in table.index:
            row = synth.loc[(group, stat)] if (group, stat) in synth.index else None
            r = real.get(stat)
            if row is None or row["units"] == 0 or pd.isna(r):
                inside.append("")
            else:
                inside.append("yes" if row["q25"] <= r <= row["q75"] else "no")
        table["real median in synth IQR"] = inside
    groups = list(dict.fromkeys(summary["group"]))
    order = {(g, s): (groups.index(g), STATS.index(s)) for g, s in table.index}
    return table.loc[sorted(table.index, key=order.get)]


STAT_LABELS: dict[str, str] = {
    "delta": "delta share (0.5-4 Hz)",
    "theta": "theta share (4-8 Hz)",
    "alpha": "alpha share (8-13 Hz)",
    "beta": "beta share (13-20 Hz)",
    "spec_power": "spectrogram power (sum, log)",
    "spec_nan": "spectrogram values missing",
    "amplitude_uv": "bipolar SD, µV (log)",
    "kurtosis": "bipolar kurtosis",
    "neighbour_corr": "neighbour-derivation corr.",
    "eeg_nan": "EEG samples missing",
    "flat_channels": "flat scalp channels",
}
_LOG_STATS = ("spec_power", "amplitude_uv")


def compare_figure(
    frames: Mapping[str, pd.DataFrame], folders: Mapping[str, str | Path] | None = None
) -> plt.Figure:
    """``hms.synth.compare``'s picture: per statistic, a box (median, IQR, 5-95 %) for every
    folder and, where a folder is labelled, for each class; the real folder's median as a dashed
    line, so that one sees at a glance whether it sits inside the built-in boxes."""
    boxes: list[tuple[str, str, pd.DataFrame]] = []  # (dataset, group, units)
    for name, frame in frames.items():
        boxes += [(name, group, part) for group, part in iter_groups(frame)]
    cols = 4
    rows = -(-len(STATS) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.0 * cols, 3.0 * rows), squeeze=False)
    palette = {"real": "#000000", "synth": "#0072B2"}
    for ax, stat in zip(axes.flat, STATS, strict=False):
        data, labels, colors = [], [], []
        for dataset, group, part in boxes:
            values = part[stat].dropna().to_numpy()
            if len(values) == 0:
                continue
            data.append(values)
            labels.append(dataset if group == "all" else f"{dataset}: {group}")
            colors.append(CLASS_COLORS.get(group.lower(), palette.get(dataset, "#777777")))
        if not data:
            ax.set_visible(False)
            continue
        parts = ax.boxplot(data, whis=(5, 95), showfliers=False, patch_artist=True, widths=0.6)
        for patch, color in zip(parts["boxes"], colors, strict=True):
            patch.set(facecolor=color, alpha=0.45, edgecolor=color)
        for median in parts["medians"]:
            median.set(color="black")
        if "real" in frames and frames["real"][stat].notna().any():
            ax.axhline(float(frames["real"][stat].median()), color="black", ls="--", lw=1)
        if stat in _LOG_STATS:
            ax.set_yscale("log")
        ax.set_xticks(range(1, len(labels) + 1), labels, rotation=60, ha="right", fontsize=7)
        ax.set_title(STAT_LABELS.get(stat, stat), fontsize=9)
        ax.grid(axis="y", alpha=0.3)
    for ax in list(axes.flat)[len(STATS) :]:
        ax.axis("off")
    if folders:
        text = "\n".join(f"{k}: {v}" for k, v in folders.items())
        text += "\nboxes: median, IQR, 5-95 %; dashed: the real median"
        list(axes.flat)[-1].text(0, 0.5, text, fontsize=8, va="center", wrap=True)
    fig.tight_layout()
    return fig


def compare(
    folders: dict[str, str | Path], max_units: int | None, seed: int, out: str | Path | None
) -> pd.DataFrame:
    """Describe each folder, return the side-by-side table; with ``out``, also write the per-unit
    table, the summary and the picture there (checked to be writable before any work)."""
    if not folders:
        raise HMSDataError(None, "give real=DIR and/or synth=DIR (HMS-layout folders)")
    if max_units is not None and max_units < 1:
        raise HMSDataError(None, f"max_units must be >= 1 or null, not {max_units}")
    if out is not None:
        out = check_writable(out, "output folder", folder=True)
    frames = {
        name: describe_folder(Path(path).expanduser(), max_units=max_units, seed=seed)
        for name, path in folders.items()
    }
    summary = summarise(frames)
    table = comparison_table(summary)
    if out is not None:
        units = pd.concat([f.assign(dataset=name) for name, f in frames.items()])
        write_csv(units, out / "compare_units.csv")
        write_csv(summary, out / "compare_summary.csv")
        fig = compare_figure(frames, folders)
        with atomic_path(out / "compare.png") as tmp:
            fig.savefig(tmp, dpi=110, bbox_inches="tight", format="png")
        plt.close(fig)
    return table


@hydra_main("compare")
def main(cfg: DictConfig) -> None:
    folders = {k: cfg[k] for k in ("real", "synth") if cfg.get(k)}
    max_units = None if cfg.max_units is None else int(cfg.max_units)
    table = compare(folders, max_units, int(cfg.seed), cfg.out)
    for name, path in folders.items():
        print(f"{name}: {path}")
    with pd.option_context("display.width", 200, "display.max_rows", 500):
        print(table.to_string())
    if cfg.out:
        print(f"wrote {Path(cfg.out) / 'compare_units.csv'}, compare_summary.csv, compare.png")


if __name__ == "__main__":
    main()
