"""``python -m hms.plot sample data_dir=DIR eeg_id=N [weights_dir=DIR] [out=FILE.png]``.

Draws one labelled sample (``hms.report.sample_figure``): the 16 bipolar traces of the 50-s
window (the central 10 s the experts labelled shaded) and of the central 10 s alone, the EEG
spectrograms the model sees, the Kaggle spectrogram of its 10-min window, and the experts' votes
beside the ensemble's probabilities (with a weights folder).
"""

from __future__ import annotations

import sys

from omegaconf import DictConfig

from hms.cli import hydra_main
from hms.errors import HMSDataError
from hms.report import sample_figure

COMMANDS = ("sample",)


def _command_from_argv() -> None:
    """``python -m hms.plot sample k=v ...``: the first bare word is the ``what=`` override."""
    if len(sys.argv) > 1 and "=" not in sys.argv[1] and not sys.argv[1].startswith("-"):
        sys.argv[1] = f"what={sys.argv[1]}"


def _main(cfg: DictConfig) -> None:
    if cfg.what not in COMMANDS:
        raise HMSDataError(None, f"unknown plot {cfg.what!r}; known: {list(COMMANDS)}")
    out = cfg.out or f"sample-{cfg.eeg_id if cfg.eeg_id is not None else 'top'}.png"
    path = sample_figure(cfg.data_dir, cfg.eeg_id, out, cfg.weights_dir, cfg.sub_id)
    print(f"wrote {path}")


def main() -> None:
    _command_from_argv()
    hydra_main("plot")(_main)()


if __name__ == "__main__":
    main()
