"""Sizes of the built-in datasets: ``tiny`` for tests, ``demo`` for CPU training, ``large`` (5x the
demo's training data) for the longer CPU recipe, ``full`` at the scale of the HMS competition
(1,950 patients, 17,000 EEGs, 106,800 label rows)."""

from __future__ import annotations

from dataclasses import dataclass, fields, replace
from typing import Any


@dataclass(frozen=True)
class Preset:
    """How much to generate. Counts are exact except the label rows, which are drawn per event."""

    name: str
    train_patients: int
    train_sessions: int  # spectrogram files (recording sessions); each holds >= 1 EEG excerpt
    train_eegs: int
    rows_per_event: float  # mean labelled sub-windows per annotated event (heavy-tailed)
    test_patients: int
    test_eegs: int
    session_extra_s: tuple[int, int] = (0, 400)  # extra session length beyond the 10-min minimum
    test_high_raters: bool = True  # test events drawn from the 10-28 rater block, as HMS's test
    nan_file_rate: float = 0.03  # share of EEG files with NaN stretches
    flat_file_rate: float = 0.04  # share of EEG files with one flat (constant) electrode
    clip_file_rate: float = 0.012  # share of EEG files where an electrode saturates the amplifier
    nan_spectrogram_rate: float = 0.04  # share of spectrogram files with NaN stretches

    def with_overrides(self, overrides: dict[str, Any] | None) -> Preset:
        """Return a copy with some fields replaced (from the ``presets`` block of the config)."""
        if not overrides:
            return self
        known = {f.name for f in fields(self)}
        unknown = set(overrides) - known
        if unknown:
            raise ValueError(f"unknown preset fields {sorted(unknown)}; known: {sorted(known)}")
        values = {k: tuple(v) if isinstance(v, list) else v for k, v in overrides.items()}
        return replace(self, **values)


PRESETS: dict[str, Preset] = {
    "tiny": Preset(
        name="tiny",
        train_patients=9,
        train_sessions=20,
        train_eegs=30,
        rows_per_event=3.0,
        test_patients=3,
        test_eegs=8,
        session_extra_s=(0, 40),
        nan_file_rate=0.15,  # so that the small test dataset has every kind of artefact
        flat_file_rate=0.15,
        clip_file_rate=0.1,
        nan_spectrogram_rate=0.2,
    ),
    "demo": Preset(
        name="demo",
        train_patients=200,
        train_sessions=800,
        train_eegs=1200,
        rows_per_event=4.4,
        # 60 test patients: over 20 (generator 1.0), a test KL had a patient-bootstrap SD of
        # 0.03-0.07 (docs/synth.md), as large as the differences it was to judge
        test_patients=60,
        test_eegs=300,
        session_extra_s=(0, 200),
    ),
    # five times the demo's training data (and a test split of the demo's size): experiment=
    # cpu_long, the longer CPU recipe (docs/benchmarks.md), shows what more data buys.
    "large": Preset(
        name="large",
        train_patients=1000,
        train_sessions=4000,
        train_eegs=6000,
        rows_per_event=4.4,
        test_patients=60,
        test_eegs=300,
        session_extra_s=(0, 200),
    ),
    "full": Preset(
        name="full",
        train_patients=1950,
        train_sessions=11000,
        train_eegs=17000,
        rows_per_event=4.75,
        test_patients=200,
        test_eegs=1000,
    ),
}


def get_preset(name: str, overrides: dict[str, Any] | None = None) -> Preset:
    """The named preset, with optional field overrides."""
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; choose one of {sorted(PRESETS)}")
    return PRESETS[name].with_overrides(overrides)
