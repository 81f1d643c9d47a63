"""One bounded check of every weights folder before any work (issue 25, item 1): a checkpoint's
tensors against the network its hyperparameters build (shape, dtype, finite, no key missing or
extra), its size and hyperparameters bounded, the feature baseline's tree tables, the manifest's
bounds (size, members, files, files listed twice, member names), TorchScript's export.json, the
Kaggle kit's record; and every command that loads weights ends such a folder in one line, exit
status 2, nothing written."""

from __future__ import annotations

import ast
import json
import math
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch

from hms import blend
from hms.backends import pytorch as torch_backend
from hms.backends.pytorch import check_checkpoint
from hms.blend import ENSEMBLE_FILE, read_ensemble
from hms.errors import HMSDataError
from hms.kaggle_kit import (
    FILES,
    KIT_FILE,
    check_out_dir,
    kit_record_problems,
    notebook,
    read_kit_record,
)
from hms.submission import predict
from hms.torchscript import EXPORT_FILE, read_export

from .conftest import (
    WEIGHTS,
    copy_kaggle_test,
    member_module,
    sine_eeg,
    write_edf,
    write_member_checkpoint,
)
from .test_cli_errors import assert_one_line, run_main
from .test_predict import weights_variant


def rewrite(path: Path, edit: Callable[[dict], None]) -> Path:
    """Replace the checkpoint at ``path`` (a link into the shared fixture) by an edited copy."""
    ckpt = torch.load(path, map_location="cpu", weights_only=True)
    edit(ckpt)
    path.unlink()
    torch.save(ckpt, path)
    return path


def _set(key: str, value: Callable[[torch.Tensor], torch.Tensor]) -> Callable[[dict], None]:
    def edit(ckpt: dict) -> None:
        ckpt["state_dict"][key] = value(ckpt["state_dict"][key])

    return edit


def _nan(t: torch.Tensor) -> torch.Tensor:
    t = t.clone()
    t.view(-1)[0] = float("nan")
    return t


def _inf(t: torch.Tensor) -> torch.Tensor:
    t = t.clone()
    t.view(-1)[-1] = float("inf")
    return t


def _hparam(key: str, value) -> Callable[[dict], None]:
    def edit(ckpt: dict) -> None:
        ckpt["hyper_parameters"]["net"][key] = value

    return edit


def _drop(key: str) -> Callable[[dict], None]:
    return lambda ckpt: ckpt["state_dict"].pop(key)


def _add(key: str, value) -> Callable[[dict], None]:
    return lambda ckpt: ckpt["state_dict"].__setitem__(key, value)


W = "net.blocks.0.conv1.weight"
HOSTILE = {
    "wrong_shape": (_set(W, lambda t: torch.zeros(t.shape[0] + 1, *t.shape[1:])),
                    rf"tensor '{W}' has shape \(9, 8, 3\), but the network built .* \(8, 8, 3\)"),
    "wrong_dtype": (_set(W, lambda t: t.double()), rf"tensor '{W}' is torch.float64, but the "
                    "network has torch.float32"),
    "nan_weight": (_set(W, _nan), rf"tensor '{W}' holds 1 NaN or infinite value\(s\)"),
    "infinite_buffer": (_set("net.stem_bn.running_var", _inf),
                        r"tensor 'net.stem_bn.running_var' holds 1 NaN or infinite"),
    "missing_tensor": (_drop(W), rf"missing \['{W}'\], unexpected \[\]"),
    "unexpected_tensor": (_add("net.extra", torch.zeros(2)),
                          r"missing \[\], unexpected \['net.extra'\]"),
    "not_a_tensor": (_add("net.extra", 3), r"not named tensors: \['net.extra'\]"),
    "hparams_not_plain": (_hparam("stem_channels", torch.zeros(1)), "hold a Tensor, not plain"),
    "huge_network": (_hparam("block_channels", [4096] * 5),
                     "its hyperparameters build a network larger than the checkpoint holds"),
    "unknown_hparam": (_hparam("bogus", 1), r"cannot rebuild the model .*bogus"),
}  # fmt: skip


