"""``python -m hms.pretrain model=effnet_b0 [pretrain.epochs=15] [pretrain.out=FILE]``:
self-supervised pretraining of an image member's backbone on the train split's unlabelled
windows (``hms.pretraining``), on that member's own image (``model=multispec_b0``: its Kaggle and
EEG maps side by side), written as a file that timm loads. Train on it with
``pretrained=true pretrained_file=FILE`` (``python -m hms.train``), or let the pipeline do both
(its ``pretrain`` block). The settings are training's (conf/train.yaml: data, experiment,
model) plus conf/pretrain.yaml's ``pretrain`` block.
"""

from __future__ import annotations

from omegaconf import DictConfig

from hms.cli import hydra_main
from hms.pretraining import run_pretraining


@hydra_main("pretrain")
def main(cfg: DictConfig) -> None:
    done = run_pretraining(cfg)
    print(
        f"pretrained {cfg.model.name}'s backbone for {done.epochs} epochs on {done.n_samples} "
        f"unlabelled samples in {done.seconds:.0f} s (loss {done.epoch_loss[0]:.4f} -> "
        f"{done.epoch_loss[-1]:.4f}) -> {done.path}\n"
        f"train on it: pretrained=true pretrained_file={done.path}"
    )


if __name__ == "__main__":
    main()
