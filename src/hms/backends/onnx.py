"""The ONNX backend of ``hms.inference``: weights folders of ONNX graphs, run by onnxruntime.

No torch: an ONNX weights folder (``python -m hms.export format=onnx``) holds ``ensemble.json``
(``"backend": "onnx"``) and ``<member>/fold<k>.onnx``, each graph mapping the member's inputs
(``eeg`` (batch, channels of its montage, 10000), ``spec`` (batch, 300, 400), float32) to
``probabilities`` (batch, 6): the spectrograms, normalisation, test-time flip and softmax are
inside the graph.

A folder from a stranger is input: before a session runs anything, each graph is checked
(``check_graph``) for its size, that it parses without reading external data, that any
external-data file it names lies inside the folder, that every operator comes from the standard
ONNX domains (a custom-op library is never loaded), that its inputs and output are those the
manifest and the member's montage say, and that its weights (initializers) are bounded (nodes,
tensors, elements: ``MAX_NODES``, ``MAX_INITIALIZER_ELEMENTS``), of the size their shapes say
and, for floats, finite. Sessions run on the CPU, or with the CUDA provider when it
is present and asked for (``device=auto`` or ``cuda``).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from hms.constants import N_CLASSES, SPEC_WINDOW_ROWS, WINDOW_SAMPLES
from hms.data.montage import get_montage
from hms.data.preprocess import WindowSettings
from hms.errors import HMSDataError

if TYPE_CHECKING:
    from hms.backends.base import MemberInfo

SUFFIX = ".onnx"
OUTPUT = "probabilities"
MAX_GRAPH_BYTES = 2 * 1024**3  # protobuf's limit for one file
MAX_NODES = 100_000  # hms's largest graph (multispec_b1 with flip TTA): about 3,000 nodes
MAX_INITIALIZER_ELEMENTS = 2**28  # all the weights of one graph (hms's: under 10 million)
# Operator domains onnxruntime implements itself; anything else would need a custom-op library.
STANDARD_DOMAINS = frozenset({"", "ai.onnx", "ai.onnx.ml", "com.microsoft"})
PRECISIONS = ("auto", "32", "32-true")


def input_shapes(window: WindowSettings) -> dict[str, tuple[int | None, ...]]:
    """Each input a member may read and its shape (None: the batch)."""
    return {
        "eeg": (None, get_montage(window.montage).n_channels, WINDOW_SAMPLES),
        "spec": (None, SPEC_WINDOW_ROWS, 400),
    }


def _dims(value_info) -> tuple[int | None, ...]:
    """A graph input's or output's shape: fixed sizes, None for symbolic ones."""
    dims = value_info.type.tensor_type.shape.dim
    return tuple(d.dim_value if d.HasField("dim_value") else None for d in dims)


def _check_initializers(model, path: Path, folder: Path) -> None:
    """Every initializer (a weight) and constant of a size its shape says, bounded in all; the
    initializers finite when they are floats (a constant may be an infinity on purpose: a mask);
    external data read from inside the folder only (checked before)."""
    import onnx
    from onnx import numpy_helper

    total = 0
    floats = {onnx.TensorProto.FLOAT, onnx.TensorProto.DOUBLE, onnx.TensorProto.FLOAT16,
              onnx.TensorProto.BFLOAT16}  # fmt: skip
    weights = list(model.graph.initializer)
    tensors = weights + [
        a.t for n in model.graph.node for a in n.attribute if a.type == onnx.AttributeProto.TENSOR
    ]
    for tensor in tensors:
        if any(d < 0 for d in tensor.dims):
            raise HMSDataError(path, f"weight {tensor.name!r} has a negative dimension")
        total += int(np.prod(tensor.dims, dtype=np.float64))
        if total > MAX_INITIALIZER_ELEMENTS:
            raise HMSDataError(
                path, f"weights of more than {MAX_INITIALIZER_ELEMENTS:,} elements in all"
            )
    for i, tensor in enumerate(tensors):
        try:
            array = numpy_helper.to_array(tensor, base_dir=str(path.parent))
        except Exception as exc:  # data of another size than the shape, an unknown type, ...
            raise HMSDataError(
                path, f"weight {tensor.name!r} cannot be read ({type(exc).__name__}: "
                f"{str(exc)[:200]})",
            ) from None  # fmt: skip
        if tensor.data_type not in floats or i >= len(weights):
            continue
        values = array if array.dtype.kind == "f" else array.astype(np.float32)  # bfloat16
        if not np.isfinite(values).all():
            raise HMSDataError(path, f"weight {tensor.name!r} holds NaN or infinite values")


def check_graph(path: Path, folder: Path, inputs: list[str], window: WindowSettings) -> None:
    """Refuse a graph that could read outside the folder, needs a custom operator, or does not
    map the member's inputs to (batch, 6) probabilities: ``HMSDataError`` naming the file."""
    import onnx

    size = path.stat().st_size
    if size > MAX_GRAPH_BYTES:
        raise HMSDataError(path, f"{size / 2**30:.1f} GiB: larger than an ONNX file can be")
    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as exc:  # protobuf raises several types for a file that is not a graph
        raise HMSDataError(path, f"not an ONNX model ({type(exc).__name__}: {exc})") from None
    root = folder.resolve()
    external: set[Path] = set()
    for tensor in model.graph.initializer:
        if tensor.data_location != onnx.TensorProto.EXTERNAL:
            continue
        location = {e.key: e.value for e in tensor.external_data}.get("location", "")
        target = (path.parent / location).resolve()
        if not location or Path(location).is_absolute() or not target.is_relative_to(root):
            raise HMSDataError(
                path, f"external data {location!r} of {tensor.name!r} lies outside the folder"
            )
        external.add(target)
    n_nodes = len(model.graph.node) + sum(len(f.node) for f in model.functions)
    if n_nodes > MAX_NODES:
        raise HMSDataError(path, f"{n_nodes:,} nodes: more than any hms graph ({MAX_NODES:,})")
    local = {f.domain for f in model.functions}
    domains = {n.domain for n in model.graph.node} | {
        n.domain for f in model.functions for n in f.node
    }
    custom = sorted(domains - STANDARD_DOMAINS - local)
    if custom:
        raise HMSDataError(path, f"operators of non-standard domains {custom} (custom ops)")
    expected = input_shapes(window)
    got = {i.name: i for i in model.graph.input}
    if sorted(got) != sorted(inputs) or not set(inputs) <= set(expected):
        raise HMSDataError(
            path, f"graph inputs {sorted(got)}, but the manifest lists {sorted(inputs)}"
        )
    for name in inputs:
        shape, want = _dims(got[name]), expected[name]
        dtype = got[name].type.tensor_type.elem_type
        if dtype != onnx.TensorProto.FLOAT or len(shape) != 3 or shape[1:] != want[1:]:
            raise HMSDataError(
                path,
                f"input {name!r} is {onnx.TensorProto.DataType.Name(dtype)} {shape}, expected "
                f"FLOAT (batch, {want[1]}, {want[2]}) for montage {window.montage!r}",
            )
    outputs = {o.name: _dims(o) for o in model.graph.output}
    if list(outputs) != [OUTPUT] or len(outputs[OUTPUT]) != 2 or outputs[OUTPUT][1] != N_CLASSES:
        raise HMSDataError(
            path, f"graph outputs {outputs}, expected {OUTPUT!r} (batch, {N_CLASSES})"
        )
    _check_initializers(model, path, folder)
    return external


