"""Sizes of the built-in datasets: ``tiny`` for tests, ``demo`` for CPU training, ``large`` (5x the
demo's training data) for the longer CPU recipe, ``full``
at the scale of the HMS competition (1,950 patients, 17,000 EEGs, 106,800 label rows)."""

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
        train_patients=100,
        train_sessions=400,
        train_eegs=600,
        rows_per_event=4.4,
        test_patients=20,
        test_eegs=100,
        session_extra_s=(0, 200),
    ),
    # five times the demo's training data (test 40 patients, 300 EEGs): experiment=cpu_long,
    # the longer CPU recipe (about an hour on 2 cores), shows what more data buys.
    "large": Preset(
        name="large",
        train_patients=500,
        train_sessions=2000,
        train_eegs=3000,
        rows_per_event=4.4,
        test_patients=40,
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