@pytest.mark.parametrize("case", list(HOSTILE))
def test_a_hostile_checkpoint_is_refused_before_any_work(case, weights, tiny, tmp_path):
    """Each is refused by ``hms.predict`` before the test cache is built, naming the file and
    the tensor; nothing is written."""
    root, _ = tiny
    edit, message = HOSTILE[case]
    variant = weights_variant(weights, tmp_path / "w", lambda spec: None)
    rewrite(variant / "resnet1d_gru" / "fold0.ckpt", edit)
    out, cache = tmp_path / "out" / "submission.csv", tmp_path / "cache"
    t0 = time.perf_counter()
    with pytest.raises(HMSDataError, match=r"resnet1d_gru/fold0\.ckpt: .*" + message):
        predict(root, variant, out, device="cpu", cache_dir=cache, progress=False)
    assert time.perf_counter() - t0 < 60
    assert not out.exists() and not (tmp_path / "out").exists() and not cache.exists()


def test_a_checkpoint_larger_than_the_limit_is_refused_unread(weights, tmp_path, monkeypatch):
    monkeypatch.setattr(torch_backend, "MAX_CHECKPOINT_BYTES", 1000)
    monkeypatch.setattr(torch_backend, "_torch_load", lambda path: pytest.fail("read"))
    with pytest.raises(HMSDataError, match=r"fold0\.ckpt: 0\.0 GiB: larger than any hms check"):
        check_checkpoint(weights / "resnet1d_gru" / "fold0.ckpt", "resnet1d_gru")


def test_the_real_checkpoints_pass_and_networks_are_built_once_per_member(weights, monkeypatch):
    built: dict = {}
    calls = []
    original = torch_backend.expected_state
    monkeypatch.setattr(
        torch_backend, "expected_state", lambda *a: calls.append(a[1]) or original(*a)
    )
    for member in WEIGHTS:
        for path in sorted((weights / member).glob("*.ckpt")):
            assert check_checkpoint(path, member, built=built)["name"] == member
    assert len(calls) == 2  # resnet1d_gru's two folds share one build


# --------------------------------------------------------------------------- the trees


def _tree_checkpoint(tmp_path: Path, edit: Callable[[dict], None] | None = None) -> Path:
    path = write_member_checkpoint("features_gbm", tmp_path / "features_gbm.ckpt")
    return rewrite(path, edit) if edit else path


def _table(name: str, value: Callable[[torch.Tensor], torch.Tensor]) -> Callable[[dict], None]:
    return _set(f"net.trees.{name}", value)


TREES = {
    "a depth that would never end": (_table("depth", lambda t: torch.tensor(10**12)),
                                     r"depth 1000000000000 for trees of 3 nodes"),
    "a child outside the table": (_table("left", lambda t: t + 7),
                                  r"left indices in \[\d+, \d+\], outside \[0, 3\)"),
    "a feature the network has not": (_table("feature", lambda t: t + 10**6),
                                      r"feature indices in .* outside \[0, \d+\)"),
    "a class that is not one": (_table("tree_class", lambda t: t - 1),
                                r"tree_class indices in \[-1, 4\], outside \[0, 6\)"),
    "no trees": (lambda ck: [ck["state_dict"].__setitem__(k, v[:0])
                             for k, v in list(ck["state_dict"].items())
                             if k.startswith("net.trees.") and k != "net.trees.depth"],
                 r"no trees"),
    "tables of different shapes": (_table("value", lambda t: t[:, :2]),
                                   "tables of different shapes"),
    "tables of another rank": (_table("value", lambda t: t.reshape(-1)),
                               r"'net.trees.value' has shape \(18,\), but the network"),
}  # fmt: skip


@pytest.mark.parametrize("case", list(TREES))
def test_the_feature_baselines_tree_tables_must_index_inside_themselves(case, tmp_path):
    """The feature baseline's tables are sized by the checkpoint: any size is allowed, but a
    depth beyond its nodes (rounds of traversal without end) or an index outside its table
    (an error in the middle of a prediction) is refused."""
    good = _tree_checkpoint(tmp_path)
    assert check_checkpoint(good, "features_gbm")["name"] == "features_gbm"
    edit, message = TREES[case]
    (tmp_path / "bad").mkdir()
    bad = _tree_checkpoint(tmp_path / "bad", edit)
    with pytest.raises(HMSDataError, match=r"features_gbm\.ckpt: .*" + message):
        check_checkpoint(bad, "features_gbm")


