"""The six HMS patterns as source waveforms with spatial fields.

One parametrisation covers them all, so that an event between two classes is rendered *between*
them (``hms.synth.plan.blend``): a phase that advances at ``rate0`` -> ``rate1`` Hz (evolution),
a waveform that is a blend of a rhythmic oscillation and a train of discrete discharges
(``sharp``: 0 = rhythmic delta, 1 = periodic discharges), biphasic or triphasic discharges
(``triphasic``), a field from strictly lateralised to generalised (``bilateral``), amplitude growth
and a field that spreads over the segment (seizures).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from scipy import signal as sps

from hms.constants import SAMPLE_RATE
from hms.synth.background import shaped_noise
from hms.synth.fields import gaussian_field

RAMP_S = 1.0  # raised-cosine onset and offset of a pattern segment


def discharge_template(sharp: float, triphasic: float, fs: int = SAMPLE_RATE) -> np.ndarray:
    """One discharge, peak |value| 1, centred: a sharp wave with an after-going slow wave, or a
    blunter triphasic wave (positive-negative-positive)."""
    t = np.arange(-0.3, 0.6, 1.0 / fs)
    width = 0.02 + 0.06 * (1.0 - np.clip(sharp, 0, 1))
    bi = -np.exp(-0.5 * (t / width) ** 2) + 0.45 * np.exp(
        -0.5 * ((t - 0.12 - 2 * width) / 0.07) ** 2
    )
    tri = (
        0.35 * np.exp(-0.5 * ((t + 0.07) / 0.03) ** 2)
        - np.exp(-0.5 * (t / 0.045) ** 2)
        + 0.6 * np.exp(-0.5 * ((t - 0.15) / 0.08) ** 2)
    )
    tpl = (1.0 - triphasic) * bi + triphasic * tri
    return tpl / np.abs(tpl).max()


def _smooth_noise(rng: np.random.Generator, n: int, fs: int, cutoff_hz: float) -> np.ndarray:
    """Unit-variance Gaussian noise low-passed at ``cutoff_hz`` (for slow modulations)."""
    step = max(1, int(fs / (4 * cutoff_hz)))
    coarse = rng.standard_normal(n // step + 4)
    coarse = sps.lfilter([1 - 0.6], [1, -0.6], coarse)
    coarse /= coarse.std() + 1e-9
    return np.interp(np.arange(n) / step, np.arange(len(coarse)), coarse)


def source_waveform(
    rng: np.random.Generator, r: dict[str, Any], n: int, fs: int = SAMPLE_RATE
) -> np.ndarray:
    """(n,) waveform of peak about 1 for the render parameters ``r`` (see module docstring)."""
    frac = np.arange(n) / max(n - 1, 1)
    rate = r["rate0"] + (r["rate1"] - r["rate0"]) * frac
    rate = rate * (1.0 + r["jitter"] * _smooth_noise(rng, n, fs, 0.5))
    phase = r["phase"] + 2 * np.pi * np.cumsum(rate) / fs
    sharp = float(np.clip(r["sharp"], 0.0, 1.0))
    # rhythmic part: a sinusoid that becomes sharply contoured as ``sharp`` grows
    harm = sum((0.45 * sharp) ** (h - 1) * np.sin(h * phase) for h in range(1, 5))
    rhythmic = harm / np.abs(harm).max()
    # discharge part: one discharge per cycle, amplitudes varying a little
    cycles = np.floor(phase / (2 * np.pi))
    idx = np.flatnonzero(np.diff(cycles) > 0) + 1
    tpl = discharge_template(sharp, r["triphasic"], fs)
    centre = int(0.3 * fs)
    train = np.zeros(n + len(tpl))
    train[idx + centre] = 1.0 + 0.15 * rng.standard_normal(len(idx))
    discharges = sps.fftconvolve(train, tpl)[2 * centre : 2 * centre + n]
    mix = discharge_share(sharp)
    wave = (1.0 - mix) * rhythmic + mix * discharges
    return wave / (np.percentile(np.abs(wave), 99.5) + 1e-9)


def discharge_share(sharp: float) -> float:
    """Share of discrete discharges in the waveform: 0 up to sharp 0.15 (rhythmic delta), 1 from
    0.85 (periodic discharges), seizures in between."""
    return float(np.clip((sharp - 0.15) / 0.7, 0.0, 1.0))


def peak_factor(r: dict[str, Any]) -> float:
    """Peak amplitude per unit of visibility: brief discharges need taller peaks than continuous
    rhythms to stand out of the background equally (and do, in real recordings)."""
    return 1.0 + 1.5 * discharge_share(r["sharp"])


def envelope(n: int, growth: float, fs: int = SAMPLE_RATE) -> np.ndarray:
    """Raised-cosine ramps at both ends, amplitude rising linearly by ``growth`` (mean 1)."""
    ramp = min(int(RAMP_S * fs), n // 2)
    env = np.ones(n)
    if ramp > 0:
        up = 0.5 - 0.5 * np.cos(np.pi * np.arange(ramp) / ramp)
        env[:ramp] = up
        env[n - ramp :] = up[::-1]
    g0 = 2.0 / (1.0 + growth)
    return env * (g0 + (growth * g0 - g0) * np.arange(n) / max(n - 1, 1))


def fields(r: dict[str, Any]) -> tuple[np.ndarray, np.ndarray]:
    """(19,) main field and (19,) field reached by spread (zero unless the event spreads)."""
    main = gaussian_field(r["focus"], r["spread"], r["bilateral"])
    side = np.sign(r["focus"][0]) or 1.0
    wide = gaussian_field((0.5 * side, 0.0), 0.7, r["spread_bilateral"])
    return main, wide * r["spread_amount"]


def render_event(rng: np.random.Generator, r: dict[str, Any], n: int, fs: int = SAMPLE_RATE):
    """(n, 19) µV contribution of one event over its segment of n samples."""
    wave = source_waveform(rng, r, n, fs) * envelope(n, r["growth"], fs) * r["amp"]
    main, wide = fields(r)
    spread = np.clip((np.arange(n) / max(n - 1, 1) - 0.2) / 0.6, 0.0, 1.0)
    out = np.outer(wave, main)
    if wide.any():
        out += np.outer(wave * spread, wide)
    return out.astype(np.float32)


def mean_field(r: dict[str, Any]) -> np.ndarray:
    """(19,) field averaged over the segment (the spread part counts half), for spectra."""
    main, wide = fields(r)
    return main + 0.5 * wide


def polymorphic_delta(
    rng: np.random.Generator, amp: float, n: int, fs: int = SAMPLE_RATE
) -> np.ndarray:
    """(n, 19) irregular, non-rhythmic delta over a random region: nonspecific slowing ('other')."""
    nfft = n + (n % 2)
    f = np.fft.rfftfreq(nfft, 1.0 / fs)
    psd = (np.exp(-0.5 * ((f - 1.5) / 1.2) ** 2) * (f > 0.3))[None, :]
    wave = shaped_noise(rng, psd, nfft, fs)[:n, 0]
    wave = wave / (wave.std() + 1e-9) * amp
    focus = (float(rng.uniform(-0.9, 0.9)), float(rng.uniform(-0.8, 0.8)))
    field = gaussian_field(focus, float(rng.uniform(0.4, 0.8)), float(rng.uniform(0, 1)))
    return np.outer(wave * envelope(n, 1.0, fs), field).astype(np.float32)
