"""Named montages: how the 19 scalp electrodes become the channels a model reads.

A montage is one entry of a registry (``MONTAGES``): its derivations (an electrode minus a
reference, which is another electrode or the mean of several), and the structure the rest of hms
asks of it:

- ``flip_index``: the permutation of its channels that mirrors left and right (test-time flip,
  flip augmentation, the feature baseline's mirrored windows);
- ``chain_index``: the channels of each of the four lateral chains LL, LP, RP, RL, in that order
  and of equal length (the EEG spectrogram maps, the feature baseline's chain features). A
  montage of another shape (a transverse montage, a Laplacian, a 10-10 chain set) registers
  without them; the consumers that read chains ask for them with ``chains_for(consumer)``, which
  refuses such a montage in one line naming the consumer;
- ``midline``: the channels of the midline map, if the montage has one;
- ``electrodes``: the electrodes it reads (what a clinical recording must provide).

Each derivation has its own reference: a montage may mix bipolar derivations and derivations
against the common average, and ``Fp1-F7`` is always Fp1 minus F7. Applying a montage is one
vectorised subtraction on numpy arrays, and its flip is one index lookup, on numpy arrays or
torch tensors alike. Every shape and index comes from the montage's name, never from a channel
count, so two montages with the same number of channels cannot be mistaken for each other.
Adding a montage is one ``register_montage(Montage(...))`` call, here or in the user's code.

The double banana (16 derivations in the chains LL, LP, RP, RL, optionally followed by Fz-Cz and
Cz-Pz) is what hms has always used; ``average`` (each scalp electrode minus the mean of all 19)
shows a montage of another kind.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import numpy as np

from hms.constants import (
    BIPOLAR_PAIRS,
    CHAIN_NAMES,
    CHAINS,
    CHANNEL_INDEX,
    MIDLINE_PAIRS,
    MIRROR,
    SCALP_CHANNELS,
)
from hms.errors import HMSDataError

DEFAULT_MONTAGE = "double_banana"


class MontageError(HMSDataError):
    """A montage that a consumer cannot read (no chains where chains are read)."""

    def __init__(self, problem: str) -> None:
        super().__init__(None, problem)

    def __reduce__(self):
        return (type(self), (self.problem,))


AVERAGE = "avg"  # the reference name of the common average of ``SCALP_CHANNELS``


@dataclass(frozen=True, eq=False)
class Montage:
    """A montage: ``derivations`` are (electrode, reference) pairs, the reference an electrode
    name or ``"avg"`` (the mean of the 19 scalp electrodes), each derivation its own;
    ``chains`` names the derivations of each lateral chain (``CHAIN_NAMES`` order, equal
    lengths), or is empty for a montage without them; ``midline`` those of the midline map
    (empty: none)."""

    name: str
    derivations: tuple[tuple[str, str], ...]
    chains: Mapping[str, tuple[int, ...]] = field(default_factory=dict)
    midline: tuple[int, ...] = ()
    description: str = ""

    def __post_init__(self) -> None:
        names = {e for d in self.derivations for e in d} - {AVERAGE}
        unknown = sorted(names - set(SCALP_CHANNELS))
        if unknown:
            raise ValueError(f"montage {self.name!r}: unknown electrodes {unknown}")
        if not self.derivations:
            raise ValueError(f"montage {self.name!r}: no derivations")
        same = [f"{a}-{r}" for a, r in self.derivations if a == r]
        if same:
            raise ValueError(f"montage {self.name!r}: {same} are an electrode minus itself")
        if len(set(self.derivations)) != len(self.derivations):
            raise ValueError(f"montage {self.name!r}: a derivation is listed twice")
        if self.chains and tuple(self.chains) != CHAIN_NAMES:
            raise ValueError(f"montage {self.name!r}: chains must be {CHAIN_NAMES} in that order")
        lengths = {len(c) for c in self.chains.values()}
        if self.chains and (len(lengths) != 1 or 0 in lengths):
            raise ValueError(f"montage {self.name!r}: chains must be non-empty and equally long")
        used = [i for c in self.chains.values() for i in c] + list(self.midline)
        if any(not 0 <= i < len(self.derivations) for i in used):
            raise ValueError(f"montage {self.name!r}: a chain names a derivation it lacks")
        self.flip_index  # noqa: B018  # every derivation must have its mirror: checked now

    @property
    def n_channels(self) -> int:
        return len(self.derivations)

    @property
    def names(self) -> list[str]:
        """Channel names, e.g. ``Fp1-F7`` or ``Fp1-avg``."""
        return [f"{a}-{r}" for a, r in self.derivations]

    @cached_property
    def electrodes(self) -> tuple[str, ...]:
        """The scalp electrodes the montage reads, in ``SCALP_CHANNELS`` order."""
        used = {e for d in self.derivations for e in d}
        if AVERAGE in used:
            used |= set(SCALP_CHANNELS)
        return tuple(c for c in SCALP_CHANNELS if c in used)

    @cached_property
    def flip_index(self) -> list[int]:
        """Channel permutation that swaps each derivation with its mirror image."""
        position = {d: i for i, d in enumerate(self.derivations)}
        mirrored = [(MIRROR[a], r if r == AVERAGE else MIRROR[r]) for a, r in self.derivations]
        missing = [f"{a}-{r}" for a, r in mirrored if (a, r) not in position]
        if missing:
            raise ValueError(f"montage {self.name!r}: no mirror image for {missing}")
        return [position[d] for d in mirrored]

    @property
    def has_chains(self) -> bool:
        """Whether the montage has the four lateral chains LL, LP, RP, RL."""
        return bool(self.chains)

    def chains_for(self, consumer: str) -> list[list[int]]:
        """``chain_index`` for ``consumer`` (what reads the chains, in words); a montage without
        chains is refused in one line naming both and the montages that have them."""
        if not self.chains:
            having = sorted(n for n, m in MONTAGES.items() if m.chains)
            raise MontageError(
                f"{consumer} reads the lateral chains {list(CHAIN_NAMES)}, and montage "
                f"{self.name!r} has none; use one that has them: {having}"
            )
        return [list(self.chains[c]) for c in CHAIN_NAMES]

    @cached_property
    def chain_index(self) -> list[list[int]]:
        """(4, k) channel indices of the chains LL, LP, RP, RL."""
        return self.chains_for("this consumer")

    @cached_property
    def lateral_channels(self) -> list[int]:
        """The channels of the four chains, in channel order."""
        return sorted({i for c in self.chain_index for i in c})

    @cached_property
    def _index(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Each derivation's anode, its reference electrode (0 where it is the average) and
        whether its reference is the common average, as index arrays into ``EEG_CHANNELS``."""
        anode = np.array([CHANNEL_INDEX[a] for a, _ in self.derivations], dtype=np.int64)
        average = np.array([r == AVERAGE for _, r in self.derivations], dtype=bool)
        cathode = np.array(
            [0 if r == AVERAGE else CHANNEL_INDEX[r] for _, r in self.derivations], dtype=np.int64
        )
        return anode, cathode, average

    def apply(self, x: np.ndarray, clip_uv: float | None = 1024.0) -> np.ndarray:
        """Referential (time, 20) -> derivations (time, n_channels), each its anode minus its
        own reference, clipped to +-clip_uv."""
        anode, cathode, average = self._index
        if average.any():
            scalp = [CHANNEL_INDEX[c] for c in SCALP_CHANNELS]
            mean = x[:, scalp].mean(axis=1, keepdims=True, dtype=x.dtype)
        if not average.any():
            y = x[:, anode] - x[:, cathode]
        elif average.all():
            y = x[:, anode] - mean
        else:  # bipolar and average references side by side
            reference = x[:, cathode]
            reference[:, average] = mean
            y = x[:, anode] - reference
        if clip_uv is not None:
            y = y.clip(-clip_uv, clip_uv)
        return y

    def to_json(self) -> dict[str, Any]:
        """What a manifest records of the montage (a reader can check it knows the same)."""
        return {"name": self.name, "channels": self.names}


