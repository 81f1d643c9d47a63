"""Expert labels: the latent class distribution of an event, the number of raters and their votes.

The latent distribution is a deterministic, smooth function of what is rendered into the EEG
(primary pattern, borderline amount toward a neighbour pattern, pattern-to-background amplitude,
artefact burden), so a model that reads the signal well can recover it; the votes are a
multinomial draw from it. See docs/synth.md.
"""

from __future__ import annotations

import numpy as np

from hms.constants import CLASSES, N_CLASSES

SEIZURE, LPD, GPD, LRDA, GRDA, OTHER = range(N_CLASSES)
CLASS_INDEX: dict[str, int] = {c: i for i, c in enumerate(CLASSES)}

# Primary-class prior per event, calibrated so that consensus shares of the label rows come out
# near HMS's (seizure 20%, LPD 14%, GPD 16%, LRDA 16%, GRDA 18%, other 17%).
CLASS_PRIOR = np.array([0.225, 0.122, 0.176, 0.174, 0.191, 0.13])
CLASS_PRIOR = CLASS_PRIOR / CLASS_PRIOR.sum()

# Neighbours on the ictal-interictal continuum, with the probability of leaning toward each.
NEIGHBOURS: dict[int, tuple[tuple[int, float], ...]] = {
    SEIZURE: ((LPD, 0.45), (LRDA, 0.35), (GPD, 0.2)),
    LPD: ((SEIZURE, 0.35), (GPD, 0.35), (LRDA, 0.3)),
    GPD: ((GRDA, 0.45), (LPD, 0.4), (SEIZURE, 0.15)),
    LRDA: ((LPD, 0.4), (GRDA, 0.4), (SEIZURE, 0.2)),
    GRDA: ((GPD, 0.5), (LRDA, 0.5)),
    OTHER: ((LRDA, 0.25), (GRDA, 0.3), (LPD, 0.2), (GPD, 0.15), (SEIZURE, 0.1)),
}

RATER_LAPSE = 0.02  # share of votes that go to any class at random (keeps the latent > 0)
OTHER_MAX = 0.6  # 'other' mass of a pattern far below the background
WEAK_RATIO = 1.2  # pattern/background amplitude at which half of OTHER_MAX goes to 'other'
WEAK_WIDTH = 0.2
BURDEN_OTHER = 0.3  # 'other' mass added by a segment fully covered by artefacts
OTHER_AMP_PER_M = 2.5  # an 'other' event with borderline m shows its neighbour at ratio 2.5 m


def other_mass(ratio: float, burden: float) -> float:
    """Mass that raters give to 'other' because the pattern is faint or hidden by artefacts."""
    weak = OTHER_MAX / (1.0 + np.exp((ratio - WEAK_RATIO) / WEAK_WIDTH))
    return float(np.clip(weak + BURDEN_OTHER * burden, 0.0, 0.8))


def latent_distribution(c1: int, c2: int, m: float, ratio: float, burden: float) -> np.ndarray:
    """(6,) latent probabilities: (1-m) e_c1 + m e_c2, then 'other' mass, then rater lapses."""
    p = np.zeros(N_CLASSES)
    p[c1] += 1.0 - m
    p[c2] += m
    if c1 != OTHER:
        o = other_mass(ratio, burden)
        p = (1.0 - o) * p
        p[OTHER] += o
    else:  # the faint neighbour is the only pattern; artefacts push further toward 'other'
        shift = BURDEN_OTHER * burden * p[c2]
        p[c2] -= shift
        p[OTHER] += shift
    p = (1.0 - RATER_LAPSE) * p + RATER_LAPSE / N_CLASSES
    return p / p.sum()


def draw_raters(rng: np.random.Generator, high_only: bool = False) -> int:
    """Number of raters of one event, as in HMS: many events with 1-7, a block with 10-28."""
    if not high_only:
        u = rng.random()
        if u < 0.56:
            return int(rng.choice(7, p=[0.22, 0.18, 0.27, 0.1, 0.08, 0.08, 0.07]) + 1)
        if u < 0.60:
            return int(rng.integers(8, 10))
    return int(np.clip(np.round(rng.triangular(10, 14, 29)), 10, 28))


def draw_votes(rng: np.random.Generator, n: int, latent: np.ndarray) -> np.ndarray:
    """(6,) integer votes of ``n`` raters who each vote from the latent distribution."""
    return rng.multinomial(n, latent).astype(np.int64)


def consensus_index(votes: np.ndarray) -> np.ndarray:
    """Index of the expert consensus: the class with most votes, the first one on ties."""
    return np.argmax(np.asarray(votes), axis=-1)


def kl_rows(target: np.ndarray, pred: np.ndarray, eps: float = 1e-15) -> np.ndarray:
    """Per-row KL(target || pred) as Kaggle scores it (target rows normalised to sum 1)."""
    t = np.asarray(target, dtype=np.float64)
    t = t / t.sum(axis=1, keepdims=True)
    p = np.clip(np.asarray(pred, dtype=np.float64), eps, 1.0)
    p = p / p.sum(axis=1, keepdims=True)
    with np.errstate(divide="ignore", invalid="ignore"):
        terms = np.where(t > 0, t * np.log(t / p), 0.0)
    return terms.sum(axis=1)