def test_a_checkpoint_of_more_trees_than_the_built_network_passes(tmp_path):
    """Tables of another size than the built network's empty ones: the checkpoint sizes them."""
    module = member_module("features_gbm")
    tree = {"feature": np.array([0, 1, 0, 0, 0]), "threshold": np.array([0.5, 1.0, 0, 0, 0]),
            "left": np.array([1, 3, 2, 3, 4]), "right": np.array([2, 4, 2, 3, 4]),
            "value": np.array([0.0, 0, 0.2, -0.1, 0.1]), "depth": 2}  # fmt: skip
    module.net.trees.set_trees([tree] * 12, [i % 6 for i in range(12)])
    from hms.training import save_module_checkpoint

    save_module_checkpoint(module, tmp_path / "gbm.ckpt")
    check_checkpoint(tmp_path / "gbm.ckpt", "features_gbm")


# --------------------------------------------------------------------------- ensemble.json

MANIFEST = {
    "format": 1, "name": "t", "space": "prob", "weights": {"a": 1.0}, "bias": None,
    "members": {"a": {"checkpoints": ["a/fold0.ckpt"], "data": {}}},
}  # fmt: skip


def _folder(tmp_path: Path, manifest: dict | bytes, files: int = 1) -> Path:
    folder = tmp_path / "w"
    (folder / "a").mkdir(parents=True, exist_ok=True)
    for k in range(files):
        (folder / "a" / f"fold{k}.ckpt").write_bytes(b"x")
    data = manifest if isinstance(manifest, bytes) else json.dumps(manifest).encode()
    (folder / ENSEMBLE_FILE).write_bytes(data)
    return folder


def _members(n: int) -> dict:
    names = [f"m{i}" for i in range(n)]
    return {**MANIFEST, "weights": dict.fromkeys(names, 1.0),
            "members": {m: {"checkpoints": ["a/fold0.ckpt"]} for m in names}}  # fmt: skip


BOUNDS = [
    (_members(33), r"33 members, more than the 32"),
    ({**MANIFEST, "members": {"a": {"checkpoints": [f"a/fold{k}.ckpt" for k in range(65)]}}},
     r"member 'a' lists 65 files, more than the 64"),
    ({**MANIFEST, "members": {"a": {"checkpoints": ["a/fold0.ckpt", "a/./fold0.ckpt"]}}},
     r"member 'a' lists \['a/fold0.ckpt'\] more than once"),
    (_members(2), r"files listed more than once \(by two members"),
    ({**MANIFEST, "weights": {"../x": 1.0}, "members": {"../x": {"checkpoints": ["a/fold0.ckpt"]}}},
     r"member names must be plain names .* got \['../x'\]"),
    ({**MANIFEST, "weights": {".a": 1.0}, "members": {".a": {"checkpoints": ["a/fold0.ckpt"]}}},
     "member names must be plain names"),
    ({**_members(2), "weights": {"m0": 1e308, "m1": 1e308},
      "members": {"m0": {"checkpoints": ["a/fold0.ckpt"]},
                  "m1": {"checkpoints": ["a/fold1.ckpt"]}}},
     "weights must be non-negative with a positive, finite sum"),
    ({**MANIFEST, "backend": ["onnx"]}, r"backend must be one of \['onnx', 'torch'\]"),
    ({**MANIFEST, "members": {"a": {"checkpoints": ["a/fold0.ckpt"], "inputs": [["eeg"]]}},
      "backend": "onnx"}, r"files \['a/fold0.ckpt'\] in a onnx folder"),
    ({**MANIFEST, "built_from": {"checkpoints": {"a/fold0.ckpt": {"sha256": "abc"}}}},
     "built_from must give the sha256 of every checkpoint"),
]  # fmt: skip


@pytest.mark.parametrize(("manifest", "message"), BOUNDS)
def test_the_manifest_is_bounded(manifest, message, tmp_path):
    folder = _folder(tmp_path, manifest, files=65)
    with pytest.raises(HMSDataError, match=r"ensemble\.json: .*" + message):
        read_ensemble(folder)


def test_two_names_of_one_file_are_one_file_listed_twice(tmp_path):
    folder = _folder(tmp_path, {**MANIFEST, "members": {"a": {"checkpoints": [
        "a/fold0.ckpt", "a/fold1.ckpt"]}}})  # fmt: skip
    (folder / "a" / "fold1.ckpt").symlink_to(folder / "a" / "fold0.ckpt")
    with pytest.raises(HMSDataError, match="as two names of one file"):
        read_ensemble(folder)