NOTES = frozenset({"README.md", "MODEL_CARD.md"})  # what else an ONNX folder may hold


def check_folder(folder: Path, listed: set[Path]) -> None:
    """An ONNX weights folder holds ``ensemble.json``, the files it names (graphs and their
    external data) and notes (README.md, MODEL_CARD.md): anything else is refused, so that no
    stray file rides along with a folder passed from hand to hand."""
    allowed = {p.resolve() for p in listed} | {(folder / n).resolve() for n in NOTES}
    allowed.add((folder / "ensemble.json").resolve())
    for path in sorted(folder.rglob("*")):
        if path.is_dir():
            continue
        if path.is_symlink() or path.resolve() not in allowed:
            raise HMSDataError(
                path, "unexpected file in an ONNX weights folder (it holds ensemble.json, the "
                "graphs it lists and README.md or MODEL_CARD.md; links are not followed)",
            )  # fmt: skip


class OnnxFold:
    """One fold's graph in an onnxruntime session: a batch -> (B, 6) float64 probabilities."""

    network = None  # the graph holds no torch network to draw

    def __init__(self, session, inputs: list[str]) -> None:
        self.session, self.inputs = session, tuple(inputs)

    def __call__(self, batch: Mapping[str, np.ndarray]) -> np.ndarray:
        feed = {k: np.ascontiguousarray(batch[k], dtype=np.float32) for k in self.inputs}
        out = self.session.run([OUTPUT], feed)[0].astype(np.float64)
        return out / out.sum(axis=1, keepdims=True)


