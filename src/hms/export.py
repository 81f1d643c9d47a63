"""``python -m hms.export weights_dir=DIR out_dir=DIR [format=torchscript|onnx|kaggle]``.

``format=torchscript`` (the default): every fold checkpoint of a weights folder
(``hms.ensemble``) becomes a TorchScript module that maps the model inputs to the six class
probabilities, with ``export.json`` beside them, so that a notebook runs the ensemble with
``torch`` alone (``hms.torchscript`` does the work and describes the files; its ``load_export``
and ``predict_export`` load and run such a folder).

``format=onnx``: every fold checkpoint as an ONNX graph, the folder a weights folder in its own
right that ``hms.predict`` and ``hms.annotate`` run with onnxruntime, without torch
(``hms.onnx_export`` does the work and describes the folder).

``format=kaggle``: the offline Kaggle kit (``hms.kaggle_kit`` does the work and describes the
folder): one folder to upload as a Kaggle dataset, whose notebook installs hms from its wheels
with the internet off and writes ``submission.csv`` with ``python -m hms.predict``.

A format is one function of ``EXPORTERS`` taking the config.
"""

from __future__ import annotations

import json
from collections.abc import Callable

from omegaconf import DictConfig, OmegaConf

from hms.cli import hydra_main
from hms.errors import check_choice


def torchscript(cfg: DictConfig) -> None:
    from hms.torchscript import EXPORT_FILE, export_ensemble

    out = export_ensemble(cfg.weights_dir, cfg.out_dir)
    manifest = json.loads((out / EXPORT_FILE).read_text())
    n = sum(len(m["files"]) for m in manifest["members"].values())
    print(f"exported {n} TorchScript modules of {len(manifest['members'])} members to {out}")


def onnx(cfg: DictConfig) -> None:
    from hms.onnx_export import export_onnx

    export_onnx(cfg.weights_dir, cfg.out_dir, opset=cfg.opset, atol=cfg.atol)


def kaggle(cfg: DictConfig) -> None:
    from hms.kaggle_kit import build_kit

    platform = cfg.platform
    if OmegaConf.is_list(platform):
        platform = list(platform)
    build_kit(
        cfg.weights_dir,
        cfg.out_dir,
        kit_name=cfg.kit_name,
        python_version=cfg.python_version,
        platform=platform,
        base=cfg.base,
        hms_wheel=cfg.hms_wheel,
        scores=cfg.scores,
    )


EXPORTERS: dict[str, Callable[[DictConfig], None]] = {
    "torchscript": torchscript,
    "onnx": onnx,
    "kaggle": kaggle,
}


@hydra_main("export")
def main(cfg: DictConfig) -> None:
    check_choice("format", cfg.format, list(EXPORTERS))
    EXPORTERS[cfg.format](cfg)


if __name__ == "__main__":
    main()
