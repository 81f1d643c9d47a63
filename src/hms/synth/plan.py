"""The plan of a synthetic dataset: every patient, session, EEG excerpt, event, artefact, label
row and vote, drawn from the seed alone and cheaply (no signals). Rendering then turns each session
into files using only its own plan and its own random stream, so workers can render in any order
and the output is identical."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from hms.synth.background import pattern_scale
from hms.synth.fields import N_SCALP, REGION_FOCI, REGION_NAMES
from hms.synth.labels import (
    CLASS_PRIOR,
    GPD,
    LPD,
    LRDA,
    NEIGHBOURS,
    OTHER,
    OTHER_AMP_PER_M,
    SEIZURE,
    draw_raters,
    draw_votes,
    latent_distribution,
)
from hms.synth.patterns import peak_factor
from hms.synth.presets import Preset

EVENT_MARGIN_S = (2.0, 12.0)  # pattern extends this far beyond the labelled central 10 s
EEG_ROW_LAG = 275  # spectrogram second = EEG window second + 275 (hms.constants.SPEC_EEG_LAG)
TEST_SECONDS = 50


@dataclass(slots=True)
class Patient:
    """A patient's background EEG, heart and artefact habits (fixed over their recordings)."""

    index: int
    patient_id: int
    split: str
    state: str  # one of BACKGROUND_STATES
    amp: float  # µV RMS of one background source (long-run, before the amplitude course)
    pink_beta: float
    knee_hz: float
    alpha_power: float
    alpha_hz: float
    slow_power: float
    slow_hz: float
    beta_power: float
    local_share: float  # share of each electrode's background that is its own (not smoothed)
    mod_sd: float  # SD of the log amplitude's fluctuation over seconds
    bs_supp: float  # burst suppression: suppression level relative to the bursts (0: none)
    bs_burst_s: float  # median burst duration (s)
    bs_supp_s: float  # median suppression duration (s)
    line_uv: float
    hr_bpm: float
    ekg_uv: float
    ekg_leak: float
    ekg_leak_focus: tuple[float, float]
    blink_rate: float  # per second
    muscle_rate: float
    pop_rate: float
    dominant: int  # the class this patient's events tend to have
    side: int  # -1 left, +1 right: the side of the patient's lesion


@dataclass(slots=True)
class Event:
    """One annotated segment of an EEG: its pattern, labels and labelled sub-windows."""

    c1: int
    c2: int
    m: float  # borderline amount toward c2, 0..0.5
    ratio: float  # visibility: pattern peak amplitude / (background RMS x peak_factor)
    burden: float  # artefact burden of the segment, 0..1
    latent: np.ndarray  # (6,)
    n_raters: int
    votes: np.ndarray  # (6,) int
    offsets: list[int]  # eeg_label_offset_seconds of its sub-windows
    seg_start: float  # seconds from the EEG start
    seg_end: float
    render: dict[str, Any]  # waveform and field parameters, see hms.synth.patterns
    label_ids: list[int] = field(default_factory=list)


@dataclass(slots=True)
class Artefact:
    kind: str  # blink | muscle | pop | nan | clip
    start: float  # seconds from the EEG start
    duration: float
    amp: float
    channel: int = -1  # electrode for pop/clip/nan (-1: all)
    side: int = 0  # muscle: -1 left, +1 right, 0 both
    tau: float = 0.0  # pop decay (s)


@dataclass(slots=True)
class Excerpt:
    """One EEG file: an excerpt of a session with its events and artefacts."""

    eeg_id: int
    length_s: int  # even
    s0: int  # session (spectrogram-file) second of the first EEG sample; odd
    events: list[Event]
    artefacts: list[Artefact]
    flat_channel: int = -1


@dataclass(slots=True)
class Session:
    """One spectrogram file: a recording session of a patient holding >= 1 EEG excerpt."""

    index: int
    split: str
    spectrogram_id: int
    patient: Patient
    length_s: int  # even; rows at 1, 3, ..., length_s - 1
    excerpts: list[Excerpt]
    gain: np.ndarray  # (3, 3): log-amplitude, period (s), phase of the slow background drift
    episodes: list[tuple[float, float, int, int]]  # (start, end, excerpt, event) in session time
    nan_rows: list[tuple[int, int, int]]  # (first row, n rows, region or -1) in surrogate rows


