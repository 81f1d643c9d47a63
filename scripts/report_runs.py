"""Table of finished training runs beside the baselines on the same validation samples.

For every ``<runs>/<model>/fold<k>/`` with ``metrics.json`` and ``oof.parquet`` it prints val/kl and
val/kl_hq after stage 1 and after stage 2, the seconds each stage took, and on the same validation
samples: the uniform prediction, the class prior of the training folds, and (built-in datasets)
the Bayes floor, the score of the latent distributions the votes were drawn from
(``train_latent.csv``; a sample's latent is the mean over its labelled windows).

    python scripts/report_runs.py --runs outputs/runs/demo --data-dir data/demo
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pandas as pd

from hms.data.labels import TARGET_COLUMNS
from hms.data.prepared import prepare
from hms.metrics import kl_summary, prior_prediction


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=Path, required=True, help="outputs/runs/<experiment>")
    parser.add_argument("--data-dir", type=Path, required=True)
    parser.add_argument("--cache-dir", type=Path, default=Path("data/cache"))
    args = parser.parse_args()

    cache = prepare(args.data_dir, args.cache_dir, ("train",), progress=False).cache("train")
    samples = cache.samples.set_index("sample_id")
    latent_file = args.data_dir / "train_latent.csv"
    latent = None
    if latent_file.is_file():
        lat = pd.read_csv(latent_file).set_index("label_id")
        windows = cache.windows[["sample_id", "label_id"]]
        per_window = lat.loc[windows["label_id"]].to_numpy()
        latent = (
            pd.DataFrame(per_window, index=windows["sample_id"].to_numpy()).groupby(level=0).mean()
        )
        latent = latent.div(latent.sum(axis=1), axis=0)

    print(
        "| model | fold | n val (>= 10 votes) | stage 1 val/kl | stage 1 val/kl_hq | final val/kl "
        "| final val/kl_hq | uniform | prior | Bayes floor | seconds (stage 1 + 2) |"
    )
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for metrics_file in sorted(args.runs.glob("*/fold*/metrics.json")):
        run = metrics_file.parent
        metrics = json.loads(metrics_file.read_text())
        if "final" not in metrics:
            continue
        oof = pd.read_parquet(run / "oof.parquet")
        targets = oof[list(TARGET_COLUMNS)].to_numpy(np.float64)
        n_votes = oof["n_votes"].to_numpy()
        train_ids = samples.index.difference(oof["sample_id"])
        train_targets = samples.loc[train_ids, list(TARGET_COLUMNS)].to_numpy(np.float64)
        uniform = kl_summary(targets, np.full_like(targets, 1 / 6), n_votes)
        prior = kl_summary(targets, prior_prediction(train_targets, len(oof)), n_votes)
        floor = "-"
        if latent is not None:
            f = kl_summary(targets, latent.loc[oof["sample_id"]].to_numpy(), n_votes)
            floor = f"{f.kl:.3f} / {f.kl_hq:.3f}"
        s1 = metrics["stages"]["stage1"]
        s2 = metrics["stages"].get("stage2", {})
        fin = metrics["final"]
        seconds = f"{s1['seconds']:.0f} + {s2.get('seconds', 0):.0f}"
        print(
            f"| {metrics['model']} | {metrics['fold']} | {len(oof)} ({uniform.n_hq}) | "
            f"{s1['val/kl']:.3f} | {s1['val/kl_hq']:.3f} | {fin['val/kl']:.3f} | "
            f"{fin['val/kl_hq']:.3f} | {uniform.kl:.3f} / {uniform.kl_hq:.3f} | "
            f"{prior.kl:.3f} / {prior.kl_hq:.3f} | {floor} | {seconds} |"
        )


if __name__ == "__main__":
    main()