def test_a_manifest_is_refused_by_its_size_before_it_is_parsed(tmp_path, monkeypatch):
    folder = _folder(tmp_path, b" " * (blend.MAX_MANIFEST_BYTES + 1))
    monkeypatch.setattr(json, "loads", lambda *a, **k: pytest.fail("parsed"))
    with pytest.raises(HMSDataError, match=r"4,194,305 bytes: larger than any hms ensemble"):
        read_ensemble(folder)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"[" * 200_000 + b"]" * 200_000, "nested too deeply"),
        (b"\xff\xfe\x00garbage", "not a readable JSON file"),
        (json.dumps(MANIFEST).encode()[:-7], "not a readable JSON file"),
    ],
)
def test_unreadable_manifests_are_one_line(data, message, tmp_path):
    with pytest.raises(HMSDataError, match=message):
        read_ensemble(_folder(tmp_path, data))


@pytest.mark.parametrize("encoding", ["utf-8-sig", "utf-16", "utf-32"])
def test_manifests_in_any_json_encoding_are_read(encoding, tmp_path):
    spec = read_ensemble(_folder(tmp_path, json.dumps(MANIFEST).encode(encoding)))
    assert spec.checkpoints == {"a": ["a/fold0.ckpt"]}


def test_member_settings_of_bad_values_are_one_line(weights, tiny, tmp_path):
    """Settings are checked when made: a filter beyond Nyquist, an unknown storage type, a
    clip of NaN are named before any cache is built (they would fail inside the build)."""
    root, _ = tiny
    cases = [
        ({"recording": {"high_hz": 150.0}}, r"high_hz must be null or a frequency in \[0, 100\)"),
        ({"recording": {"dtype": "int8"}}, r"dtype must be one of \['float16', 'float32'\]"),
        ({"recording": {"filter_order": 4.5}}, "filter_order must be an integer"),
        ({"recording": {"low_hz": 30.0, "high_hz": 20.0}}, "must be below high_hz"),
        ({"window": {"clip_uv": math.nan}}, "clip_uv must be null or a positive number"),
        ({"window": {"scale": 0}}, "scale must be a non-zero number"),
    ]
    for k, (data, message) in enumerate(cases):

        def edit(spec: dict, data=data) -> None:
            for block, values in data.items():
                spec["members"]["effnet_b0"]["data"][block].update(values)

        variant = weights_variant(weights, tmp_path / f"w{k}", edit)
        with pytest.raises(HMSDataError, match=r"member 'effnet_b0': \w+Settings: .*" + message):
            predict(root, variant, None, device="cpu", cache_dir=tmp_path / "c", progress=False)
        assert not (tmp_path / "c").exists()


# --------------------------------------------------------------------------- TorchScript exports


def _export(tmp_path: Path, **changes) -> Path:
    folder = tmp_path / "export"
    (folder / "a").mkdir(parents=True, exist_ok=True)
    (folder / "a" / "fold0.pt").write_bytes(b"x")
    manifest = {"format": 1, "name": "t", "space": "prob", "weights": {"a": 1.0}, "bias": None,
                "members": {"a": {"files": ["a/fold0.pt"], "inputs": ["eeg"], "data": {}}},
                **changes}  # fmt: skip
    (folder / EXPORT_FILE).write_text(json.dumps(manifest))
    return folder


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"format": 2}, "not an hms TorchScript export of format 1"),
        ({"members": {"a": {"files": ["../../etc/passwd.pt"], "inputs": ["eeg"]}}},
         "outside the weights folder"),
        ({"members": {"a": {"files": ["a/fold0.pt", "a/fold0.pt"], "inputs": ["eeg"]}}},
         "more than once"),
        ({"members": {"a": {"files": ["a/fold1.pt"], "inputs": ["eeg"]}}}, "not found"),
        ({"members": {"a": {"files": ["a/fold0.pt"], "inputs": ["x"]}}}, "inputs must be among"),
        ({"weights": {"a": math.inf}}, "weights must be numbers"),
        ({"members": {"a/b": {"files": ["a/fold0.pt"]}}, "weights": {"a/b": 1}}, "plain names"),
    ],
)  # fmt: skip
def test_a_torchscript_export_json_is_checked_before_any_file_is_loaded(changes, message, tmp_path):
    folder = _export(tmp_path, **changes)
    with pytest.raises(HMSDataError, match=message):
        read_export(folder)
    assert read_export(_export(tmp_path / "good"))["weights"] == {"a": 1.0}


