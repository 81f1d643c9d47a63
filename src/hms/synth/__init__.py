"""Synthetic EEG datasets in the exact Kaggle HMS layout: the built-in data of hms.

``generate(out_dir, preset, seed)`` writes train/test CSVs, EEG and spectrogram parquet files and
side files with the latent label distributions; see docs/synth.md for the model.
"""

from hms.synth.generate import generate
from hms.synth.presets import PRESETS, Preset, get_preset

__all__ = ["PRESETS", "Preset", "generate", "get_preset"]
