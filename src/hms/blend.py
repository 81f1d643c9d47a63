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

A weights folder may come from a stranger: ``read_ensemble`` bounds the file before it is
parsed and what it lists (``LIMITS``: its size, members, files per member and in all), and
refuses a file listed twice, member names that are not plain names (they become folder names
in exports), and numbers that are not finite.
"""

from __future__ import annotations

import json
import math
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from hms.backends.base import BACKENDS
from hms.constants import N_CLASSES
from hms.errors import HMSDataError

ENSEMBLE_FILE = "ensemble.json"
FORMAT = 1
SPACES = ("prob", "log")
INPUTS = ("eeg", "spec")
_TINY = 1e-12
# Bounds of a weights folder, checked before any file is read (hms.inference.open_weights).
MAX_MANIFEST_BYTES = 4 * 1024**2  # ensemble.json of the seed ensemble: about 10 kB
MAX_MEMBERS = 32
MAX_FILES_PER_MEMBER = 64  # folds (times seeds) of one member
MAX_FILES = 256
LIMITS = {
    "manifest bytes": MAX_MANIFEST_BYTES,
    "members": MAX_MEMBERS,
    "files per member": MAX_FILES_PER_MEMBER,
    "files": MAX_FILES,
}
MEMBER_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")  # a folder name in every export
_SHA256 = re.compile(r"[0-9a-f]{64}")


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
    """A finite JSON number within float range (JSON integers have no limit: 10**400 is not)."""
    if not isinstance(x, int | float) or isinstance(x, bool):
        return False
    try:
        return math.isfinite(x)
    except OverflowError:  # an integer beyond float range
        return False


def object_field(raw: Any, key: str, path: Path, what: str) -> dict:
    """``raw[key]`` as a dict (absent or null: empty); anything else is refused."""
    value = raw.get(key)
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise HMSDataError(path, f"{what} must be an object, got {type(value).__name__}")
    return dict(value)


def read_json_bounded(path: Path, max_bytes: int, what: str) -> Any:
    """A JSON file of at most ``max_bytes`` (checked before it is read), in any encoding JSON
    allows (UTF-8, -16, -32, with or without a BOM); ``HMSDataError`` naming the file
    otherwise (too large, not JSON, nested too deeply)."""
    size = path.stat().st_size
    if size > max_bytes:
        raise HMSDataError(
            path, f"{size:,} bytes: larger than any {what} ({max_bytes:,} bytes at most)"
        )
    try:
        with path.open("rb") as fh:
            data = fh.read(max_bytes + 1)
        if data.startswith(b"\xef\xbb\xbf"):
            data = data[3:]  # json.loads takes the UTF-16/32 BOMs, not UTF-8's
        return json.loads(data)
    except RecursionError:
        raise HMSDataError(path, "not a readable JSON file: nested too deeply") from None
    except (OSError, ValueError) as exc:  # UnicodeDecodeError and JSONDecodeError among them
        raise HMSDataError(path, f"not a readable JSON file: {exc}") from None


def _few(items: Sequence[Any], n: int = 5) -> str:
    """A few of ``items`` for a message, each cut to 80 characters (a manifest of 4 MB may hold
    one path of a million)."""
    return str([str(x)[:80] for x in list(items)[:n]])


def _duplicates(items: Sequence[str]) -> list[str]:
    seen: set[str] = set()
    return sorted({x for x in items if x in seen or seen.add(x)})  # type: ignore[func-returns-value]


def check_blend(
    raw: Mapping[str, Any], members: Mapping[str, Any], path: Path
) -> tuple[dict[str, float], str, list[float] | None]:
    """The blend of a manifest (``ensemble.json``, ``export.json``): ``(weights, space, bias)``,
    its members within ``MAX_MEMBERS`` and plain names, one finite non-negative weight each
    (a positive, finite sum), a known space, a bias of six numbers or none."""
    if len(members) > MAX_MEMBERS:
        raise HMSDataError(
            path, f"{len(members)} members, more than the {MAX_MEMBERS} a weights folder may hold"
        )
    names = [m for m in members if not MEMBER_NAME.fullmatch(m)]
    if names:
        raise HMSDataError(
            path, f"member names must be plain names (letters, digits, '.', '_', '-', at most "
            f"64 characters, not starting with '.'), got {[n[:80] for n in names[:5]]}",
        )  # fmt: skip
    weights_raw = object_field(raw, "weights", path, "weights")
    bad = {k[:80]: v for k, v in weights_raw.items() if not _is_number(v)}
    if bad:
        shown = {k: str(v)[:80] for k, v in list(bad.items())[:5]}
        raise HMSDataError(path, f"weights must be numbers, got {shown}")
    weights = {str(k): float(v) for k, v in weights_raw.items()}
    if not weights or set(weights) != set(members):
        raise HMSDataError(
            path, f"weights {[k[:80] for k in sorted(weights)[:10]]} and members "
            f"{sorted(members)[:10]} do not match",
        )  # fmt: skip
    total = sum(weights.values())  # inf when it overflows (math.fsum raises)
    if any(w < 0 for w in weights.values()) or not 0 < total < math.inf:
        raise HMSDataError(
            path,
            f"weights must be non-negative with a positive, finite sum: {str(weights)[:300]}",
        )
    space = raw.get("space", "prob")
    if not isinstance(space, str) or space not in SPACES:
        raise HMSDataError(path, f"space must be one of {SPACES}, got {str(space)[:80]!r}")
    bias = raw.get("bias")
    if bias is not None and (
        not isinstance(bias, list) or len(bias) != N_CLASSES or not all(map(_is_number, bias))
    ):
        raise HMSDataError(
            path, f"bias must be null or a list of {N_CLASSES} numbers, got {str(bias)[:200]}"
        )
    return weights, space, None if bias is None else [float(b) for b in bias]


def check_member_files(
    path: Path, folder: Path, member: str, files: Any, suffix: str, kind: str
) -> list[str]:
    """A member's files as a manifest lists them: a list of at most ``MAX_FILES_PER_MEMBER``
    relative paths inside ``folder``, each once, each ending in ``suffix`` and present."""
    if files is not None and not isinstance(files, list):
        raise HMSDataError(
            path, f"member {member!r}: checkpoints must be a list of paths, got "
            f"{str(files)[:200]}",
        )  # fmt: skip
    files = list(files or [])
    if not files:
        raise HMSDataError(path, f"member {member!r} lists no checkpoint")
    if len(files) > MAX_FILES_PER_MEMBER:
        raise HMSDataError(
            path, f"member {member!r} lists {len(files)} files, more than the "
            f"{MAX_FILES_PER_MEMBER} a member may have",
        )  # fmt: skip
    if not all(isinstance(f, str) and f and "\x00" not in f for f in files):
        raise HMSDataError(
            path, f"member {member!r}: checkpoints must be paths (strings), got "
            f"{str(files[:5])[:200]}",
        )  # fmt: skip
    outside = [  # relative paths below the folder only (a file there may be a symlink)
        f for f in files if Path(f).is_absolute() or ".." in Path(f).parts
    ]
    if outside:  # a weights folder is self-contained: ensemble.json names nothing elsewhere
        raise HMSDataError(
            path, f"member {member!r}: checkpoints outside the weights folder: {_few(outside)}"
        )
    twice = _duplicates([os.path.normpath(f) for f in files])
    if twice:
        raise HMSDataError(
            path, f"member {member!r} lists {_few(twice)} more than once (each fold file once)"
        )
    foreign = [f for f in files if Path(f).suffix != suffix]
    if foreign:  # each kind of folder holds one kind of file, run by one backend
        raise HMSDataError(
            path, f"member {member!r}: files {_few(foreign)} in a {kind} folder (its files end "
            f"in {suffix})",
        )  # fmt: skip
    try:
        missing = [f for f in files if not (folder / f).is_file()]
    except (OSError, ValueError) as exc:  # a name too long for the file system, ...
        raise HMSDataError(
            path, f"member {member!r}: checkpoints are not paths here ({str(exc)[:200]})"
        ) from None
    if missing:
        raise HMSDataError(folder, f"member {member!r}: checkpoints not found: {_few(missing)}")
    return files


def check_inputs(path: Path, member: str, inputs: Any) -> list[str]:
    """A graph's inputs as a manifest lists them: some of ``INPUTS``, each once."""
    if (
        not isinstance(inputs, list)
        or not inputs
        or not all(isinstance(i, str) for i in inputs)
        or not set(inputs) <= set(INPUTS)
        or len(set(inputs)) != len(inputs)
    ):
        raise HMSDataError(
            path, f"member {member!r}: inputs must list the graph's inputs among "
            f"{list(INPUTS)}, got {str(inputs)[:200]}",
        )  # fmt: skip
    return list(inputs)


