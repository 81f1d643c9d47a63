"""Render one session: its EEG files and its spectrogram file. Uses only the session's plan and a
random stream seeded by (seed, split, session index), so any worker produces the same bytes."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from hms.constants import SAMPLE_RATE, SPEC_NFFT
from hms.data.io import write_eeg_parquet, write_spectrogram_parquet
from hms.data.spectrogram import kaggle_spectrogram
from hms.synth.artefacts import apply_artefacts
from hms.synth.background import (
    AmplitudeCourse,
    background,
    ekg,
    ekg_leak_field,
    pair_psd,
    pattern_scale,
)
from hms.synth.fields import N_SCALP
from hms.synth.patterns import mean_field, polymorphic_delta, render_event, source_waveform
from hms.synth.plan import Excerpt, Session
from hms.synth.spectral import BIN_FREQS, hann_psd, pair_field_psd, surrogate_rows

SPLIT_TAG = {"train": 1, "test": 2}
EDGE_S = 4  # first/last row centre (s) inside an EEG whose 5.12-s window fits in the file


def session_rng(seed: int, split: str, index: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence([seed, SPLIT_TAG[split], index]))


def render_excerpt(
    rng: np.random.Generator,
    session: Session,
    ex: Excerpt,
    fs: int = SAMPLE_RATE,
    course: AmplitudeCourse | None = None,
) -> np.ndarray:
    """(n, 20) float32 µV EEG of one excerpt: background, EKG, events, artefacts. ``course`` is
    the session's background amplitude (drawn here when not given)."""
    patient = session.patient
    n = ex.length_s * fs
    if course is None:
        course = AmplitudeCourse(rng, patient, session.gain, session.length_s)
    gain = course.at(ex.s0 + np.arange(n) / fs)
    x = np.empty((n, N_SCALP + 1), dtype=np.float32)
    x[:, :N_SCALP] = background(rng, patient, n, gain, fs)
    heart = ekg(rng, patient, n, fs)
    x[:, N_SCALP] = heart + np.float32(rng.normal(0, 40))
    x[:, :N_SCALP] += np.outer(heart, ekg_leak_field(patient)).astype(np.float32)
    for ev in ex.events:
        i0, i1 = round(ev.seg_start * fs), round(ev.seg_end * fs)
        if ev.render["amp"] > 0:
            x[i0:i1, :N_SCALP] += render_event(rng, ev.render, i1 - i0, fs)
        if ev.render["poly_delta"] > 0:
            amp = ev.render["poly_delta"] * pattern_scale(patient)
            x[i0:i1, :N_SCALP] += polymorphic_delta(rng, amp, i1 - i0, fs)
    return apply_artefacts(rng, x, ex.artefacts, ex.flat_channel, fs)


def _event_pair_psd(rng: np.random.Generator, render: dict, fs: int) -> np.ndarray:
    wave = source_waveform(rng, render, 30 * fs, fs) * render["amp"]
    return pair_field_psd(mean_field(render), hann_psd(wave, fs))


def render_session(session: Session, seed: int, root: str | Path) -> dict[str, float]:
    """Write the session's EEG files and spectrogram under ``root``; return level statistics."""
    fs = SAMPLE_RATE
    root = Path(root)
    rng = session_rng(seed, session.split, session.index)
    patient = session.patient
    n_rows = session.length_s // 2
    times = 1 + 2 * np.arange(n_rows)
    values = np.empty((n_rows, 400), dtype=np.float32)
    computed = np.zeros(n_rows, dtype=bool)
    course = AmplitudeCourse(rng, patient, session.gain, session.length_s)
    for ex in session.excerpts:
        x = render_excerpt(rng, session, ex, fs, course)
        write_eeg_parquet(root / f"{session.split}_eegs" / f"{ex.eeg_id}.parquet", x)
        tau = np.arange(EDGE_S, ex.length_s - EDGE_S + 1, 2)
        tau = tau[(tau * fs - SPEC_NFFT // 2 >= 0) & (tau * fs + SPEC_NFFT // 2 <= len(x))]
        rows = (ex.s0 + tau - 1) // 2
        _, values[rows] = kaggle_spectrogram(x, tau.astype(np.float64), fs)
        computed[rows] = True
    # the rest of the session, from the same model in the spectral domain
    gain2 = course.row_power(times.astype(np.float64))
    expected = gain2[:, None, None] * pair_psd(patient, BIN_FREQS)[None]
    heart = ekg(rng, patient, 30 * fs, fs)
    expected += pair_field_psd(ekg_leak_field(patient), hann_psd(heart, fs))[None]
    for start, end, xi, ei in session.episodes:
        comp = _event_pair_psd(rng, session.excerpts[xi].events[ei].render, fs)
        active = (times >= start) & (times <= end)
        expected[active] += comp
    surrogate = surrogate_rows(rng, expected)  # drawn for every row: the computed ones compare
    values[~computed] = surrogate[~computed]
    for first, count, region in session.nan_rows:
        sel = np.zeros(n_rows, dtype=bool)
        sel[first : first + count] = True
        sel &= ~computed
        cols = slice(None) if region < 0 else slice(100 * region, 100 * (region + 1))
        values[np.ix_(sel, np.arange(400)[cols])] = np.nan
    sid = session.spectrogram_id
    path = root / f"{session.split}_spectrograms" / f"{sid}.parquet"
    write_spectrogram_parquet(path, times, values)
    return _continuity(session, times, computed, values, surrogate)


def _continuity(
    session: Session, times: np.ndarray, computed: np.ndarray, values: np.ndarray, sur: np.ndarray
) -> dict[str, float]:
    """How the rows computed from background EEG compare with surrogate rows at the same times.

    ``log_ratio``: mean over the 400 columns of the difference of the median log power (computed
    minus surrogate); ``log_sd_*``: the spread of log power around each column's median.
    """
    bg = computed.copy()
    for ex in session.excerpts:
        for ev in ex.events:
            bg &= ~((times >= ex.s0 + ev.seg_start - 3) & (times <= ex.s0 + ev.seg_end + 3))
    stats = {"rows": float(len(times)), "computed_rows": float(computed.sum()), "bg_rows": 0.0}
    if bg.sum() >= 4:
        lc, ls = np.log(values[bg] + 1e-12), np.log(sur[bg] + 1e-12)
        mc, ms = np.median(lc, axis=0), np.median(ls, axis=0)
        stats.update(
            bg_rows=float(bg.sum()),
            log_ratio=float(np.mean(mc - ms)),
            log_sd_computed=float(np.median(np.abs(lc - mc)) * 1.4826),
            log_sd_surrogate=float(np.median(np.abs(ls - ms)) * 1.4826),
        )
    return stats
