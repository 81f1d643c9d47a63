"""The seam between the inference path and what runs a weights folder's fold files.

A backend is a kind of weights folder (``ensemble.json``'s ``backend``): the suffix of its fold
files, whether its manifest lists each member's inputs, and the class that checks and loads
them (``Backend``), imported only when a folder of that kind is opened (torch is heavy, and a
machine with the light install has none). ``hms.blend`` reads the registry to check a manifest,
``hms.inference`` to open a folder, the exporters to write one: a new backend (TensorRT,
OpenVINO, a remote server) is one module with its ``Backend`` class and one
``register_backend(BackendKind(...))`` call, here for hms's own or in the user's code.

This module imports no backend and nothing above it: ``hms.inference`` and every backend import
it, never each other.
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from hms.data.preprocess import RecordingSettings, WindowSettings
from hms.errors import HMSDataError

PRECISIONS = ("auto", "32", "32-true", "16", "16-mixed", "bf16", "bf16-mixed")
_DEVICE = re.compile(r"auto|cpu|mps|(cuda|xpu)(:\d+)?")


def check_device(device: str, precision: str | int | None) -> None:
    """The device and precision named sensibly, checked before any file is read (whether the
    device is there is the backend's check)."""
    if not isinstance(device, str) or not _DEVICE.fullmatch(device):
        raise HMSDataError(None, f"unknown device {device!r}; give auto, cpu, cuda or cuda:<index>")
    if precision is not None and (isinstance(precision, bool) or str(precision) not in PRECISIONS):
        raise HMSDataError(
            None, f"precision must be one of {list(PRECISIONS)} or null, got {precision!r}"
        )


@dataclass
class MemberInfo:
    """A member of a weights folder: its fold files, preprocessing and inputs."""

    name: str
    folder: Path
    files: list[Path]
    recording: RecordingSettings
    window: WindowSettings
    inputs: list[str]


class Fold(Protocol):
    """A loaded fold file: a batch of numpy arrays -> (B, 6) float64 probabilities."""

    inputs: tuple[str, ...]
    network: Any  # the torch network (hms.models.base.HMSNet), None for an ONNX graph

    def __call__(self, batch: Mapping[str, np.ndarray]) -> np.ndarray: ...


class Backend(Protocol):
    """What runs a folder's fold files, on one device: ``Backend(device, precision)``."""

    name: str
    suffix: str
    file_kind: str  # what a fold file is called in messages: checkpoint, graph
    builder: str  # the command that writes such folders
    device: str
    precision: str

    def check(self, path: Path, member: MemberInfo) -> None: ...

    def check_folder(self, folder: Path) -> None: ...

    def load(self, path: Path, member: MemberInfo, tta_flip: bool | None) -> Fold: ...

    def release(self) -> None: ...


@dataclass(frozen=True)
class BackendKind:
    """One kind of weights folder: ``name`` (``ensemble.json``'s ``backend``), ``suffix`` of its
    fold files, ``opener`` (``"module:Class"`` of its ``Backend``, or the class itself),
    ``lists_inputs`` (its manifest names each member's inputs: a graph cannot be asked), and for
    a machine where its module cannot be imported: ``title`` and ``needs`` (what the folder is,
    what it needs) and ``unavailable`` (what to do)."""

    name: str
    suffix: str
    opener: str | type
    lists_inputs: bool = False
    title: str = ""
    needs: str = "its runtime"
    unavailable: str = "install what it needs"

    def backend_class(self) -> type:
        if not isinstance(self.opener, str):
            return self.opener
        module, _, name = self.opener.partition(":")
        try:
            return getattr(importlib.import_module(module), name)
        except ImportError as exc:
            raise HMSDataError(
                None,
                f"this is a {self.title or self.name} weights folder, and {self.needs} cannot be "
                f"imported here ({exc}): {self.unavailable}",
            ) from None


BACKENDS: dict[str, BackendKind] = {}


def register_backend(kind: BackendKind) -> BackendKind:
    """Add a backend to the registry (its name and its files' suffix must be new)."""
    if kind.name in BACKENDS:
        raise ValueError(f"a backend named {kind.name!r} is already registered")
    if any(k.suffix == kind.suffix for k in BACKENDS.values()):
        raise ValueError(f"another backend's fold files end in {kind.suffix!r}")
    BACKENDS[kind.name] = kind
    return kind


def backend_kind(name: str) -> BackendKind:
    """The registered backend of that name; ``HMSDataError`` naming the known ones."""
    try:
        return BACKENDS[name]
    except (KeyError, TypeError):
        raise HMSDataError(
            None, f"unknown backend {str(name)[:80]!r}; known: {sorted(BACKENDS)}"
        ) from None


def open_backend(kind: str, device: str = "auto", precision: str | int | None = "auto") -> Backend:
    """The backend of a folder kind, on ``device``."""
    return backend_kind(kind).backend_class()(device, precision)


register_backend(
    BackendKind(
        "torch", ".ckpt", "hms.backends.pytorch:TorchBackend", title="PyTorch", needs="torch",
        unavailable="install hms with torch, or run its ONNX export (python -m hms.export "
        "format=onnx, on a machine with torch)",
    )
)  # fmt: skip
register_backend(
    BackendKind(
        "onnx", ".onnx", "hms.backends.onnx:OnnxBackend", lists_inputs=True, title="ONNX",
        needs="onnxruntime", unavailable="install onnxruntime (docs/onnx.md)",
    )
)  # fmt: skip
