"""``python -m hms.predict test_path=DIR weights_dir=DIR out=submission.csv``: the submission.

``test_path`` is an HMS-layout folder (``test.csv``, ``test_eegs/``, ``test_spectrograms/``, and
optionally ``sample_submission.csv``); ``weights_dir`` is a folder written by ``hms.ensemble``.
Every member predicts the test rows through the preprocessing of its training, its folds are
averaged and the members blended as ``ensemble.json`` says; the output has one row per
``test.csv`` row, in its order (``hms.submission.predict`` does the work; ``hms.inference`` runs
the ensemble). Offline by design: nothing is downloaded and wandb is never imported. A test EEG
without its spectrogram file is predicted anyway (the Kaggle-style rows are computed from the
EEG).
"""

from __future__ import annotations

from omegaconf import DictConfig

from hms.cli import hydra_main
from hms.submission import predict


@hydra_main("predict")
def main(cfg: DictConfig) -> None:
    predict(
        cfg.test_path,
        cfg.weights_dir,
        cfg.out,
        device=cfg.device,
        precision=cfg.precision,
        batch_size=cfg.batch_size,
        num_workers=cfg.num_workers,
        tta_flip=cfg.tta_flip,
        cache_dir=cfg.cache_dir,
        workers=cfg.workers,
        progress=cfg.progress,
    )


if __name__ == "__main__":
    main()
