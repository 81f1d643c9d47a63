"""``python -m hms.synth.compare real=DIR synth=DIR [out=DIR]``: how far the built-in EEG is from
real EEG.

Describes each folder with ``hms.data.describe`` (50-s units; per class where ``train.csv`` has
labels) and prints, per statistic, the median and inter-quartile range of each folder, and whether
the real median lies inside the built-in data's inter-quartile range. With ``out`` it also writes
the per-unit table, the summary and a picture (``compare.png``), each atomically.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
from omegaconf import DictConfig

from hms.cli import hydra_main
from hms.data.describe import STATS, describe_folder, summarise
from hms.data.io import write_csv


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


def compare(
    folders: dict[str, str | Path], max_units: int | None, seed: int, out: str | Path | None
) -> pd.DataFrame:
    frames = {
        name: describe_folder(Path(path).expanduser(), max_units=max_units, seed=seed)
        for name, path in folders.items()
    }
    summary = summarise(frames)
    table = comparison_table(summary)
    if out is not None:
        from hms.plot import compare_figure, save

        out = Path(out).expanduser()
        units = pd.concat([f.assign(dataset=name) for name, f in frames.items()])
        write_csv(units, out / "compare_units.csv")
        write_csv(summary, out / "compare_summary.csv")
        save(compare_figure(frames, folders), out / "compare.png")
    return table


@hydra_main("compare")
def main(cfg: DictConfig) -> None:
    folders = {k: cfg[k] for k in ("real", "synth") if cfg.get(k)}
    if not folders:
        raise SystemExit("give real=DIR and/or synth=DIR (HMS-layout folders)")
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
