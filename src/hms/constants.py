"""Facts of the HMS data format, in one place so that every module agrees on them."""

from __future__ import annotations

from decimal import ROUND_HALF_UP, Decimal

SAMPLE_RATE = 200  # Hz, every HMS EEG
WINDOW_SECONDS = 50  # a labelled EEG window
WINDOW_SAMPLES = WINDOW_SECONDS * SAMPLE_RATE
LABEL_SECONDS = 10  # experts labelled the central 10 s of the window
# High agreement: a row with at least this many votes. Such rows resemble the leaderboard's; the
# scores report them apart (``kl_hq``) and training's stage 2 trains on them (``data.min_votes``,
# whose default this is).
HQ_VOTES = 10

# The 19 scalp electrodes of the 10-20 system plus the EKG lead, in file order.
EEG_CHANNELS: tuple[str, ...] = (
    "Fp1", "F3", "C3", "P3", "F7", "T3", "T5", "O1", "Fz", "Cz", "Pz",
    "Fp2", "F4", "C4", "P4", "F8", "T4", "T6", "O2", "EKG",
)  # fmt: skip
SCALP_CHANNELS: tuple[str, ...] = EEG_CHANNELS[:-1]
CHANNEL_INDEX: dict[str, int] = {name: i for i, name in enumerate(EEG_CHANNELS)}

# Double-banana bipolar montage, grouped by chain (the regions of the Kaggle spectrograms).
CHAINS: dict[str, tuple[tuple[str, str], ...]] = {
    "LL": (("Fp1", "F7"), ("F7", "T3"), ("T3", "T5"), ("T5", "O1")),
    "LP": (("Fp1", "F3"), ("F3", "C3"), ("C3", "P3"), ("P3", "O1")),
    "RP": (("Fp2", "F4"), ("F4", "C4"), ("C4", "P4"), ("P4", "O2")),
    "RL": (("Fp2", "F8"), ("F8", "T4"), ("T4", "T6"), ("T6", "O2")),
}
CHAIN_NAMES: tuple[str, ...] = tuple(CHAINS)
BIPOLAR_PAIRS: tuple[tuple[str, str], ...] = tuple(p for chain in CHAINS.values() for p in chain)
MIDLINE_PAIRS: tuple[tuple[str, str], ...] = (("Fz", "Cz"), ("Cz", "Pz"))

# Each electrode's mirror across the midline; midline electrodes and EKG map to themselves.
MIRROR: dict[str, str] = {
    "Fp1": "Fp2", "F3": "F4", "C3": "C4", "P3": "P4", "F7": "F8", "T3": "T4", "T5": "T6",
    "O1": "O2", "Fz": "Fz", "Cz": "Cz", "Pz": "Pz", "EKG": "EKG",
}  # fmt: skip
MIRROR.update({v: k for k, v in list(MIRROR.items())})

# The six classes, in the order of the submission columns.
CLASSES: tuple[str, ...] = ("seizure", "lpd", "gpd", "lrda", "grda", "other")
CONSENSUS_NAMES: tuple[str, ...] = ("Seizure", "LPD", "GPD", "LRDA", "GRDA", "Other")
VOTE_COLUMNS: tuple[str, ...] = tuple(f"{c}_vote" for c in CLASSES)
# One colour per class in every figure (Okabe-Ito: distinguishable with common colour blindness).
CLASS_COLORS: dict[str, str] = {
    "seizure": "#D55E00", "lpd": "#E69F00", "gpd": "#CC79A7",
    "lrda": "#0072B2", "grda": "#56B4E9", "other": "#BBBBBB",
}  # fmt: skip
N_CLASSES = len(CLASSES)

TRAIN_COLUMNS: tuple[str, ...] = (
    "eeg_id", "eeg_sub_id", "eeg_label_offset_seconds", "spectrogram_id", "spectrogram_sub_id",
    "spectrogram_label_offset_seconds", "label_id", "patient_id", "expert_consensus",
    *VOTE_COLUMNS,
)  # fmt: skip
TEST_COLUMNS: tuple[str, ...] = ("spectrogram_id", "eeg_id", "patient_id")
SUBMISSION_COLUMNS: tuple[str, ...] = ("eeg_id", *VOTE_COLUMNS)

# Kaggle spectrograms: 4 regions x 100 frequency bins, one row every 2 s. The bins are those of a
# 1024-point FFT at 200 Hz (k * 200 / 1024 for k = 3..102), named with the value rounded to 0.01.
SPEC_REGIONS: tuple[str, ...] = ("LL", "RL", "LP", "RP")  # column order in the files
SPEC_NFFT = 1024
SPEC_BINS: tuple[int, ...] = tuple(range(3, 103))
SPEC_FREQS: tuple[float, ...] = tuple(
    float(Decimal(k * SAMPLE_RATE / SPEC_NFFT).quantize(Decimal("0.01"), ROUND_HALF_UP))
    for k in SPEC_BINS
)  # half-up rounding, as in the files: 3.125 Hz is "3.13"
SPEC_COLUMNS: tuple[str, ...] = tuple(f"{r}_{f:g}" for r in SPEC_REGIONS for f in SPEC_FREQS)
SPEC_ROW_SECONDS = 2
SPEC_WINDOW_SECONDS = 600
SPEC_WINDOW_ROWS = SPEC_WINDOW_SECONDS // SPEC_ROW_SECONDS
# A labelled 50-s EEG window sits at the centre of its 10-min spectrogram window: EEG second t of
# the window is spectrogram second t + SPEC_EEG_LAG of the spectrogram window.
SPEC_EEG_LAG = (SPEC_WINDOW_SECONDS - WINDOW_SECONDS) // 2
