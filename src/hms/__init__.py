"""hms: harmful brain activity classification on EEG, built around the HMS Kaggle recipe."""

__version__ = "0.1.0"
