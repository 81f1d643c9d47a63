"""An ensemble as ONNX graphs: the work of ``python -m hms.export format=onnx``.

Every fold checkpoint of a PyTorch weights folder (``hms.ensemble``) becomes one ONNX graph that
maps the member's inputs to its six class probabilities, exported with ``torch.onnx.export``
(the dynamo exporter, a recent opset, a dynamic batch) from the very modules training uses: the
EEG spectrograms (one strided DFT convolution, ``hms.transforms.spectrogram``), the Kaggle
spectrogram image, the normalisation (dataset statistics included), the network, the softmax and
the left/right-flip TTA (``hms.models.module.probabilities``) are all inside the graph. The
feature baseline goes the same way: its qEEG features (DFT matrices, ``hms.models.features``)
and its trees (gathers over the node tables) are one graph, so running it needs neither torch nor
LightGBM. The output folder is a weights folder in its own right (``hms.blend``)::

    out_dir/
        ensemble.json          "backend": "onnx"; the blend, each member's data settings and
                               graph inputs, the graphs' SHA-256 and the source checkpoints'
        <member>/fold<k>.onnx  inputs eeg (batch, channels, 10000) / spec (batch, 300, 400)
                               float32 -> probabilities (batch, 6)

``hms.predict`` and ``hms.annotate`` run it with onnxruntime through ``hms.inference`` (the ONNX
backend, ``hms.backends.onnx``) without torch. Each graph is checked against its checkpoint when
it is written: onnxruntime's probabilities on test batches of two sizes must equal PyTorch's
within ``atol``, or the export is refused.
"""

from __future__ import annotations

import contextlib
import io
import json
import tempfile
import time
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

import hms
from hms.backends.onnx import OUTPUT, check_graph
from hms.blend import ENSEMBLE_FILE, EnsembleSpec, read_ensemble
from hms.data.io import atomic_dir, atomic_path, check_output_dir, file_digest, output_lock
from hms.errors import HMSDataError, check_int
from hms.inference import open_checkpoints
from hms.models.base import HMSNet
from hms.models.module import probabilities

OPSET = 18
PARITY_BATCHES = (4, 3)  # the batch traced, and another: the batch dimension must stay free


class GraphModel(nn.Module):
    """A trained network as the graph runs it: its inputs, in ``net.inputs`` order -> its
    probabilities (softmax, averaged with the left/right mirror when ``tta_flip``)."""

    def __init__(self, net: HMSNet, tta_flip: bool) -> None:
        super().__init__()
        self.net, self.tta_flip = net.eval(), bool(tta_flip)
        self.names = tuple(net.inputs)

    def forward(self, *inputs: Tensor) -> Tensor:
        batch = dict(zip(self.names, inputs, strict=True))
        return probabilities(self.net, batch, self.tta_flip, self.net.montage)


def export_graph(model: GraphModel, path: Path, opset: int = OPSET) -> None:
    """One graph: a dynamic batch, weights inside the file, exported quietly."""
    example = model.net.example_batch(PARITY_BATCHES[0])
    args = tuple(example[k] for k in model.names)
    batch = torch.export.Dim("batch", min=1)
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")  # the exporter's advice on its own internals
        torch.onnx.export(
            model, args, str(path), input_names=list(model.names), output_names=[OUTPUT],
            dynamic_shapes={"inputs": tuple({0: batch} for _ in model.names)},
            dynamo=True, opset_version=opset, optimize=True, external_data=False,
            verbose=False,
        )  # fmt: skip


class EncodeModel(nn.Module):
    """``net.encode`` alone, as a graph: the continuous front of a network whose body is not
    (``HMSNet.continuous``), exported aside for the split parity check."""

    def __init__(self, net: HMSNet) -> None:
        super().__init__()
        self.net = net.eval()
        self.names = tuple(net.inputs)

    def forward(self, *inputs: Tensor) -> Tensor:
        return self.net.encode(dict(zip(self.names, inputs, strict=True)))


