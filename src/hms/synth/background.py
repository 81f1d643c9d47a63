"""Background EEG of a patient: 1/f activity with diffuse delta slowing, a posterior rhythm in
the rarer awake patient, frontal beta under sedation, spatially smoothed over the scalp with a
local share per electrode, an amplitude that fluctuates over seconds (or alternates between
bursts and suppressions), a common reference signal, electrode offsets and drift, line noise, and
the EKG channel with its leak into the scalp channels.

Noise is shaped in the frequency domain (one FFT per file), so a file costs milliseconds. The
power spectral densities are in the units of ``hms.data.spectrogram`` (µV²/Hz of a Hann
periodogram), so the expected spectrogram of the background can be written down exactly
(``pair_psd`` times ``row_power``) for the rows of a session that have no EEG file. Which figure
each choice rests on: docs/synth.md, "The ICU background".
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
from scipy import fft as sfft
from scipy import signal as sps

from hms.constants import SAMPLE_RATE, SPEC_NFFT
from hms.synth.fields import (
    N_SCALP,
    gaussian_field,
    mixing_kernel,
    spectrogram_pairs,
    weights_from,
)

ALPHA_WEIGHTS = weights_from(
    {"O1": 1.0, "O2": 1.0, "P3": 0.75, "P4": 0.75, "Pz": 0.7, "T5": 0.55, "T6": 0.55,
     "C3": 0.3, "C4": 0.3, "Cz": 0.3, "T3": 0.2, "T4": 0.2}
)  # fmt: skip
ALPHA_WEIGHTS[ALPHA_WEIGHTS == 0] = 0.08
SLOW_WEIGHTS = 0.75 + 0.25 * gaussian_field((0.0, 0.6), 0.7, 1.0)  # diffuse, frontal a little
BETA_WEIGHTS = 0.5 + 0.5 * gaussian_field((-0.3, 0.4), 0.6, 1.0)
if TYPE_CHECKING:
    from hms.synth.plan import Patient

REFERENCE_SHARE = (0.3, 1.5)  # common reference activity, times the patient's amplitude
# Patterns are drawn at a visibility (peak over background) times this many µV per µV of the
# background's RMS in the bipolar montage, 0.5-20 Hz (``visible_rms``): the mean ratio of the
# source amplitude to that RMS in generator 1.0, so that a pattern stands out of its background
# as much as it did there (docs/synth.md).
VISIBILITY_SCALE = 1.66
COURSE_HZ = 20  # time grid of a session's amplitude course (its changes are slower than 0.1 s)


def _bump(f: np.ndarray, centre: float, width: float) -> np.ndarray:
    """Gaussian spectral peak normalised to unit two-sided power (∫ over f >= 0 is 1/2)."""
    g = np.exp(-0.5 * ((f - centre) / width) ** 2)
    return g / (2 * width * np.sqrt(2 * np.pi))


def _pink(f: np.ndarray, beta: float, knee: float) -> np.ndarray:
    """1/f^beta activity with a knee, the hardware high-pass and low-pass; unit two-sided power."""
    grid = np.linspace(0, SAMPLE_RATE / 2, 4001)

    return _pink_shape(f, beta, knee) / (2 * np.trapezoid(_pink_shape(grid, beta, knee), grid))


def _pink_shape(x: np.ndarray, beta: float, knee: float) -> np.ndarray:
    return (x**2 / (x**2 + 0.1**2)) / (knee + x) ** beta / (1 + (x / 70.0) ** 8)


def source_psd(patient: Patient, f: np.ndarray) -> np.ndarray:
    """(19, len(f)) PSD (µV²/Hz) of each electrode's background source, before spatial mixing.

    Each component's spectral shape has unit power; their weights sum to one, so one source has a
    variance of about ``patient.amp``² (more where alpha or slowing is strong).
    """
    p = patient
    total = 1.0 + p.alpha_power + p.slow_power + p.beta_power
    s = np.outer(np.ones(N_SCALP), _pink(f, p.pink_beta, p.knee_hz))
    s += p.alpha_power * np.outer(ALPHA_WEIGHTS, _bump(f, p.alpha_hz, 0.8))
    s += p.slow_power * np.outer(SLOW_WEIGHTS, _bump(f, p.slow_hz, 0.35 * p.slow_hz))
    s += p.beta_power * np.outer(BETA_WEIGHTS, _bump(f, 18.0, 4.0))
    return s * (p.amp**2 / total)


def pair_psd(patient: Patient, f: np.ndarray) -> np.ndarray:
    """(16, len(f)) PSD of the background in the 16 bipolar pairs of the spectrogram chains.

    The mixed share of the sources is smoothed over the scalp (the common reference and shared
    sources cancel in a pair); the local share is each electrode's own and adds in a pair."""
    k = mixing_kernel()
    anode, cathode = spectrogram_pairs()
    d = k[anode] - k[cathode]
    s = source_psd(patient, f)
    local = patient.local_share
    return (1.0 - local) * (d**2) @ s + local * (s[anode] + s[cathode])