MONTAGES: dict[str, Montage] = {}


def register_montage(montage: Montage) -> Montage:
    """Add a montage to the registry (its name must be new)."""
    if montage.name in MONTAGES:
        raise ValueError(f"a montage named {montage.name!r} is already registered")
    MONTAGES[montage.name] = montage
    return montage


def get_montage(montage: str | Montage) -> Montage:
    """The registered montage of that name (a ``Montage`` is returned as it is)."""
    if isinstance(montage, Montage):
        return montage
    try:
        return MONTAGES[montage]
    except (KeyError, TypeError):
        raise ValueError(f"unknown montage {montage!r}; known: {sorted(MONTAGES)}") from None


def _chain_positions(pairs: Sequence[tuple[str, str]]) -> dict[str, tuple[int, ...]]:
    position = {p: i for i, p in enumerate(pairs)}
    return {name: tuple(position[p] for p in CHAINS[name]) for name in CHAIN_NAMES}


register_montage(
    Montage(
        "double_banana",
        BIPOLAR_PAIRS,
        _chain_positions(BIPOLAR_PAIRS),
        description="longitudinal bipolar: the chains LL, LP, RP, RL (16 derivations)",
    )
)
register_montage(
    Montage(
        "double_banana_midline",
        BIPOLAR_PAIRS + MIDLINE_PAIRS,
        _chain_positions(BIPOLAR_PAIRS + MIDLINE_PAIRS),
        midline=(16, 17),
        description="the double banana and the midline chain Fz-Cz, Cz-Pz (18 derivations)",
    )
)
_AVG_CHAINS = {  # each lateral chain's electrodes, front to back
    "LL": ("Fp1", "F7", "T3", "T5", "O1"),
    "LP": ("Fp1", "F3", "C3", "P3", "O1"),
    "RP": ("Fp2", "F4", "C4", "P4", "O2"),
    "RL": ("Fp2", "F8", "T4", "T6", "O2"),
}
register_montage(
    Montage(
        "average",
        tuple((c, AVERAGE) for c in SCALP_CHANNELS),
        {k: tuple(SCALP_CHANNELS.index(e) for e in v) for k, v in _AVG_CHAINS.items()},
        midline=tuple(SCALP_CHANNELS.index(e) for e in ("Fz", "Cz", "Pz")),
        description="common average reference: each of the 19 scalp electrodes minus their mean",
    )
)