@dataclass(slots=True)
class Plan:
    preset: Preset
    seed: int
    patients: list[Patient]
    train: list[Session]
    test: list[Session]


# --------------------------------------------------------------------------- ids


def _unique_ints(rng: np.random.Generator, n: int, low: int, high: int) -> np.ndarray:
    out = np.empty(0, dtype=np.int64)
    while len(out) < n:
        draw = rng.integers(low, high, size=int(n * 1.2) + 16, dtype=np.int64)
        out = np.concatenate([out, draw])
        _, first = np.unique(out, return_index=True)
        out = out[np.sort(first)]
    return out[:n]


# --------------------------------------------------------------------------- patients


# Background states of ICU patients and how often each is drawn (docs/synth.md, "The ICU
# background": diffuse slowing is the commonest finding; burst suppression and low-voltage
# records are minorities; a well-organised awake background with a posterior rhythm is rare).
BACKGROUND_STATES = ("encephalopathy", "sedated", "low_voltage", "burst_suppression", "awake")
STATE_PRIOR = (0.55, 0.17, 0.10, 0.06, 0.12)


def _state_parameters(rng: np.random.Generator, state: str) -> dict[str, float]:
    """Amplitude and spectrum of one background state (``source_psd``'s components)."""
    u = rng.uniform

    def lognormal(median: float, sd: float) -> float:
        return float(np.exp(rng.normal(np.log(median), sd)))

    none = {"alpha_power": 0.0, "alpha_hz": 9.0, "beta_power": 0.0, "bs_supp": 0.0}
    if state == "encephalopathy":  # diffuse delta, sometimes a slowed posterior rhythm
        p = {"amp": lognormal(12.0, 0.3), "pink_beta": u(1.3, 2.0), "knee_hz": u(0.3, 1.0)}
        p.update(slow_power=u(1.0, 3.0), slow_hz=u(0.8, 2.2))
        p.update(alpha_power=u(0.0, 0.15) * (rng.random() < 0.4), alpha_hz=u(5.5, 8.0))
        return {**none, **p}
    if state == "sedated":  # delta with frontal fast activity
        p = {"amp": lognormal(11.0, 0.3), "pink_beta": u(1.3, 2.0), "knee_hz": u(0.3, 1.0)}
        p.update(slow_power=u(0.6, 2.0), slow_hz=u(0.8, 2.0), beta_power=u(0.15, 0.6))
        return {**none, **p}
    if state == "low_voltage":  # most activity below 20 µV peak to peak
        p = {"amp": u(3.0, 6.0), "pink_beta": u(1.0, 1.8), "knee_hz": u(0.5, 2.0)}
        p.update(slow_power=u(0.3, 1.5), slow_hz=u(1.0, 3.0))
        return {**none, **p}
    if state == "burst_suppression":  # delta-theta bursts between suppressions
        p = {"amp": lognormal(13.0, 0.3), "pink_beta": u(1.3, 2.0), "knee_hz": u(0.3, 1.0)}
        p.update(slow_power=u(1.0, 3.0), slow_hz=u(1.5, 4.0))
        p.update(bs_supp=u(0.04, 0.15), bs_burst_s=u(0.8, 3.0), bs_supp_s=u(2.0, 10.0))
        return {**none, **p}
    # awake: a posterior alpha rhythm, little slowing, beta in some (drugs)
    p = {"amp": lognormal(14.0, 0.3), "pink_beta": u(1.0, 2.0), "knee_hz": u(0.5, 2.0)}
    p.update(alpha_power=u(0.3, 1.2), alpha_hz=u(8.0, 12.0))
    p.update(slow_power=u(0.0, 0.3), slow_hz=u(1.5, 6.5))
    p.update(beta_power=u(0.05, 0.6) * (rng.random() < 0.3))
    return {**none, **p}


