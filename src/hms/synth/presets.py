"""Sizes of the built-in datasets: ``tiny`` for tests, ``demo`` for CPU training, ``large`` (5x the
demo's training data) for the longer CPU recipe, ``full`` at the scale of the HMS competition
(1,950 patients, 17,000 EEGs, 106,800 label rows)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields, replace
from typing import Any

from hms.errors import HMSDataError

MAX_PATIENTS = 65535  # patient ids are drawn from 1..65535
_COUNTS = ("train_patients", "train_sessions", "train_eegs", "test_patients", "test_eegs")
_RATES = ("nan_file_rate", "flat_file_rate", "clip_file_rate", "nan_spectrogram_rate")


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

    def with_overrides(self, overrides: Mapping[str, Any] | None) -> Preset:
        """Return a copy with some fields replaced (from the ``presets`` block of the config).

        Unknown fields, values of the wrong type and sizes that cannot make a dataset raise
        ``HMSDataError`` naming the field, before anything is generated."""
        if overrides is None:
            return self
        where = f"presets.{self.name}"
        if not isinstance(overrides, Mapping):
            raise HMSDataError(
                None, f"{where} must be a mapping of fields, e.g. {{train_eegs: 800}}; got "
                f"{overrides!r}",
            )  # fmt: skip
        if not overrides:
            return self
        known = sorted(f.name for f in fields(self) if f.name != "name")
        unknown = sorted(str(k) for k in overrides if k not in known)
        if unknown:
            raise HMSDataError(None, f"{where}: unknown fields {unknown}; known: {known}")
        values = {k: tuple(v) if isinstance(v, list) else v for k, v in overrides.items()}
        preset = replace(self, **values)
        preset.check(where)
        return preset

    def check(self, where: str | None = None) -> None:
        """Raise ``HMSDataError`` if these sizes cannot make a dataset (``where`` names the
        config block the values came from)."""
        where = where or f"preset {self.name!r}"
        for name in _COUNTS:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise HMSDataError(None, f"{where}: {name} must be an integer >= 1, got {value!r}")
        problems = []
        if self.train_sessions < self.train_patients:
            problems.append(
                f"train_sessions={self.train_sessions} is fewer than train_patients="
                f"{self.train_patients} (every patient has at least one session)"
            )
        if self.train_eegs < self.train_sessions:
            problems.append(
                f"train_eegs={self.train_eegs} is fewer than train_sessions={self.train_sessions}"
                " (every session holds at least one EEG)"
            )
        if self.train_patients + self.test_patients > MAX_PATIENTS:
            problems.append(
                f"train_patients + test_patients = {self.train_patients + self.test_patients} "
                f"exceeds the {MAX_PATIENTS} patient ids"
            )
        rows = self.rows_per_event
        if isinstance(rows, bool) or not isinstance(rows, int | float) or not rows >= 1:
            problems.append(f"rows_per_event must be a number >= 1, got {rows!r}")
        extra = self.session_extra_s
        if (
            not isinstance(extra, tuple)
            or len(extra) != 2
            or not all(isinstance(x, int) and not isinstance(x, bool) for x in extra)
            or not 0 <= extra[0] <= extra[1]
        ):
            shown = list(extra) if isinstance(extra, tuple) else extra
            problems.append(
                f"session_extra_s must be [low, high] seconds, 0 <= low <= high, got {shown!r}"
            )
        for name in _RATES:
            rate = getattr(self, name)
            if isinstance(rate, bool) or not isinstance(rate, int | float) or not 0 <= rate <= 1:
                problems.append(f"{name} must be a share in [0, 1], got {rate!r}")
        if not isinstance(self.test_high_raters, bool):
            problems.append(
                f"test_high_raters must be true or false, got {self.test_high_raters!r}"
            )
        if problems:
            raise HMSDataError(None, f"{where}: {'; '.join(problems)}")


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


def get_preset(name: str, overrides: Mapping[str, Any] | None = None) -> Preset:
    """The named preset, with optional field overrides (``HMSDataError`` for an unknown name or
    overrides that cannot make a dataset)."""
    if name not in PRESETS:
        raise HMSDataError(None, f"unknown preset={name!r}; choose one of {sorted(PRESETS)}")
    return PRESETS[name].with_overrides(overrides)


def preset_overrides(presets: Mapping[str, Any] | None, name: str) -> dict[str, Any] | None:
    """The overrides of preset ``name`` from the config's ``presets`` block
    (``{demo: {train_eegs: 800}, ...}``), after checking the whole block: every key must be a
    preset and every entry's fields must make a dataset (``HMSDataError`` otherwise)."""
    if not presets:
        return None
    if not isinstance(presets, Mapping):
        raise HMSDataError(
            None,
            f"presets must be a mapping such as {{demo: {{train_eegs: 800}}}}, got {presets!r}",
        )
    unknown = sorted(str(k) for k in presets if k not in PRESETS)
    if unknown:
        raise HMSDataError(
            None, f"presets: unknown presets {unknown}; choose among {sorted(PRESETS)}"
        )
    for key, entry in presets.items():
        PRESETS[key].with_overrides(entry)
    entry = presets.get(name)
    return dict(entry) if entry else None
