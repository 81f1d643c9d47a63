"""``python -m hms.export weights_dir=DIR out_dir=DIR``: an ensemble as TorchScript files.

Every fold checkpoint of a weights folder (``hms.ensemble``) becomes a TorchScript module that
maps the model inputs to the six class probabilities, with ``export.json`` beside them, so that a
Kaggle notebook runs the ensemble with ``torch`` alone (``hms.torchscript`` does the work and
describes the files; its ``load_export`` and ``predict_export`` load and run such a folder).
"""

from __future__ import annotations

import json

from omegaconf import DictConfig

from hms.cli import hydra_main
from hms.torchscript import EXPORT_FILE, export_ensemble


@hydra_main("export")
def main(cfg: DictConfig) -> None:
    out = export_ensemble(cfg.weights_dir, cfg.out_dir)
    manifest = json.loads((out / EXPORT_FILE).read_text())
    n = sum(len(m["files"]) for m in manifest["members"].values())
    print(f"exported {n} TorchScript modules of {len(manifest['members'])} members to {out}")


if __name__ == "__main__":
    main()