def read_ensemble(weights_dir: str | Path) -> EnsembleSpec:
    """Read and check ``weights_dir/ensemble.json``; every checkpoint it names must exist.

    A file of another structure (a member that is not an object, a weight that is not a number,
    checkpoints that are not a list of relative paths, ...), beyond the ``LIMITS``, or listing a
    file twice raises ``HMSDataError`` naming the file and the field."""
    weights_dir = Path(weights_dir)
    path = weights_dir / ENSEMBLE_FILE
    if not weights_dir.is_dir():
        raise HMSDataError(weights_dir, "weights folder not found")
    if not path.is_file():
        raise HMSDataError(
            weights_dir,
            f"no {ENSEMBLE_FILE} in this weights folder (write one with python -m hms.ensemble)",
        )
    raw = read_json_bounded(path, MAX_MANIFEST_BYTES, f"hms {ENSEMBLE_FILE}")
    if not isinstance(raw, Mapping) or raw.get("format") != FORMAT:
        raise HMSDataError(path, f"not an hms ensemble file of format {FORMAT}")
    name = raw.get("name", weights_dir.name)
    if not isinstance(name, str):
        raise HMSDataError(path, f"name must be a string, got {str(name)[:80]!r}")
    members = object_field(raw, "members", path, "members")
    weights, space, bias = check_blend(raw, members, path)
    cv = object_field(raw, "cv", path, "cv")
    backend = raw.get("backend", "torch")
    if not isinstance(backend, str) or backend not in BACKENDS:
        raise HMSDataError(
            path, f"backend must be one of {sorted(BACKENDS)}, got {str(backend)[:80]!r}"
        )
    suffix, lists_inputs = BACKENDS[backend].suffix, BACKENDS[backend].lists_inputs
    inputs: dict[str, list[str]] = {}
    hms_version = raw.get("hms_version")
    if hms_version is not None and (not isinstance(hms_version, str) or not hms_version):
        raise HMSDataError(
            path, f"hms_version must be a version string, got {str(hms_version)[:80]!r}"
        )
    checkpoints: dict[str, list[str]] = {}
    data: dict[str, dict[str, Any]] = {}
    for member_name, member in members.items():
        if not isinstance(member, Mapping):
            raise HMSDataError(
                path, f"member {member_name!r} must be an object with checkpoints and data, got "
                f"{type(member).__name__}",
            )  # fmt: skip
        files = check_member_files(
            path, weights_dir, member_name, member.get("checkpoints"), suffix, backend
        )
        if lists_inputs:  # a graph cannot be asked what it reads: the manifest says
            inputs[member_name] = check_inputs(path, member_name, member.get("inputs"))
        member_data = object_field(member, "data", path, f"member {member_name!r}: data")
        for block in ("recording", "window"):
            object_field(member_data, block, path, f"member {member_name!r}: data.{block}")
        checkpoints[member_name] = files
        data[member_name] = member_data
    listed = [f for files in checkpoints.values() for f in files]
    if len(listed) > MAX_FILES:
        raise HMSDataError(
            path, f"{len(listed)} files, more than the {MAX_FILES} a weights folder may hold"
        )
    twice = _duplicates([os.path.normpath(f) for f in listed])
    if not twice:  # two names of one file (a link) are one file listed twice
        twice = _duplicates([str((weights_dir / f).resolve()) for f in listed])
    if twice:
        raise HMSDataError(
            path, f"files listed more than once (by two members, or as two names of one "
            f"file): {_few(twice)}",
        )  # fmt: skip
    built_from = raw.get("built_from")
    if built_from is not None:
        sums = built_from.get("checkpoints") if isinstance(built_from, Mapping) else None
        if not isinstance(sums, Mapping) or not all(
            isinstance(sums.get(f), Mapping)
            and isinstance(sums[f].get("sha256"), str)
            and _SHA256.fullmatch(sums[f]["sha256"])
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
        bias=bias,
        cv=cv,
        built_from=None if built_from is None else dict(built_from),
        backend=backend,
        inputs=inputs,
        hms_version=hms_version,
    )