@dataclass(frozen=True)
class Parity:
    """How far an exported graph is from its checkpoint, on random inputs of two batch sizes.

    ``probabilities``: the largest difference of the graph's probabilities from PyTorch's. For a
    network of a discontinuous body the comparison is split: ``encoded`` is the largest
    difference of ``encode``'s output, exported alone, from PyTorch's (relative to 1 + its size),
    and ``probabilities`` compares the whole graph with PyTorch's body run on onnxruntime's
    encoded values, so that a split taken the other way by a rounding error is not counted;
    ``end_to_end`` is the difference without the split (reported, not checked)."""

    probabilities: float
    encoded: float | None = None
    end_to_end: float | None = None

    def within(self, atol: float) -> bool:
        return self.probabilities <= atol and (self.encoded is None or self.encoded <= atol)

    def __str__(self) -> str:
        if self.encoded is None:
            return f"max difference {self.probabilities:.1e}"
        return (
            f"max difference {self.probabilities:.1e} on the same encoded inputs, encoded "
            f"{self.encoded:.1e}, end to end {self.end_to_end:.1e}"
        )


def _session(path: Path) -> Any:
    import onnxruntime as ort

    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def graph_difference(model: GraphModel, path: Path) -> Parity:
    """The exported graph at ``path`` against ``model`` (see ``Parity``)."""
    session = _session(path)
    encoder = None
    with contextlib.ExitStack() as scratch:
        if not model.net.continuous:
            folder = Path(scratch.enter_context(tempfile.TemporaryDirectory(prefix="hms-enc-")))
            export_graph(EncodeModel(model.net), folder / "encode.onnx")
            encoder = _session(folder / "encode.onnx")
        worst, encoded, end_to_end = 0.0, 0.0, 0.0
        for seed, size in enumerate(PARITY_BATCHES):
            example = model.net.example_batch(size, seed=seed + 1)
            feed = {k: example[k].numpy() for k in model.names}
            got = session.run([OUTPUT], feed)[0]
            with torch.no_grad():
                expected = model(*(example[k] for k in model.names)).numpy()
            if got.shape != expected.shape:
                return Parity(float("inf"))
            if encoder is None:
                worst = max(worst, float(np.abs(got - expected).max()))
                continue
            end_to_end = max(end_to_end, float(np.abs(got - expected).max()))

            def body_on_ort(batch: Mapping[str, Tensor]) -> Tensor:
                nonlocal encoded
                inputs = {k: batch[k].numpy() for k in model.names}
                ours = torch.from_numpy(encoder.run(None, inputs)[0])
                theirs = model.net.encode(batch)
                if ours.shape != theirs.shape:
                    encoded = float("inf")
                    return theirs
                gap = ((ours - theirs).abs() / (1 + theirs.abs())).max()
                encoded = max(encoded, float(gap))
                return model.net.body(ours)

            with torch.no_grad():
                same = probabilities(body_on_ort, example, model.tta_flip, model.net.montage)
            worst = max(worst, float(np.abs(got - same.numpy()).max()))
    if encoder is None:
        return Parity(worst)
    return Parity(worst, encoded, end_to_end)


def folder_readme(spec: EnsembleSpec, source: Path) -> str:
    """What a user outside hms needs to run the folder: the graphs' inputs, the preprocessing
    to reproduce, the blend."""
    lines = [
        f"# {spec.name}: an hms ensemble as ONNX graphs",
        "",
        f"Exported by hms {hms.__version__} (`python -m hms.export format=onnx`) from "
        f"`{source}`. `hms.predict` and `hms.annotate` run this folder with onnxruntime, without "
        "torch; docs/onnx.md of hms describes it.",
        "",
        "Each `<member>/fold<k>.onnx` maps float32 inputs to `probabilities` (batch, 6: seizure, "
        "LPD, GPD, LRDA, GRDA, other). `eeg` (batch, channels, 10000): a 50-s window at 200 Hz, "
        "band-passed and in the montage of the member's `data` settings in ensemble.json, "
        "clipped to +-clip_uv µV; `spec` (batch, 300, 400): the Kaggle spectrogram rows of the "
        "10-min window (missing values 0). The spectrograms, normalisation, flip TTA and softmax "
        "are inside the graphs.",
        "",
        f"Blend: the mean of each member's folds, then the weighted mean in {spec.space!r} space"
        + (" with a per-class log bias" if spec.bias else "")
        + ":",
        "",
        "| member | weight | inputs | folds | montage | filters |",
        "| --- | ---: | --- | ---: | --- | --- |",
    ]
    for m in spec.members:
        data = spec.data.get(m, {})
        window, recording = data.get("window", {}), data.get("recording", {})
        montage = window.get("montage", "double_banana")
        filters = f"{recording.get('low_hz', 0.5)}-{recording.get('high_hz', 20.0)} Hz"
        lines.append(
            f"| {m} | {spec.weights[m]:.4f} | {', '.join(spec.inputs[m])} | "
            f"{len(spec.checkpoints[m])} | {montage} | {filters} |"
        )
    return "\n".join(lines) + "\n"