# --------------------------------------------------------------------------- the Kaggle kit

RECORD = {
    "format": 1, "hms_version": "0.1.0", "requires_python": ">=3.11",
    "target": {"description": "Python 3.11 on linux_x86_64", "python_version": "3.11"},
    "wheels": [{"file": "hms-0.1.0-py3-none-any.whl", "sha256": "0" * 64}],
    "weights": {"dir": "weights"},
}  # fmt: skip


def notebook_kit_problems() -> Callable:
    """The notebook's own check of a kit record (``kit_problems`` in ``kaggle_files/submit.py``),
    taken from its source: the notebook cannot import hms before it has installed it."""
    tree = ast.parse((FILES / "submit.py").read_text())
    keep = [n for n in tree.body if (isinstance(n, ast.FunctionDef) and n.name == "kit_problems")
            or (isinstance(n, ast.Assign) and n.targets[0].id == "WHEEL_NAME")]  # type: ignore[attr-defined]  # fmt: skip
    namespace: dict = {"re": __import__("re")}
    exec(compile(ast.Module(body=keep, type_ignores=[]), "submit.py", "exec"), namespace)
    return namespace["kit_problems"]


KIT_CASES = [
    ({}, None),
    ({"wheels": [{"file": "../../evil.whl", "sha256": "0" * 64}]}, "is not a wheel's name"),
    ({"wheels": [{"file": "a-1-py3-none-any.whl", "sha256": "x"}]}, "has no SHA-256"),
    ({"wheels": []}, "wheels is not a list"),
    ({"weights": {"dir": "../elsewhere"}}, "weights.dir is not a folder name"),
    ({"target": "linux"}, "target lacks"),
    ({"hms_version": 1}, "hms_version is not a string"),
    ({"format": 2}, "format is not 1"),
]  # fmt: skip


@pytest.mark.parametrize(("changes", "message"), KIT_CASES)
def test_the_kit_record_is_checked_alike_by_hms_and_by_the_notebook(changes, message, tmp_path):
    record = {**RECORD, **changes}
    problems = kit_record_problems(record)
    assert problems == notebook_kit_problems()(record)
    if message is None:
        assert problems == []
        return
    assert any(message in p for p in problems), problems
    kit = tmp_path / "kit"
    kit.mkdir()
    (kit / KIT_FILE).write_text(json.dumps(record))
    with pytest.raises(HMSDataError, match=message):
        read_kit_record(kit)
    with pytest.raises(HMSDataError, match="out_dir holds other files"):  # not replaced
        (tmp_path / "weights").mkdir(exist_ok=True)
        check_out_dir(kit, tmp_path / "weights")


@pytest.mark.parametrize(
    ("record", "message"),
    [
        (b"{not json", "is not a readable kit record"),
        (json.dumps({**RECORD, "wheels": [{"file": "../x.whl", "sha256": "0" * 64}]}).encode(),
         "is not a record of an hms kit this notebook can run"),
        (b" " * (1024**2 + 1), "is larger than any kit record"),
    ],
)  # fmt: skip
def test_the_notebook_stops_on_a_damaged_kit_record_before_installing(record, message, tmp_path):
    """The notebook's first cells, on a kit whose ``hms_kit.json`` is damaged: one message, no
    traceback, nothing installed (it stops before pip is run)."""
    inp = tmp_path / "input"
    kit = inp / "hms-kit"
    kit.mkdir(parents=True)
    (kit / KIT_FILE).write_bytes(record)
    (kit / "submit.ipynb").write_text(json.dumps(notebook("hms-kit")))
    data = inp / "hms-harmful-brain-activity-classification"
    data.mkdir()
    (data / "test.csv").write_text("spectrogram_id,eeg_id,patient_id\n1,2,3\n")
    from hms.kaggle_kit import notebook_script

    script = tmp_path / "notebook.py"
    script.write_text(notebook_script(kit))
    env = {"HMS_KAGGLE_INPUT": str(inp), "HMS_KAGGLE_WORKING": str(tmp_path / "work"),
           "PATH": "/usr/bin:/bin"}  # fmt: skip
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, env=env,
                          timeout=120)  # fmt: skip
    assert done.returncode == 1, done.stderr
    assert "Traceback" not in done.stderr and message in done.stderr, done.stderr
    assert done.stderr.strip().startswith("hms kit: ")