def _draw_patient(rng: np.random.Generator, index: int, pid: int, split: str) -> Patient:
    state = BACKGROUND_STATES[int(rng.choice(len(BACKGROUND_STATES), p=STATE_PRIOR))]
    bg = _state_parameters(rng, state)
    bg.setdefault("bs_burst_s", 1.5)
    bg.setdefault("bs_supp_s", 5.0)
    blink = {"awake": (0.05, 0.2), "encephalopathy": (0.0, 0.03), "sedated": (0.0, 0.03)}
    return Patient(
        index=index,
        patient_id=int(pid),
        split=split,
        state=state,
        **{k: float(v) for k, v in bg.items()},
        local_share=float(rng.uniform(0.0, 0.2)),
        mod_sd=float(rng.uniform(0.15, 0.45) if state != "low_voltage" else rng.uniform(0.1, 0.3)),
        line_uv=float(rng.uniform(0.5, 6.0) * (rng.random() < 0.3)),
        hr_bpm=float(rng.uniform(50.0, 120.0)),
        ekg_uv=float(rng.uniform(400.0, 1500.0) * rng.choice([-1.0, 1.0])),
        ekg_leak=float(rng.uniform(0.002, 0.03)),
        ekg_leak_focus=(float(rng.choice([-0.9, 0.9])), float(rng.uniform(-0.6, 0.2))),
        blink_rate=float(rng.uniform(*blink.get(state, (0.0, 0.0)))),
        muscle_rate=float(rng.uniform(0.0, 0.04)),
        pop_rate=float(rng.uniform(0.0, 0.015)),
        dominant=int(rng.choice(len(CLASS_PRIOR), p=CLASS_PRIOR)),
        side=int(rng.choice([-1, 1])),
    )


# --------------------------------------------------------------------------- event rendering


def _region_focus(rng: np.random.Generator) -> tuple[float, float]:
    name = REGION_NAMES[rng.choice(len(REGION_NAMES), p=[0.2, 0.2, 0.25, 0.15, 0.12, 0.08])]
    fx, fy = REGION_FOCI[name]
    return fx, fy


def prototype(cls: int, rng: np.random.Generator) -> dict[str, Any]:
    """Waveform/field parameters typical of one class (left-sided; the side is applied later)."""
    u = rng.uniform
    p: dict[str, Any] = {
        "growth": 1.0,  # amplitude at the segment end / at its start
        "spread_amount": 0.0,  # seizure: extra field reached by the end of the segment
        "spread_bilateral": 0.0,
        "jitter": float(u(0.02, 0.06)),
        "triphasic": 0.0,
    }
    if cls == SEIZURE:
        r0 = u(4.0, 11.0)
        p.update(rate0=r0, rate1=max(2.5, r0 * u(0.35, 0.75)), sharp=u(0.3, 0.7))
        p.update(bilateral=0.0, focus=_region_focus(rng), spread=u(0.3, 0.45))
        p.update(growth=u(1.5, 3.0), spread_amount=u(0.4, 1.0), spread_bilateral=u(0.0, 1.0))
    elif cls in (LPD, GPD):
        r0 = u(0.4, 2.0)
        p.update(rate0=r0, rate1=r0, sharp=u(0.85, 1.0), jitter=u(0.03, 0.1))
        if cls == LPD:
            p.update(triphasic=u(0.0, 0.25), bilateral=u(0.0, 0.12), focus=_region_focus(rng))
            p.update(spread=u(0.35, 0.55))
        else:
            p.update(triphasic=u(0.4, 1.0), bilateral=u(0.9, 1.0), spread=u(0.5, 0.8))
            p.update(focus=(-u(0.2, 0.45), u(0.1, 0.6)))
    else:  # LRDA, GRDA (and the faint neighbour of 'other')
        r0 = u(0.6, 3.0)
        p.update(rate0=r0, rate1=r0, sharp=u(0.0, 0.12))
        if cls == LRDA:
            p.update(bilateral=u(0.0, 0.12), focus=_region_focus(rng), spread=u(0.35, 0.55))
        else:
            p.update(bilateral=u(0.9, 1.0), focus=(-u(0.2, 0.4), u(0.45, 0.8)))
            p.update(spread=u(0.55, 0.8))
    return {
        k: (tuple(float(x) for x in v) if isinstance(v, tuple) else float(v)) for k, v in p.items()
    }


def blend(p1: dict[str, Any], p2: dict[str, Any], m: float) -> dict[str, Any]:
    """Move the rendered parameters a fraction ``m`` of the way from one prototype to another."""
    out = {}
    for k, v in p1.items():
        if isinstance(v, tuple):
            out[k] = tuple((1 - m) * a + m * b for a, b in zip(v, p2[k], strict=True))
        else:
            out[k] = (1 - m) * v + m * p2[k]
    return out