def visible_rms(patient: Patient) -> float:
    """µV RMS of the background in the 16 bipolar pairs between 0.5 and 20 Hz: the amplitude a
    reader sees in the double banana, the unit of a pattern's visibility."""
    f = np.linspace(0.5, 20.0, 391)
    power = 2.0 * pair_psd(patient, f).mean(axis=0)  # two-sided densities
    return float(np.sqrt(np.sum(0.5 * (power[1:] + power[:-1]) * np.diff(f))))


def pattern_scale(patient: Patient) -> float:
    """µV of pattern peak per unit of visibility for this patient's background."""
    return VISIBILITY_SCALE * visible_rms(patient)


def shaped_noise(rng: np.random.Generator, psd: np.ndarray, n: int, fs: float) -> np.ndarray:
    """(n, rows of ``psd``) Gaussian noise whose PSD at the rfft frequencies of n is ``psd``."""
    nf = n // 2 + 1
    amp = np.sqrt(psd.T * (fs * n / 2.0)).astype(np.float32)
    z = rng.standard_normal((2, nf, psd.shape[0]), dtype=np.float32)
    spec = np.empty((nf, psd.shape[0]), dtype=np.complex64)
    spec.real = z[0] * amp
    spec.imag = z[1] * amp
    spec[0] = 0.0
    return sfft.irfft(spec, n=n, axis=0).astype(np.float32, copy=False)


