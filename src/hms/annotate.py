"""``python -m hms.annotate recording=FILE weights_dir=DIR out_dir=DIR``: a recording's timeline.

Reads a clinical recording (EDF, EDF+, BDF, or any format MNE reads), slides the 50-s model
window along it by ``step_s``, runs the ensemble of ``weights_dir`` on every window and writes
``timeline.csv``, ``timeline.png`` and ``annotate.json`` to ``out_dir`` (and, with
``export_windows=true``, the windows as an HMS test split in ``windows/``). The work and the
files are described in ``hms.annotation``.
"""

from __future__ import annotations

from omegaconf import DictConfig

from hms.annotation import annotate
from hms.cli import hydra_main


@hydra_main("annotate")
def main(cfg: DictConfig) -> None:
    annotate(
        cfg.recording,
        cfg.weights_dir,
        cfg.out_dir,
        step_s=cfg.step_s,
        missing=cfg.missing,
        unit_scale=cfg.unit_scale,
        export_windows=cfg.export_windows,
        device=cfg.device,
        precision=cfg.precision,
        batch_size=cfg.batch_size,
        chunk_windows=cfg.chunk_windows,
        tta_flip=cfg.tta_flip,
        figure=cfg.figure,
        progress=cfg.progress,
    )


if __name__ == "__main__":
    main()