def _artefact_burden(artefacts: list[Artefact], start: float, end: float) -> float:
    weight = {"blink": 0.5, "muscle": 1.0, "pop": 0.3}
    total = 0.0
    for a in artefacts:
        if a.kind in weight:
            dur = a.duration if a.kind != "pop" else 3 * a.tau
            overlap = min(end, a.start + dur) - max(start, a.start)
            total += weight[a.kind] * max(0.0, overlap)
    return float(min(1.0, total / max(end - start, 1.0)))


def _draw_event_kind(rng: np.random.Generator, patient: Patient) -> tuple[int, int, float]:
    c1 = patient.dominant if rng.random() < 0.6 else int(rng.choice(6, p=CLASS_PRIOR))
    names, probs = zip(*NEIGHBOURS[c1], strict=True)
    c2 = int(rng.choice(names, p=probs))
    m = 0.5 * rng.beta(0.8, 1.5) if rng.random() < 0.8 else rng.uniform(0.0, 0.04)
    return c1, c2, float(m)


def _finish_event(
    rng: np.random.Generator,
    patient: Patient,
    kind: tuple[int, int, float],
    offsets: list[int],
    seg: tuple[float, float],
    artefacts: list[Artefact],
    high_raters: bool,
) -> Event:
    c1, c2, m = kind
    side = patient.side if rng.random() < 0.8 else -patient.side
    if c1 == OTHER:
        render = prototype(c2, rng)
        ratio = OTHER_AMP_PER_M * m
    else:
        render = blend(prototype(c1, rng), prototype(c2, rng), m)
        ratio = float(np.exp(rng.normal(np.log(2.0), 0.45)))
    fx, fy = render["focus"]
    render["focus"] = (fx * -side, fy)  # prototypes are left-sided (x < 0)
    render["amp"] = ratio * pattern_scale(patient) * peak_factor(render)
    render["phase"] = float(rng.uniform(0, 2 * np.pi))
    render["poly_delta"] = float(rng.uniform(0.3, 1.0) * (c1 == OTHER and rng.random() < 0.4))
    burden = _artefact_burden(artefacts, *seg)
    latent = latent_distribution(c1, c2, m, ratio, burden)
    n = draw_raters(rng, high_only=high_raters)
    return Event(
        c1=c1,
        c2=c2,
        m=m,
        ratio=ratio,
        burden=burden,
        latent=latent,
        n_raters=n,
        votes=draw_votes(rng, n, latent),
        offsets=offsets,
        seg_start=seg[0],
        seg_end=seg[1],
        render=render,
    )


# --------------------------------------------------------------------------- artefacts


def _draw_artefacts(
    rng: np.random.Generator, patient: Patient, preset: Preset, length_s: int, busy: bool
) -> tuple[list[Artefact], int]:
    """Artefacts of one EEG file; ``busy`` (an 'other' event) doubles the rates."""
    k = 2.0 if busy else 1.0
    arts: list[Artefact] = []
    for t in rng.uniform(0, length_s, rng.poisson(k * patient.blink_rate * length_s)):
        arts.append(Artefact("blink", float(t), float(rng.uniform(0.2, 0.5)), rng.uniform(80, 250)))
    if rng.random() < 0.5:
        for t in rng.uniform(0, length_s, rng.poisson(k * patient.muscle_rate * length_s)):
            arts.append(
                Artefact(
                    "muscle",
                    float(t),
                    float(rng.uniform(0.5, 4.0)),
                    float(rng.uniform(10, 60)),
                    side=int(rng.choice([-1, 0, 1])),
                )
            )
    for t in rng.uniform(0, length_s, rng.poisson(k * patient.pop_rate * length_s)):
        arts.append(
            Artefact(
                "pop",
                float(t),
                0.0,
                float(rng.uniform(50, 400) * rng.choice([-1, 1])),
                channel=int(rng.integers(N_SCALP)),
                tau=float(rng.uniform(0.1, 1.0)),
            )
        )
    if rng.random() < preset.nan_file_rate:  # NaN stretches: all channels, or one channel
        for _ in range(rng.integers(1, 4)):
            ch = -1 if rng.random() < 0.7 else int(rng.integers(N_SCALP))
            dur = float(rng.uniform(0.5, 5.0))
            arts.append(Artefact("nan", float(rng.uniform(0, length_s - dur)), dur, 0.0, ch))
    if rng.random() < preset.clip_file_rate:  # amplifier saturation on one electrode
        dur = float(rng.uniform(2.0, 15.0))
        start = float(rng.uniform(0, length_s - dur))
        amp = float(rng.uniform(4000, 9000) * rng.choice([-1, 1]))
        arts.append(Artefact("clip", start, dur, amp, int(rng.integers(N_SCALP))))
    flat = int(rng.integers(N_SCALP)) if rng.random() < preset.flat_file_rate else -1
    return arts, flat


