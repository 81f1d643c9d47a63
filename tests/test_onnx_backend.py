"""The ONNX backend (hms.backends.onnx) on small graphs built here with onnx.helper: a folder of
them runs through hms.predict on the real Kaggle test sample, and a folder from a stranger is
checked before anything runs (its files, each graph's inputs, outputs, operators and external
data), each problem one line naming the file."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from hms.blend import ENSEMBLE_FILE, EnsembleSpec
from hms.constants import VOTE_COLUMNS
from hms.data.io import file_digest
from hms.errors import HMSDataError
from hms.submission import predict
from tests.conftest import copy_kaggle_test

W = np.random.default_rng(0).normal(size=(16, 6)).astype(np.float32) * 0.05


def linear_graph(
    channels: int = 16, classes: int = 6, input_name: str = "eeg", domain: str = ""
) -> onnx.ModelProto:
    """probabilities = softmax(mean over time of eeg @ W): a graph of the member interface."""
    eeg = helper.make_tensor_value_info(input_name, TensorProto.FLOAT, ["batch", channels, 10000])
    out = helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["batch", classes])
    weight = numpy_helper.from_array(np.resize(W, (channels, classes)), "W")
    axes = numpy_helper.from_array(np.array([2], dtype=np.int64), "axes")
    nodes = [
        helper.make_node("ReduceMean", [input_name, "axes"], ["m"], keepdims=0),
        helper.make_node("MatMul", ["m", "W"], ["logits"], domain=domain),
        helper.make_node("Softmax", ["logits"], ["probabilities"], axis=1),
    ]
    graph = helper.make_graph(nodes, "member", [eeg], [out], [weight, axes])
    opsets = [helper.make_opsetid("", 18)] + ([helper.make_opsetid(domain, 1)] if domain else [])
    return helper.make_model(graph, opset_imports=opsets)


def write_folder(folder: Path, model: onnx.ModelProto | bytes, **member) -> Path:
    """An ONNX weights folder of one member ``lin`` with one graph."""
    (folder / "lin").mkdir(parents=True, exist_ok=True)
    graph = folder / "lin" / "fold0.onnx"
    graph.write_bytes(model if isinstance(model, bytes) else model.SerializeToString())
    spec = EnsembleSpec(
        name="t", weights={"lin": 1.0}, checkpoints={"lin": ["lin/fold0.onnx"]},
        data={"lin": member.get("data", {"recording": {}, "window": {}})}, backend="onnx",
        inputs={"lin": member.get("inputs", ["eeg"])},
        built_from={"checkpoints": {"lin/fold0.onnx": file_digest(graph)}},
    )  # fmt: skip
    (folder / ENSEMBLE_FILE).write_text(json.dumps(spec.to_json()))
    return folder


@pytest.fixture
def test_split(kaggle_dir, tmp_path) -> Path:
    return copy_kaggle_test(kaggle_dir, tmp_path / "test")


def test_a_folder_of_graphs_predicts_the_kaggle_sample(test_split, tmp_path):
    """The ONNX backend through hms.predict: the graph's answer on the real test EEG, through
    the same cache and window code as a PyTorch folder (16 filtered bipolar channels)."""
    from hms.data.cache import HMSCache, build_cache
    from hms.data.dataset import CacheDataset
    from hms.data.preprocess import RecordingSettings

    folder = write_folder(tmp_path / "w", linear_graph())
    sub = predict(test_split, folder, tmp_path / "sub.csv", device="cpu", progress=False)
    cache = HMSCache(build_cache(test_split, tmp_path / "c", "test", RecordingSettings(),
                                 progress=False))  # fmt: skip
    eeg = CacheDataset(cache)[0]["eeg"]
    logits = eeg.mean(axis=1) @ W
    expected = np.exp(logits - logits.max()) / np.exp(logits - logits.max()).sum()
    np.testing.assert_allclose(sub[list(VOTE_COLUMNS)].to_numpy()[0], expected, atol=1e-6)


def hostile(case: str, folder: Path) -> tuple[Path, str]:
    """A folder with one problem, and the message that must name it."""
    if case == "not a graph":
        return write_folder(folder, b"\x00not protobuf at all" * 10), "not an ONNX model"
    if case == "inputs differ from the manifest":
        write_folder(folder, linear_graph(input_name="x"))
        return folder, r"graph inputs \['x'\], but the manifest lists \['eeg'\]"
    if case == "channels of another montage":
        return write_folder(folder, linear_graph(channels=18)), "for montage 'double_banana'"
    if case == "wrong output":
        return write_folder(folder, linear_graph(classes=5)), "expected 'probabilities' \\(batch, 6"
    if case == "custom operator":
        write_folder(folder, linear_graph(domain="com.example.evil"))
        return folder, r"non-standard domains \['com.example.evil'\] \(custom ops\)"
    if case == "external data outside":
        model = linear_graph()
        weight = model.graph.initializer[0]
        weight.data_location = TensorProto.EXTERNAL
        weight.ClearField("raw_data")
        weight.ClearField("float_data")
        entry = weight.external_data.add()
        entry.key, entry.value = "location", "../../etc/passwd"
        write_folder(folder, model)
        return folder, "external data '../../etc/passwd' of 'W' lies outside the folder"
    if case == "stray file":
        write_folder(folder, linear_graph())
        (folder / "lin" / "helper.so").write_bytes(b"\x7fELF")
        return folder, "helper.so: unexpected file in an ONNX weights folder"
    if case == "changed graph":
        write_folder(folder, linear_graph())
        (folder / "lin" / "fold0.onnx").write_bytes(linear_graph(channels=16).SerializeToString()
                                                   + b"\x00")  # fmt: skip
        return folder, "graph changed after hms.export built this folder"
    if case == "checkpoint in an ONNX folder":
        write_folder(folder, linear_graph())
        raw = json.loads((folder / ENSEMBLE_FILE).read_text())
        raw["members"]["lin"]["checkpoints"] = ["lin/fold0.ckpt"]
        shutil.copy(folder / "lin" / "fold0.onnx", folder / "lin" / "fold0.ckpt")
        (folder / ENSEMBLE_FILE).write_text(json.dumps(raw))
        return folder, r"files \['lin/fold0.ckpt'\] in a onnx folder"
    if case == "no inputs listed":
        write_folder(folder, linear_graph(), inputs=[])
        return folder, "inputs must list the graph's inputs"
    raise AssertionError(case)


CASES = [
    "not a graph", "inputs differ from the manifest", "channels of another montage",
    "wrong output", "custom operator", "external data outside", "stray file", "changed graph",
    "checkpoint in an ONNX folder", "no inputs listed",
]  # fmt: skip


@pytest.mark.parametrize("case", CASES)
def test_a_folder_from_a_stranger_is_checked_before_anything_runs(case, test_split, tmp_path):
    folder, message = hostile(case, tmp_path / "w")
    out = tmp_path / "sub.csv"
    with pytest.raises(HMSDataError, match=message):
        predict(test_split, folder, out, device="cpu", progress=False)
    assert not out.exists()


def test_the_commands_end_in_one_line_and_refuse_what_a_graph_cannot_do(test_split, tmp_path):
    folder, _ = hostile("custom operator", tmp_path / "w")
    done = subprocess.run(
        [sys.executable, "-m", "hms.predict", f"test_path={test_split}", f"weights_dir={folder}",
         f"out={tmp_path / 'sub.csv'}"], capture_output=True, text=True,
    )  # fmt: skip
    assert done.returncode == 2 and done.stderr.count("\n") == 1, done.stderr
    assert "(custom ops)" in done.stderr and "fold0.onnx" in done.stderr
    good = write_folder(tmp_path / "good", linear_graph())
    with pytest.raises(HMSDataError, match="tta_flip cannot be changed for an ONNX folder"):
        predict(test_split, good, None, device="cpu", tta_flip=True, progress=False)
    with pytest.raises(HMSDataError, match="the ONNX backend runs float32 graphs"):
        predict(test_split, good, None, device="cpu", precision="bf16-mixed", progress=False)
    with pytest.raises(HMSDataError, match="onnxruntime has no CUDA provider"):
        import onnxruntime

        if "CUDAExecutionProvider" in onnxruntime.get_available_providers():
            pytest.skip("this machine has CUDA")
        predict(test_split, good, None, device="cuda", progress=False)
