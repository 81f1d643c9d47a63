"""The HMS data layer: file readers and validators, preprocessing, labels, folds and the cache."""