# --------------------------------------------------------------------------- layout


def _rows_per_event(rng: np.random.Generator, mean: float) -> int:
    extra = mean - 1.0
    if extra <= 0:
        return 1
    r = 0.8  # negative binomial: heavy-tailed like HMS (most events few rows, some dozens)
    return 1 + int(min(rng.negative_binomial(r, r / (r + extra)), 80))


def _layout_excerpt(
    rng: np.random.Generator, patient: Patient, preset: Preset, n_events: int
) -> tuple[int, list[tuple[list[int], tuple[float, float]]]]:
    """Offsets and pattern segments of the events of one EEG, and the EEG length (s)."""
    first = 2 * int(rng.integers(0, 3))
    events = []
    for _ in range(n_events):
        n_rows = _rows_per_event(rng, preset.rows_per_event)
        steps = np.where(rng.random(n_rows - 1) < 0.8, 2, 2 * rng.integers(2, 6, n_rows - 1))
        offsets = (first + np.concatenate([[0], np.cumsum(steps)])).astype(int).tolist()
        a, b = rng.uniform(*EVENT_MARGIN_S, size=2)
        seg = (offsets[0] + 20.0 - a, offsets[-1] + 30.0 + b)
        events.append((offsets, seg))
        gap = rng.uniform(2.0, 10.0)
        a_next = rng.uniform(*EVENT_MARGIN_S)
        first = 2 * int(np.ceil((seg[1] + gap + a_next - 20.0) / 2))
    length = events[-1][0][-1] + 50 + 2 * int(rng.integers(0, 3))
    return length, events


def _make_excerpt(
    rng: np.random.Generator, patient: Patient, preset: Preset, eeg_id: int, s0: int
) -> Excerpt:
    n_events = int(rng.choice(3, p=[0.75, 0.18, 0.07]) + 1)
    length, layout = _layout_excerpt(rng, patient, preset, n_events)
    kinds = [_draw_event_kind(rng, patient) for _ in layout]
    busy = any(k[0] == OTHER for k in kinds)
    arts, flat = _draw_artefacts(rng, patient, preset, length, busy)
    events = [
        _finish_event(rng, patient, kind, offsets, seg, arts, high_raters=False)
        for kind, (offsets, seg) in zip(kinds, layout, strict=True)
    ]
    return Excerpt(int(eeg_id), int(length), int(s0), events, arts, flat)


