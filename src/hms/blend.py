"""Blending member predictions, and the ensemble file ``hms.ensemble`` writes for ``hms.predict``.

``blend`` mixes prediction arrays; ``blend_members`` (and ``EnsembleSpec.blend``) mixes named
members' predictions, each the mean over the member's folds (``hms.inference.fold_mean``), with
an ensemble's weights: the one blend of every command that predicts.

A *weights folder* (``weights_dir``) is self-contained, so it can be uploaded as a Kaggle dataset::

    weights_dir/
        ensemble.json              what to run and how to blend it (below)
        <member>/fold<k>.ckpt      each member's fold checkpoints (``HMSModule`` checkpoints),
        <member>/fold<k>.onnx      or, in an ONNX folder (``"backend": "onnx"``), its graphs

``ensemble.json``::

    {"format": 1, "name": "seed", "space": "prob" | "log",
     "weights": {"effnet_b0": 0.5, ...},            # non-negative, summing to 1
     "bias": null | [6 floats],                      # added to the blend's log-probabilities
     "members": {"effnet_b0": {"checkpoints": ["effnet_b0/fold0.ckpt", ...],
                               "data": {"recording": {...}, "window": {...}}}, ...},
     "cv": {...},                                    # the scores it was chosen on (information)
     "hms_version": "0.1.0",                         # the hms that wrote it (absent: older files)
     "built_from": {...}}                            # what it was built from (EnsembleSpec)

``data`` holds the preprocessing settings the member was trained with (``data.recording`` and
``data.window`` of its runs), so prediction rebuilds exactly the training inputs. An ONNX
folder (``python -m hms.export format=onnx``) has ``"backend": "onnx"``, lists ``.onnx`` files
under ``checkpoints`` and gives each member its graph's ``inputs`` (``["eeg"]``, ...).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from hms.constants import N_CLASSES
from hms.errors import HMSDataError

ENSEMBLE_FILE = "ensemble.json"
FORMAT = 1
SPACES = ("prob", "log")
BACKENDS = {"torch": ".ckpt", "onnx": ".onnx"}  # a folder's kind and the suffix of its files
INPUTS = ("eeg", "spec")
_TINY = 1e-12


def blend(
    probs: Sequence[np.ndarray],
    weights: Sequence[float],
    space: str = "prob",
    bias: Sequence[float] | None = None,
) -> np.ndarray:
    """Weighted blend of probability arrays (N, 6); rows of the result sum to 1.

    ``space="prob"`` averages probabilities; ``"log"`` averages log-probabilities (a weighted
    geometric mean, renormalised). ``bias`` (6,) is added to the log-probabilities of the blend.
    """
    if space not in SPACES:
        raise ValueError(f"space must be one of {SPACES}, got {space!r}")
    if len(probs) != len(weights) or not probs:
        raise ValueError(f"{len(probs)} prediction arrays for {len(weights)} weights")
    w = np.asarray(weights, dtype=np.float64)
    if (w < 0).any() or w.sum() <= 0:
        raise ValueError(f"weights must be non-negative with a positive sum, got {w.tolist()}")
    w = w / w.sum()
    stack = np.stack([np.asarray(p, dtype=np.float64) for p in probs])  # (M, N, 6)
    if space == "prob":
        out = np.tensordot(w, stack, axes=1)
        log = np.log(np.clip(out, _TINY, None))
    else:
        log = np.tensordot(w, np.log(np.clip(stack, _TINY, None)), axes=1)
    if bias is not None:
        log = log + np.asarray(bias, dtype=np.float64)[None, :]
    log -= log.max(axis=1, keepdims=True)
    out = np.exp(log)
    return out / out.sum(axis=1, keepdims=True)


def blend_members(
    member_probs: Mapping[str, np.ndarray],
    weights: Mapping[str, float],
    space: str = "prob",
    bias: Sequence[float] | None = None,
) -> np.ndarray:
    """``blend`` of the members' predictions (N, 6) by name, each with its weight in ``weights``;
    the members given, in their order."""
    names = list(member_probs)
    return blend([member_probs[n] for n in names], [weights[n] for n in names], space, bias)


@dataclass
class EnsembleSpec:
    """The content of ``ensemble.json`` (paths of checkpoints relative to the weights folder)."""

    name: str
    weights: dict[str, float]
    checkpoints: dict[str, list[str]]
    data: dict[str, dict[str, Any]]
    space: str = "prob"
    bias: list[float] | None = None
    cv: dict[str, Any] = field(default_factory=dict)
    # What hms.ensemble built the folder from: the ensemble config's digest and, per checkpoint
    # (path relative to the folder), its run, the run's config digest and the file's SHA-256,
    # which readers check (``hms.inference.open_weights``). None in a hand-written file.
    built_from: dict[str, Any] | None = None
    backend: str = "torch"  # what runs the files: torch (checkpoints) or onnx (graphs)
    inputs: dict[str, list[str]] = field(default_factory=dict)  # ONNX: each graph's inputs
    # The version of hms that wrote the folder (``hms.ensembling``); None in older or hand-written
    # files. The Kaggle kit refuses weights of another version (``hms.kaggle_kit``).
    hms_version: str | None = None

    @property
    def members(self) -> list[str]:
        return list(self.weights)

    def blend(self, member_probs: Mapping[str, np.ndarray]) -> np.ndarray:
        """This ensemble's prediction from its members' (all of them, or a subset such as those
        of positive weight): ``blend_members`` with this file's weights, space and bias."""
        return blend_members(member_probs, self.weights, self.space, self.bias)

    def to_json(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "name": self.name,
            "space": self.space,
            "weights": self.weights,
            "bias": self.bias,
            **({} if self.backend == "torch" else {"backend": self.backend}),
            "members": {
                m: {
                    "checkpoints": self.checkpoints[m],
                    "data": self.data.get(m, {}),
                    **({"inputs": self.inputs[m]} if m in self.inputs else {}),
                }
                for m in self.members
            },
            "cv": self.cv,
            **({} if self.hms_version is None else {"hms_version": self.hms_version}),
            **({} if self.built_from is None else {"built_from": self.built_from}),
        }