# --------------------------------------------------------------------------- every command


@pytest.fixture(scope="module")
def hostile(weights, tmp_path_factory) -> Path:
    """A weights folder whose resnet1d_gru fold 1 holds a NaN weight (SHA-256s unrecorded)."""
    folder = weights_variant(weights, tmp_path_factory.mktemp("hostile") / "w", lambda s: None)
    rewrite(folder / "resnet1d_gru" / "fold1.ckpt", _set(W, _nan))
    return folder


def test_every_command_that_loads_weights_ends_in_one_line(
    hostile, weights, tiny, kaggle_dir, tmp_path, monkeypatch, capsys
):
    """predict, annotate, export (TorchScript, ONNX, the Kaggle kit) and plot: exit status 2,
    one line naming the file and the tensor, nothing written."""
    root, _ = tiny
    test = copy_kaggle_test(kaggle_dir, tmp_path / "test")
    edf = write_edf(tmp_path / "rec.edf", sine_eeg(60 * 200))
    work = tmp_path / "work"
    work.mkdir()
    commands = [
        ("hms.predict", [f"test_path={test}", f"weights_dir={hostile}", "out=sub.csv"]),
        ("hms.annotate", [f"recording={edf}", f"weights_dir={hostile}", "out_dir=ann"]),
        ("hms.export", [f"weights_dir={hostile}", "out_dir=ts"]),
        ("hms.export", ["format=onnx", f"weights_dir={hostile}", "out_dir=onnx"]),
        ("hms.export", ["format=kaggle", f"weights_dir={hostile}", "out_dir=kit"]),
        ("hms.plot", ["sample", f"data_dir={root}", f"weights_dir={hostile}", "out=s.png"]),
    ]
    for module, argv in commands:
        code, err = run_main(module, argv, monkeypatch, capsys, work)
        assert code == 2, (module, err)
        assert_one_line(err, f"{hostile}/resnet1d_gru/fold1.ckpt: tensor '{W}' holds 1 NaN")
        assert list(work.iterdir()) == [], (module, list(work.iterdir()))


def test_the_ensemble_command_checks_each_runs_checkpoint_before_it_builds(
    tmp_path, monkeypatch, capsys
):
    """A run folder whose checkpoint holds a NaN under a completion record that matches it (a
    stranger's run folder): ``hms.ensemble`` refuses it before a score is computed."""
    from hms.runs import write_record

    from .test_ensemble import write_runs

    runs = tmp_path / "runs"
    write_runs(runs, "effnet_b0", [0, 1])
    write_runs(runs, "resnet1d_gru", [0, 1])
    run = runs / "resnet1d_gru" / "fold1"
    rewrite(run / "best.ckpt", _set("net.stem.0.weight", _nan))
    from omegaconf import OmegaConf

    write_record(run, OmegaConf.load(run / "config.yaml"), {"train_inputs": "test"})
    argv = [f"runs_dir={runs}", f"weights_dir={tmp_path / 'weights'}", "ensemble=duo",
            "~ensemble.members.features_gbm"]  # fmt: skip
    code, err = run_main("hms.ensemble", argv, monkeypatch, capsys, tmp_path)
    assert code == 2, err
    assert_one_line(err, f"{run / 'best.ckpt'}: tensor 'net.stem.0.weight' holds 1 NaN")
    assert not (tmp_path / "weights").exists()


def test_the_kit_copies_weights_through_the_same_check(weights, tmp_path):
    """The kit's own copy of the weights is opened as hms.predict opens it (``open_weights``)."""
    from hms.kaggle_kit import copy_weights

    spec = read_ensemble(weights)
    dest = tmp_path / "weights"
    assert copy_weights(weights, spec, dest) == []
    shutil.rmtree(dest)
    bad = weights_variant(weights, tmp_path / "bad", lambda s: None)
    rewrite(bad / "effnet_b0" / "fold0.ckpt", _drop("net.backbone.classifier.bias"))
    with pytest.raises(HMSDataError, match=r"missing \['net.backbone.classifier.bias'\]"):
        copy_weights(bad, read_ensemble(bad), dest)