def montage_name(midline: bool) -> str:
    """The double banana's name with or without its midline chain (old ``midline`` flags)."""
    return "double_banana_midline" if midline else DEFAULT_MONTAGE


# --------------------------------------------------------------------------- double banana API
# The functions below are the double banana's (with or without the midline chain), kept for the
# code and notebooks that name it by its ``midline`` flag.


def bipolar_pairs(midline: bool = False) -> tuple[tuple[str, str], ...]:
    """The double banana (LL, LP, RP, RL; 16 pairs), optionally with Fz-Cz and Cz-Pz (18)."""
    return get_montage(montage_name(midline)).derivations


def bipolar_names(midline: bool = False) -> list[str]:
    return get_montage(montage_name(midline)).names


def montage_index(midline: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Indices into ``EEG_CHANNELS`` of each pair's anode and cathode."""
    anode, cathode, _ = get_montage(montage_name(midline))._index
    return anode, cathode


def apply_montage(x: np.ndarray, midline: bool = False, clip_uv: float | None = 1024.0):
    """Referential (time, 20) -> bipolar (time, 16|18), each derivation clipped to +-clip_uv."""
    return get_montage(montage_name(midline)).apply(x, clip_uv)


def bipolar_flip_index(midline: bool = False) -> np.ndarray:
    """Permutation of the bipolar channels that swaps each derivation with its mirror.

    The double banana is symmetric: LL <-> RL and LP <-> RP pair by pair, midline pairs stay.
    """
    return np.array(get_montage(montage_name(midline)).flip_index, dtype=np.int64)