def _earlier_onnx_export(folder: Path) -> bool:
    try:
        return read_ensemble(folder).backend == "onnx"
    except HMSDataError:
        return False


def export_onnx(
    weights_dir: str | Path,
    out_dir: str | Path,
    opset: int = OPSET,
    atol: float = 1e-4,
    log: Any = print,
) -> Path:
    """Export every checkpoint of ``weights_dir`` to ``out_dir`` (built aside, then renamed).

    ``out_dir`` is checked first: it must be writable, not the weights folder, and, when it
    exists, empty or an earlier ONNX export (which the new folder replaces whole)."""
    check_int("opset", opset, 17)
    weights_dir = Path(weights_dir)
    out_dir = check_output_dir(
        out_dir, weights_dir, "folder of ONNX graphs", ENSEMBLE_FILE, _earlier_onnx_export
    )
    weights = open_checkpoints(weights_dir)
    source = weights.ensemble
    t0 = time.perf_counter()
    checkpoints: dict[str, list[str]] = {}
    inputs: dict[str, list[str]] = {}
    sums: dict[str, dict[str, Any]] = {}
    with output_lock(out_dir, "export folder"), atomic_dir(out_dir) as tmp:
        for name, info in weights.members.items():
            checkpoints[name] = []
            for k, path in enumerate(info.files):
                t = time.perf_counter()
                module = weights.backend.load(path, info, None).module
                model = GraphModel(module.net, module.hparams.tta_flip)
                rel = f"{name}/{path.stem}.onnx"
                (tmp / name).mkdir(exist_ok=True)
                export_graph(model, tmp / rel, opset)
                check_graph(tmp / rel, tmp, list(model.names), info.window)
                diff = graph_difference(model, tmp / rel)
                if not diff.within(atol):
                    raise HMSDataError(path, f"the exported graph is not the checkpoint: {diff} "
                                       f"(more than {atol:g})")  # fmt: skip
                checkpoints[name].append(rel)
                inputs[name] = list(model.names)
                sums[rel] = {**file_digest(tmp / rel), "source": str(path.relative_to(weights_dir))}
                log(
                    f"[export] {name} fold {k + 1}/{len(info.files)} -> {rel} "
                    f"({time.perf_counter() - t:.0f} s, {diff})"
                )
        built_from = {
            "checkpoints": sums,
            "exported_from": {
                "weights_dir": str(weights_dir.resolve()),
                "checkpoints": {
                    str(p.relative_to(weights_dir)): file_digest(p)["sha256"]
                    for info in weights.members.values()
                    for p in info.files
                },
                "opset": opset,
                "torch": torch.__version__,
                "atol": atol,
            },
        }
        spec = EnsembleSpec(
            name=source.name, weights=source.weights, checkpoints=checkpoints, data=source.data,
            space=source.space, bias=source.bias, cv=source.cv, built_from=built_from,
            backend="onnx", inputs=inputs, hms_version=hms.__version__,
        )  # fmt: skip
        with atomic_path(tmp / ENSEMBLE_FILE) as manifest:
            manifest.write_text(json.dumps(spec.to_json(), indent=2))
        (tmp / "README.md").write_text(folder_readme(spec, weights_dir))
    n = sum(len(v) for v in checkpoints.values())
    log(f"exported {n} ONNX graphs of {len(checkpoints)} members to {out_dir} "
        f"({time.perf_counter() - t0:.0f} s)")  # fmt: skip
    return out_dir
