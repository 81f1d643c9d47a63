"""Where in a model's time axis the labelled 10 s lie.

A 50-s window is labelled by experts for its central 10 s; the rest is context. A head that pools
over the whole window dilutes a 10-s pattern with 40 s of background (or of a neighbouring
event), so the seed's models can also pool the steps of the central fifth (``centre_pool``).
"""

from __future__ import annotations

from hms.constants import LABEL_SECONDS, WINDOW_SECONDS


def centre_slice(n: int) -> slice:
    """The steps of a time axis of ``n`` steps (spanning the 50-s window) whose centres lie in
    the labelled central 10 s: the middle fifth, at least one step."""
    if n < 1:
        raise ValueError(f"a time axis needs at least one step, got {n}")
    lo = int(n * (WINDOW_SECONDS - LABEL_SECONDS) / 2 / WINDOW_SECONDS)
    return slice(lo, n - lo)
