"""ICU recording artefacts, applied to a rendered EEG in the order real ones arise: eye blinks,
muscle bursts and electrode pops add to the signal; the amplifier then saturates at its rails;
a disconnected electrode reads a constant; dropped packets are NaN."""

from __future__ import annotations

import numpy as np

from hms.constants import SAMPLE_RATE
from hms.synth.background import shaped_noise
from hms.synth.fields import N_SCALP, weights_from
from hms.synth.plan import Artefact

RAIL_UV = 3276.7  # saturation of a 16-bit amplifier at 0.1 µV per count
BLINK_FIELD = weights_from(
    {"Fp1": 1.0, "Fp2": 1.0, "F7": 0.35, "F8": 0.35, "F3": 0.3, "F4": 0.3, "Fz": 0.3}
)
MUSCLE_LEFT = weights_from({"F7": 1.0, "T3": 1.0, "T5": 0.8, "Fp1": 0.4, "F3": 0.25, "O1": 0.2})
MUSCLE_RIGHT = weights_from({"F8": 1.0, "T4": 1.0, "T6": 0.8, "Fp2": 0.4, "F4": 0.25, "O2": 0.2})


def _span(a: Artefact, n: int, fs: int) -> tuple[int, int]:
    i0 = int(np.clip(round(a.start * fs), 0, n))
    return i0, int(np.clip(i0 + round(a.duration * fs), i0, n))


def apply_artefacts(
    rng: np.random.Generator,
    x: np.ndarray,
    artefacts: list[Artefact],
    flat_channel: int,
    fs: int = SAMPLE_RATE,
) -> np.ndarray:
    """Apply an EEG file's artefacts in place to ``x`` (n, 20) µV and return it."""
    n = len(x)
    for a in artefacts:
        i0, i1 = _span(a, n, fs)
        if a.kind == "blink" and i1 > i0:
            shape = np.sin(np.pi * np.arange(i1 - i0) / (i1 - i0)) ** 2
            x[i0:i1, :N_SCALP] += (a.amp * np.outer(shape, BLINK_FIELD)).astype(np.float32)
        elif a.kind == "muscle" and i1 - i0 > 8:
            m = i1 - i0 + (i1 - i0) % 2
            f = np.fft.rfftfreq(m, 1.0 / fs)
            psd = ((f > 20) * (f < 90) * 1.0)[None, :].repeat(N_SCALP, axis=0)
            burst = shaped_noise(rng, psd, m, fs)[: i1 - i0]
            burst *= a.amp / (burst.std() + 1e-9)
            field = {-1: MUSCLE_LEFT, 1: MUSCLE_RIGHT, 0: MUSCLE_LEFT + MUSCLE_RIGHT}[a.side]
            env = np.sin(np.pi * np.arange(i1 - i0) / (i1 - i0))[:, None]
            x[i0:i1, :N_SCALP] += (burst * env * field[None, :]).astype(np.float32)
        elif a.kind == "pop" and i0 < n:
            i1 = min(n, i0 + int(6 * a.tau * fs) + 1)
            decay = np.exp(-np.arange(i1 - i0) / (a.tau * fs))
            x[i0:i1, a.channel] += (a.amp * decay).astype(np.float32)
        elif a.kind == "clip" and i1 > i0:
            bump = np.sin(np.pi * np.arange(i1 - i0) / (i1 - i0))
            x[i0:i1, a.channel] += (a.amp * bump).astype(np.float32)
    np.clip(x, -RAIL_UV, RAIL_UV, out=x)
    if flat_channel >= 0:
        x[:, flat_channel] = np.float32(round(float(x[0, flat_channel]), 1))
    for a in artefacts:
        if a.kind == "nan":
            i0, i1 = _span(a, n, fs)
            if a.channel < 0:
                x[i0:i1, :] = np.nan
            else:
                x[i0:i1, a.channel] = np.nan
    return x