def background(
    rng: np.random.Generator, patient: Patient, n: int, gain: np.ndarray, fs: int = SAMPLE_RATE
) -> np.ndarray:
    """(n, 19) µV background of the scalp channels; ``gain`` (n,) its amplitude course
    (``AmplitudeCourse``: drift over minutes, fluctuation over seconds, bursts)."""
    nfft = sfft.next_fast_len(n, real=True)
    f = np.fft.rfftfreq(nfft, 1.0 / fs)
    psd = source_psd(patient, f)
    src = shaped_noise(rng, psd, nfft, fs)[:n]
    mixed, local = np.float32(1.0 - patient.local_share), np.float32(patient.local_share)
    x = np.sqrt(mixed) * (src @ mixing_kernel().T.astype(np.float32))
    x += np.sqrt(local) * shaped_noise(rng, psd, nfft, fs)[:n]
    x *= gain[:, None].astype(np.float32)
    ref_uv = rng.uniform(*REFERENCE_SHARE) * patient.amp
    ref_psd = _pink(f, patient.pink_beta, patient.knee_hz)[None, :] * ref_uv**2
    x += shaped_noise(rng, ref_psd, nfft, fs)[:n]
    # electrode offsets and slow drift, on a 1-s grid then interpolated (it is that slow)
    t = np.arange(n, dtype=np.float32) / fs
    coarse_t = np.arange(int(n / fs) + 2, dtype=np.float64)
    offsets = rng.normal(0.0, 25.0, N_SCALP)
    drift_amp = rng.uniform(2.0, 15.0, N_SCALP)
    drift_hz = rng.uniform(0.005, 0.03, N_SCALP)
    drift_phase = rng.uniform(0, 2 * np.pi, N_SCALP)
    coarse = offsets + drift_amp * np.sin(2 * np.pi * drift_hz * coarse_t[:, None] + drift_phase)
    pos = np.minimum((np.arange(n) // fs), len(coarse_t) - 2)
    w = (t - pos.astype(np.float32))[:, None]
    x += (coarse[pos] * (1 - w) + coarse[pos + 1] * w).astype(np.float32)
    if patient.line_uv > 0:
        amp = (patient.line_uv * rng.uniform(0.3, 1.0, N_SCALP)).astype(np.float32)
        line = np.sin(np.float32(2 * np.pi * 60.0) * t + np.float32(rng.uniform(0, 6.3)))
        x += np.outer(line, amp)
    return x


def _ekg_template(fs: int) -> tuple[np.ndarray, int]:
    t = np.arange(-0.3, 0.5, 1.0 / fs)
    waves = ((-0.16, 0.1, 0.025), (-0.025, -0.12, 0.008), (0.0, 1.0, 0.01), (0.025, -0.25, 0.01),
             (0.26, 0.3, 0.045))  # fmt: skip  # P, Q, R, S, T: (time s, amplitude, width s)
    tpl = sum(a * np.exp(-0.5 * ((t - c) / w) ** 2) for c, a, w in waves)
    return np.asarray(tpl), round(0.3 * fs)


def ekg(rng: np.random.Generator, patient: Patient, n: int, fs: int = SAMPLE_RATE) -> np.ndarray:
    """(n,) µV EKG lead: PQRST complexes at the patient's heart rate with variability."""
    rr_mean = 60.0 / patient.hr_bpm
    n_beats = int(n / fs / rr_mean) + 3
    wobble = sps.lfilter([0.3], [1, -0.9], rng.standard_normal(n_beats))
    rr = rr_mean * (1 + 0.04 * wobble)
    beats = rng.uniform(-rr_mean, 0) + np.cumsum(rr)
    idx = np.round(beats * fs).astype(np.int64)
    tpl, centre = _ekg_template(fs)
    train = np.zeros(n + len(tpl))
    keep = idx[(idx >= 0) & (idx < n)]
    train[keep + centre] = 1.0 + 0.03 * rng.standard_normal(len(keep))
    out = sps.fftconvolve(train, tpl)[2 * centre : 2 * centre + n]
    out = patient.ekg_uv * out + 15.0 * rng.standard_normal(n)
    return out.astype(np.float32)


def ekg_leak_field(patient: Patient) -> np.ndarray:
    """(19,) share of the EKG seen by each scalp electrode (mostly temporal/ear side)."""
    return patient.ekg_leak * gaussian_field(patient.ekg_leak_focus, 0.45, 0.3)


def session_gain(gain: np.ndarray, t: np.ndarray) -> np.ndarray:
    """Slow multiplicative drift of background amplitude over a session (state changes)."""
    amp, period, phase = gain
    return np.exp((amp[None, :] * np.sin(2 * np.pi * t[:, None] / period + phase)).sum(axis=1))


def _smooth_gaussian(rng: np.random.Generator, n: int, tau_steps: float) -> np.ndarray:
    """(n,) unit-variance Gaussian AR(1) noise with correlation time ``tau_steps`` samples."""
    a = float(np.exp(-1.0 / tau_steps))
    z = sps.lfilter([np.sqrt(1 - a * a)], [1, -a], rng.standard_normal(n + int(5 * tau_steps)))
    return z[-n:]


def _burst_suppression(rng: np.random.Generator, patient: Patient, n: int) -> np.ndarray:
    """(n,) amplitude on the course grid alternating between suppressions (``bs_supp`` of the
    burst level, log-normal durations around ``bs_supp_s``) and bursts (around ``bs_burst_s``),
    with 0.15-s transitions."""
    out = np.empty(n)
    i, burst = 0, bool(rng.random() < 0.3)
    while i < n:
        median = patient.bs_burst_s if burst else patient.bs_supp_s
        length = max(1, round(np.exp(rng.normal(np.log(median), 0.45)) * COURSE_HZ))
        level = rng.uniform(0.7, 1.4) if burst else patient.bs_supp
        out[i : i + length] = level
        i, burst = i + length, not burst
    ramp = max(1, round(0.15 * COURSE_HZ))
    return np.convolve(np.pad(out, ramp, mode="edge"), np.ones(ramp) / ramp, "same")[ramp:-ramp]


class AmplitudeCourse:
    """The background's amplitude over a whole session, on a 20-Hz grid: the slow drift over
    minutes (``session_gain``), times a fluctuation over seconds (log-normal, ``mod_sd``) or, in
    burst suppression, the alternation of bursts and suppressions. Normalised so that its mean
    square over the session is that of the drift alone: ``source_psd`` stays the long-run PSD.

    EEG excerpts read it sample by sample (``at``); spectrogram rows without EEG read the mean
    power over each row's Hann window (``row_power``), so both views share one course.
    """

    def __init__(self, rng: np.random.Generator, patient: Patient, gain: np.ndarray, length_s: int):
        n = int(length_s * COURSE_HZ) + 2
        self.t = np.arange(n) / COURSE_HZ
        if patient.bs_supp > 0:
            env = _burst_suppression(rng, patient, n)
        else:
            env = np.exp(patient.mod_sd * _smooth_gaussian(rng, n, 1.5 * COURSE_HZ))
        env /= np.sqrt(np.mean(env**2))
        self.values = session_gain(gain, self.t) * env

    def at(self, t: np.ndarray) -> np.ndarray:
        """Amplitude at times ``t`` (s from the session start)."""
        return np.interp(t, self.t, self.values)

    def row_power(self, times: np.ndarray) -> np.ndarray:
        """Mean squared amplitude under the (Hann²-weighted) 1024-sample window of each row."""
        half = SPEC_NFFT / SAMPLE_RATE / 2
        k = np.arange(-round(half * COURSE_HZ), round(half * COURSE_HZ) + 1)
        w = np.hanning(len(k) + 2)[1:-1] ** 2
        grid = np.asarray(times, dtype=np.float64)[:, None] + k[None, :] / COURSE_HZ
        return (self.at(grid.ravel()).reshape(grid.shape) ** 2) @ (w / w.sum())