def _session_extras(
    rng: np.random.Generator, preset: Preset, excerpts: list[Excerpt], length: int
) -> tuple[np.ndarray, list, list]:
    gain = np.stack(
        [rng.uniform(0, 0.12, 3), rng.uniform(60, 900, 3), rng.uniform(0, 2 * np.pi, 3)]
    )
    episodes = []  # the same pattern recurring outside the excerpts, seen only in the spectrogram
    bounds = [0.0] + [b for e in excerpts for b in (e.s0, e.s0 + e.length_s)] + [float(length)]
    for gi in range(0, len(bounds), 2):
        lo, hi = bounds[gi] + 10.0, bounds[gi + 1] - 10.0
        if hi - lo < 20.0 or rng.random() > 0.6:
            continue
        xi = min(gi // 2, len(excerpts) - 1)
        dur = min(rng.uniform(20.0, 240.0), hi - lo)
        start = rng.uniform(lo, hi - dur)
        episodes.append((float(start), float(start + dur), xi, 0))
    nan_rows = []
    if rng.random() < preset.nan_spectrogram_rate:
        for _ in range(rng.integers(1, 3)):
            region = -1 if rng.random() < 0.5 else int(rng.integers(4))
            nan_rows.append((int(rng.integers(0, length // 2)), int(rng.integers(3, 40)), region))
    return gain, episodes, nan_rows


def _allocate(rng: np.random.Generator, total: int, bins: int, sigma: float) -> np.ndarray:
    """``total`` items over ``bins`` bins, each >= 1, heavy-tailed (log-normal weights)."""
    if total < bins:
        raise ValueError(f"cannot give {bins} bins at least one of {total} items")
    w = np.exp(rng.normal(0, sigma, bins))
    return 1 + rng.multinomial(total - bins, w / w.sum())


def make_plan(preset: Preset, seed: int) -> Plan:
    """Draw the whole dataset's structure, parameters and labels from ``seed``."""
    rng = np.random.default_rng(np.random.SeedSequence([seed, 7001]))
    n_pat = preset.train_patients + preset.test_patients
    n_tr_eeg, n_te = preset.train_eegs, preset.test_eegs
    pids = _unique_ints(rng, n_pat, 1, 65536)
    eeg_ids = _unique_ints(rng, n_tr_eeg + n_te, 500_000, 4_294_967_295)
    spec_ids = _unique_ints(rng, preset.train_sessions + n_te, 300_000, 2_147_483_647)
    patients = [
        _draw_patient(rng, i, pids[i], "train" if i < preset.train_patients else "test")
        for i in range(n_pat)
    ]
    sess_per_pat = _allocate(rng, preset.train_sessions, preset.train_patients, 1.0)
    eegs_per_sess = _allocate(rng, n_tr_eeg, preset.train_sessions, 0.6)
    train: list[Session] = []
    k_eeg = 0
    for pi, n_sess in enumerate(sess_per_pat):
        for _ in range(n_sess):
            si = len(train)
            lo, hi = preset.session_extra_s
            extra = 2 * int(rng.integers(lo // 2, hi // 2 + 1))
            pre = 2 * int(rng.integers(0, extra // 2 + 1))
            s0 = EEG_ROW_LAG + pre
            excerpts = []
            for _ in range(eegs_per_sess[si]):
                ex = _make_excerpt(rng, patients[pi], preset, eeg_ids[k_eeg], s0)
                excerpts.append(ex)
                k_eeg += 1
                s0 = ex.s0 + ex.length_s + 2 * int(rng.integers(5, 100))
            last = excerpts[-1]
            length = last.s0 + last.length_s + EEG_ROW_LAG + (extra - pre)
            gain, episodes, nan_rows = _session_extras(rng, preset, excerpts, length)
            train.append(
                Session(
                    si,
                    "train",
                    int(spec_ids[si]),
                    patients[pi],
                    int(length),
                    excerpts,
                    gain,
                    episodes,
                    nan_rows,
                )
            )
    test_pat = patients[preset.train_patients :]
    test_owner = np.sort(rng.integers(0, len(test_pat), n_te)) if test_pat else []
    test: list[Session] = []
    for ti in range(n_te):
        patient = test_pat[int(test_owner[ti])]
        kind = _draw_event_kind(rng, patient)
        arts, flat = _draw_artefacts(rng, patient, preset, TEST_SECONDS, kind[0] == OTHER)
        seg = (20.0 - rng.uniform(*EVENT_MARGIN_S), 30.0 + rng.uniform(*EVENT_MARGIN_S))
        event = _finish_event(rng, patient, kind, [0], seg, arts, preset.test_high_raters)
        ex = Excerpt(int(eeg_ids[n_tr_eeg + ti]), TEST_SECONDS, EEG_ROW_LAG, [event], arts, flat)
        length = 600
        gain, episodes, nan_rows = _session_extras(rng, preset, [ex], length)
        sid = int(spec_ids[preset.train_sessions + ti])
        test.append(Session(ti, "test", sid, patient, length, [ex], gain, episodes, nan_rows))
    n_rows = sum(len(e.offsets) for s in train for x in s.excerpts for e in x.events)
    label_ids = _unique_ints(rng, n_rows, 300_000, 4_294_967_295)
    k = 0
    for s in train:
        for x in s.excerpts:
            for e in x.events:
                e.label_ids = label_ids[k : k + len(e.offsets)].tolist()
                k += len(e.offsets)
    return Plan(preset, seed, patients, train, test)