class OnnxBackend:
    """Runs ONNX graphs with onnxruntime: the CPU, or the CUDA provider where present."""

    name = "onnx"
    suffix = SUFFIX
    file_kind, builder = "graph", "hms.export"

    def __init__(self, device: str = "auto", precision: str | int | None = "auto") -> None:
        try:
            import onnxruntime as ort
        except ImportError:
            raise HMSDataError(
                None, "an ONNX weights folder needs onnxruntime: pip install onnxruntime"
            ) from None
        if precision is not None and str(precision) not in PRECISIONS:
            raise HMSDataError(
                None, f"the ONNX backend runs float32 graphs; precision={precision!r} is for "
                "PyTorch weights folders (give auto or 32)",
            )  # fmt: skip
        self.precision = "32"
        available = ort.get_available_providers()
        cuda = "CUDAExecutionProvider" in available
        device = str(device)
        if device == "auto":
            device = "cuda" if cuda else "cpu"
        if device == "cpu":
            self.providers: list = ["CPUExecutionProvider"]
        elif device == "cuda" or device.startswith("cuda:"):
            if not cuda:
                raise HMSDataError(
                    None, f"device {device!r} requested, but onnxruntime has no CUDA provider "
                    f"here (providers: {available})",
                )  # fmt: skip
            index = int(device.partition(":")[2] or 0)
            cuda_provider = ("CUDAExecutionProvider", {"device_id": index})
            self.providers = [cuda_provider, "CPUExecutionProvider"]
        else:
            raise HMSDataError(
                None, f"unknown device {device!r}; give auto, cpu, cuda or cuda:<index>"
            )
        self.device = device
        self._ort = ort
        self._listed: set[Path] = set()

    def check(self, path: Path, member: MemberInfo) -> None:
        self._listed |= {path, *check_graph(path, member.folder, member.inputs, member.window)}

    def check_folder(self, folder: Path) -> None:
        """After every file's check: nothing else in the folder."""
        check_folder(folder, self._listed)

    def load(self, path: Path, member: MemberInfo, tta_flip: bool | None) -> OnnxFold:
        if tta_flip is not None:
            raise HMSDataError(
                None, "tta_flip cannot be changed for an ONNX folder: the flip was exported in "
                "the graphs as trained (export again from the checkpoints to change it)",
            )  # fmt: skip
        options = self._ort.SessionOptions()
        options.graph_optimization_level = self._ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        # Each fold is a session with its own thread pool, and an ensemble holds many: threads
        # that spin-wait after a run take the cores from the session running next.
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        try:
            session = self._ort.InferenceSession(str(path), options, providers=self.providers)
        except Exception as exc:  # onnxruntime raises its own types for a graph it cannot run
            raise HMSDataError(path, f"onnxruntime cannot run this graph ({exc})") from None
        return OnnxFold(session, member.inputs)

    def release(self) -> None:
        """Sessions free their memory when dropped."""
