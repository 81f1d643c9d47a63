"""Signal transforms as ``nn.Module``s: they run on the batch, on the model's device.

Training and inference share them, so a checkpoint holds everything that turns a batch of bipolar
EEG and Kaggle spectrogram rows into network inputs (including dataset normalisation statistics).
"""

from hms.transforms.augment import (
    Augment,
    ChannelDropout,
    GainNoise,
    HemisphereFlip,
    Mixup,
    SpecMasking,
    TimeShift,
    flip_batch,
)
from hms.transforms.spectrogram import (
    EEGSpectrogram,
    KaggleSpectrogramImage,
    Normalize,
    arrange,
    mel_filterbank,
    mirror_index,
    unarrange,
)

__all__ = [
    "Augment",
    "ChannelDropout",
    "EEGSpectrogram",
    "GainNoise",
    "HemisphereFlip",
    "KaggleSpectrogramImage",
    "Mixup",
    "Normalize",
    "SpecMasking",
    "TimeShift",
    "arrange",
    "flip_batch",
    "mel_filterbank",
    "mirror_index",
    "unarrange",
]