def _is_number(x: Any) -> bool:
    return isinstance(x, int | float) and not isinstance(x, bool) and np.isfinite(x)


def _mapping(raw: Any, key: str, path: Path, what: str) -> dict:
    """``raw[key]`` as a dict (absent or null: empty); anything else is refused."""
    value = raw.get(key)
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise HMSDataError(path, f"{what} must be an object, got {type(value).__name__}")
    return dict(value)


def read_ensemble(weights_dir: str | Path) -> EnsembleSpec:
    """Read and check ``weights_dir/ensemble.json``; every checkpoint it names must exist.

    A file of another structure (a member that is not an object, a weight that is not a number,
    checkpoints that are not a list of relative paths, ...) raises ``HMSDataError`` naming the
    file and the field."""
    weights_dir = Path(weights_dir)
    path = weights_dir / ENSEMBLE_FILE
    if not weights_dir.is_dir():
        raise HMSDataError(weights_dir, "weights folder not found")
    if not path.is_file():
        raise HMSDataError(
            weights_dir,
            f"no {ENSEMBLE_FILE} in this weights folder (write one with python -m hms.ensemble)",
        )
    try:
        raw = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise HMSDataError(path, f"not a readable JSON file: {exc}") from exc
    if not isinstance(raw, Mapping) or raw.get("format") != FORMAT:
        raise HMSDataError(path, f"not an hms ensemble file of format {FORMAT}")
    name = raw.get("name", weights_dir.name)
    if not isinstance(name, str):
        raise HMSDataError(path, f"name must be a string, got {name!r}")
    members = _mapping(raw, "members", path, "members")
    weights_raw = _mapping(raw, "weights", path, "weights")
    bad = {k: v for k, v in weights_raw.items() if not _is_number(v)}
    if bad:
        raise HMSDataError(path, f"weights must be numbers, got {bad}")
    weights = {str(k): float(v) for k, v in weights_raw.items()}
    if not weights or set(weights) != set(members):
        raise HMSDataError(
            path, f"weights {sorted(weights)} and members {sorted(members)} do not match"
        )
    if any(w < 0 for w in weights.values()) or sum(weights.values()) <= 0:
        raise HMSDataError(path, f"weights must be non-negative with a positive sum: {weights}")
    space = raw.get("space", "prob")
    if space not in SPACES:
        raise HMSDataError(path, f"space must be one of {SPACES}, got {space!r}")
    bias = raw.get("bias")
    if bias is not None and (
        not isinstance(bias, list) or len(bias) != N_CLASSES or not all(map(_is_number, bias))
    ):
        raise HMSDataError(
            path, f"bias must be null or a list of {N_CLASSES} numbers, got {bias!r}"
        )
    cv = _mapping(raw, "cv", path, "cv")
    backend = raw.get("backend", "torch")
    if backend not in BACKENDS:
        raise HMSDataError(path, f"backend must be one of {sorted(BACKENDS)}, got {backend!r}")
    suffix = BACKENDS[backend]
    inputs: dict[str, list[str]] = {}
    hms_version = raw.get("hms_version")
    if hms_version is not None and (not isinstance(hms_version, str) or not hms_version):
        raise HMSDataError(path, f"hms_version must be a version string, got {hms_version!r}")
    checkpoints: dict[str, list[str]] = {}
    data: dict[str, dict[str, Any]] = {}
    for member_name, member in members.items():
        if not isinstance(member, Mapping):
            raise HMSDataError(
                path, f"member {member_name!r} must be an object with checkpoints and data, got "
                f"{type(member).__name__}",
            )  # fmt: skip
        files = member.get("checkpoints")
        if files is not None and not isinstance(files, list):
            raise HMSDataError(
                path, f"member {member_name!r}: checkpoints must be a list of paths, got {files!r}"
            )
        files = list(files or [])
        if not files:
            raise HMSDataError(path, f"member {member_name!r} lists no checkpoint")
        if not all(isinstance(f, str) and f for f in files):
            raise HMSDataError(
                path, f"member {member_name!r}: checkpoints must be paths (strings), got {files}"
            )
        outside = [  # relative paths below the folder only (a file there may be a symlink)
            f for f in files if Path(f).is_absolute() or ".." in Path(f).parts
        ]
        if outside:  # a weights folder is self-contained: ensemble.json names nothing elsewhere
            raise HMSDataError(
                path, f"member {member_name!r}: checkpoints outside the weights folder: {outside}"
            )
        foreign = [f for f in files if Path(f).suffix != suffix]
        if foreign:  # each kind of folder holds one kind of file, run by one backend
            raise HMSDataError(
                path, f"member {member_name!r}: files {foreign} in a {backend} folder (its "
                f"files end in {suffix})",
            )  # fmt: skip
        if backend == "onnx":
            graph_inputs = member.get("inputs")
            if (
                not isinstance(graph_inputs, list)
                or not graph_inputs
                or not set(graph_inputs) <= set(INPUTS)
                or len(set(graph_inputs)) != len(graph_inputs)
            ):
                raise HMSDataError(
                    path, f"member {member_name!r}: inputs must list the graph's inputs among "
                    f"{list(INPUTS)}, got {graph_inputs!r}",
                )  # fmt: skip
            inputs[str(member_name)] = list(graph_inputs)
        missing = [f for f in files if not (weights_dir / f).is_file()]
        if missing:
            raise HMSDataError(
                weights_dir, f"member {member_name!r}: checkpoints not found: {missing}"
            )
        member_data = _mapping(member, "data", path, f"member {member_name!r}: data")
        for block in ("recording", "window"):
            _mapping(member_data, block, path, f"member {member_name!r}: data.{block}")
        checkpoints[str(member_name)] = files
        data[str(member_name)] = member_data
    built_from = raw.get("built_from")
    if built_from is not None:
        sums = built_from.get("checkpoints") if isinstance(built_from, Mapping) else None
        listed = {f for files in checkpoints.values() for f in files}
        if not isinstance(sums, Mapping) or not all(
            isinstance(sums.get(f), Mapping) and isinstance(sums[f].get("sha256"), str)
            for f in listed
        ):
            raise HMSDataError(
                path, "built_from must give the sha256 of every checkpoint the members list "
                "(or be removed from a hand-edited file)",
            )  # fmt: skip
    return EnsembleSpec(
        name=name,
        weights=weights,
        checkpoints=checkpoints,
        data=data,
        space=space,
        bias=None if bias is None else [float(b) for b in bias],
        cv=cv,
        built_from=None if built_from is None else dict(built_from),
        backend=backend,
        inputs=inputs,
        hms_version=hms_version,
    )
