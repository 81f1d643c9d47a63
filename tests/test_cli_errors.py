"""Every command refuses bad arguments and inputs before its work, in one line: ``error: ...`` on
stderr, exit status 2 (1 for a full disk), no traceback and nothing written.

The commands run in this process (``sys.argv`` set, the module's ``main()`` called), a few as
real processes to prove the whole ``python -m`` ends the same way.
"""

from __future__ import annotations

import errno
import importlib
import json
import subprocess
import sys
from pathlib import Path

import pytest
from hydra.core.global_hydra import GlobalHydra
from hydra.errors import InstantiationException

from hms.blend import ENSEMBLE_FILE, read_ensemble
from hms.cli import _reported
from hms.errors import HMSDataError, HMSRunError
from hms.synth import generate

WEIGHTS_JSON = {
    "format": 1,
    "name": "fake",
    "space": "prob",
    "weights": {"a": 1.0},
    "bias": None,
    "members": {"a": {"checkpoints": ["a/fold0.ckpt"], "data": {}}},
}


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> dict[str, Path]:
    """Read-only inputs: a labels-only built-in dataset, a weights folder whose checkpoints are
    placeholders (enough for every check made before a checkpoint is loaded), a foreign folder
    and a plain file."""
    root = tmp_path_factory.mktemp("inputs")
    labels = root / "labels"
    generate(labels, preset="tiny", seed=0, labels_only=True, progress=False)
    weights = root / "weights"
    (weights / "a").mkdir(parents=True)
    (weights / "a" / "fold0.ckpt").write_bytes(b"not a checkpoint")
    (weights / ENSEMBLE_FILE).write_text(json.dumps(WEIGHTS_JSON))
    foreign = root / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    (root / "file.txt").write_text("a file")
    return {"labels": labels, "weights": weights, "foreign": foreign, "file": root / "file.txt"}


def _fill(arg: str, names: dict[str, str]) -> str:
    """``arg`` with its ``{name}`` placeholders replaced (other braces are Hydra's)."""
    for key, value in names.items():
        arg = arg.replace(f"{{{key}}}", value)
    return arg


def _snapshot(folder: Path) -> set[Path]:
    return {p.relative_to(folder) for p in folder.rglob("*")}


def run_main(module: str, argv: list[str], monkeypatch, capsys, cwd: Path) -> tuple[int, str]:
    """``python -m <module> <argv>`` in this process: ``(exit status, stderr)``."""
    mod = importlib.import_module(module)
    main = getattr(mod, "main", None) or importlib.import_module(f"{module}.__main__").main
    GlobalHydra.instance().clear()
    monkeypatch.setattr(sys, "argv", [module, *argv])
    monkeypatch.chdir(cwd)
    capsys.readouterr()
    try:
        with pytest.raises(SystemExit) as exit_info:
            main()
    finally:
        GlobalHydra.instance().clear()
    return exit_info.value.code, capsys.readouterr().err


def assert_one_line(err: str, expected: str) -> str:
    assert "Traceback" not in err, err
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(lines) == 1, err
    assert expected in lines[0], err
    assert lines[0] == err.strip().splitlines()[-1], err  # nothing after it
    return lines[0]


# (module, argv, expected substring). {out} is a path under the test's folder that must not
# be created; {labels}, {weights}, {foreign}, {file} are the inputs above.
CASES = [
    # hms.synth
    ("hms.synth", ["out_dir={out}", "preset=nope"], "unknown preset='nope'; choose one of"),
    ("hms.synth", ["out_dir={labels}", "preset=demo"], "holds another synthetic dataset"),
    ("hms.synth", ["out_dir={foreign}", "preset=tiny"], "not empty and was not written by"),
    ("hms.synth", ["out_dir={file}", "preset=tiny"], "this is a file, not a folder"),
    ("hms.synth", ["out_dir={file}/sub", "preset=tiny"], "file.txt is not a folder"),
    ("hms.synth", ["paths.root_dir={file}", "preset=tiny"], "file.txt is not a folder"),
    ("hms.synth", ["out_dir={out}", "seed=-1"], "seed must be an integer >= 0, got -1"),
    ("hms.synth", ["out_dir={out}", "workers=0"], "workers must be an integer >= 1, got 0"),
    ("hms.synth", ["out_dir={out}", "preset=tiny", "presets={tiny: {train_eegs: 10}}"],
     "presets.tiny: train_eegs=10 is fewer than train_sessions=20"),
    ("hms.synth", ["out_dir={out}", "preset=tiny", "presets={tiny: {train_sessions: 3}}"],
     "train_sessions=3 is fewer than train_patients=9"),
    ("hms.synth", ["out_dir={out}", "preset=tiny", "presets={tiny: {test_eegs: 0}}"],
     "test_eegs must be an integer >= 1, got 0"),
    ("hms.synth", ["out_dir={out}", "presets={nope: {train_eegs: 10}}"],
     "presets: unknown presets ['nope']"),
    ("hms.synth", ["out_dir={out}", "presets={demo: {train_eg: 10}}"],
     "presets.demo: unknown fields ['train_eg']"),
    ("hms.synth", ["out_dir={out}", "presets={demo: 5}"], "presets.demo must be a mapping"),
    ("hms.synth", ["out_dir={out}", "presets=[1]"], "presets must be a mapping"),
    ("hms.synth", ["out_dir={out}", "presets={tiny: {session_extra_s: [5, 1]}}"],
     "session_extra_s must be [low, high]"),
    ("hms.synth", ["out_dir={out}", "presets={tiny: {nan_file_rate: 2}}"],
     "nan_file_rate must be a share in [0, 1], got 2"),
    ("hms.synth", ["out_dir={out}", "presets.demo.train_eegs=800"],
     "use +presets.demo.train_eegs=800"),
    ("hms.synth", ["out_dir={out}", "nokey=1"], "Could not override 'nokey'"),
    # (a value Hydra cannot parse is quoted for it, hms.cli.quote_values: a malformed key stays)
    ("hms.synth", ["out_dir]={out}"], "LexerNoViableAltException: out_dir]="),
    # hms.annotate: every argument is checked before the recording or the weights are read
    ("hms.annotate", ["step_s=-5"], "missing argument recording=... (see conf/annotate.yaml)"),
    ("hms.annotate", ["recording=/nope.edf", "weights_dir=/nope", "out_dir={out}", "step_s=-5"],
     "step_s must be at least 0.005 s, got -5"),
    ("hms.annotate", ["recording=/nope.edf", "weights_dir=/nope", "out_dir={out}", "step_s=0"],
     "step_s must be at least"),
    ("hms.annotate",
     ["recording=/nope.edf", "weights_dir=/nope", "out_dir={out}", "batch_size=0"],
     "batch_size must be an integer >= 1, got 0"),
    ("hms.annotate",
     ["recording=/nope.edf", "weights_dir=/nope", "out_dir={out}", "chunk_windows=-1"],
     "chunk_windows must be an integer >= 1, got -1"),
    ("hms.annotate", ["recording=/nope.edf", "weights_dir=/nope", "out_dir={out}", "missing=x"],
     "missing must be one of ['error', 'interpolate'], got 'x'"),
    ("hms.annotate",
     ["recording=/nope.edf", "weights_dir=/nope", "out_dir={out}", "device=bogus"],
     "unknown device 'bogus'"),
    ("hms.annotate", ["recording=/nope.edf", "weights_dir=/nope", "out_dir={out}", "precision=8"],
     "precision must be one of"),
    ("hms.annotate",
     ["recording=/nope.edf", "weights_dir=/nope", "out_dir={out}", "unit_scale=-1"],
     "unit_scale must be a positive number"),
    ("hms.annotate", ["recording=/nope.edf", "weights_dir=/nope", "out_dir={file}"],
     "this is a file, not a folder"),
    ("hms.annotate", ["recording=/nope.edf", "weights_dir=/nope", "out_dir={out}"],
     "/nope: weights folder not found"),
    ("hms.annotate", ["recording={out}.edf", "weights_dir={weights}", "out_dir={out}"],
     "recording not found"),
    # hms.ensemble: the arguments and weights_dir before any run is read
    ("hms.ensemble", ["runs_dir={out}", "weights_dir={out}/w", "space=bogus"],
     "space must be one of ['prob', 'log'], got 'bogus'"),
    ("hms.ensemble", ["runs_dir={out}", "weights_dir={out}/w", "use=bogus"],
     "use must be one of ['configured', 'fitted'], got 'bogus'"),
    ("hms.ensemble", ["runs_dir={out}", "weights_dir={out}/w", "folds=[]"],
     "folds must be null (every finished fold) or a non-empty list"),
    ("hms.ensemble", ["runs_dir={out}", "weights_dir={out}/w", "folds=3"], "folds must be null"),
    ("hms.ensemble", ["runs_dir={out}", "weights_dir={out}/w", "folds=[0,0]"],
     "folds lists a fold twice"),
    ("hms.ensemble", ["runs_dir={out}", "weights_dir={out}/w", "folds=[a]"],
     "folds must list fold numbers"),
    ("hms.ensemble", ["runs_dir={out}", "weights_dir={file}/w"], "file.txt is not a folder"),
    ("hms.ensemble", ["runs_dir={out}", "weights_dir={out}/w"], "member 'effnet_b0'"),
    ("hms.ensemble", ["runs_dir={out}", "ensemble=bogus"], "Could not find 'ensemble/bogus'"),
    # hms.predict
    ("hms.predict", [], "missing argument weights_dir=... (see conf/predict.yaml)"),
    ("hms.predict", ["test_path={labels}"], "missing argument weights_dir=..."),
    ("hms.predict", ["test_path={labels}", "weights_dir={out}", "out={out}.csv"],
     "weights folder not found"),
    ("hms.predict", ["test_path={labels}", "weights_dir={foreign}", "out={out}.csv"],
     f"no {ENSEMBLE_FILE} in this weights folder"),
    ("hms.predict", ["test_path={out}", "weights_dir={weights}", "out={out}.csv"],
     "test folder not found"),
    ("hms.predict", ["test_path={labels}", "weights_dir={weights}", "out={foreign}"],
     "cannot write the submission here: this is a folder, not a file"),
    ("hms.predict", ["test_path={labels}", "weights_dir={weights}", "out={file}/s.csv"],
     "file.txt is not a folder"),
    ("hms.predict",
     ["test_path={labels}", "weights_dir={weights}", "out={out}.csv", "batch_size=0"],
     "batch_size must be an integer >= 1"),
    ("hms.predict",
     ["test_path={labels}", "weights_dir={weights}", "out={out}.csv", "workers=0"],
     "workers must be an integer >= 1"),
    ("hms.predict",
     ["test_path={labels}", "weights_dir={weights}", "out={out}.csv", "device=bogus"],
     "unknown device 'bogus'"),
    # hms.export
    ("hms.export", [], "missing argument weights_dir=... (see conf/export.yaml)"),
    ("hms.export", ["weights_dir={weights}"], "missing argument out_dir=..."),
    ("hms.export", ["weights_dir={out}", "out_dir={out}/e"], "weights folder not found"),
    ("hms.export", ["weights_dir={weights}", "out_dir={foreign}"],
     "out_dir holds other files (no export.json of a TorchScript export)"),
    ("hms.export", ["weights_dir={weights}", "out_dir={weights}"],
     "out_dir is the weights folder or inside it"),
    ("hms.export", ["weights_dir={weights}", "out_dir={file}"], "this is a file, not a folder"),
    ("hms.export", ["weights_dir={weights}", "out_dir={out}", "format=tflite"],
     "format must be one of ['torchscript', 'onnx', 'kaggle'], got 'tflite'"),
    # hms.export format=kaggle: arguments, the output folder, the base file and the weights are
    # checked before any wheel is built or downloaded
    ("hms.export", ["format=kaggle", "weights_dir={weights}", "out_dir={foreign}"],
     "out_dir holds other files (no hms_kit.json of a kit folder)"),
    ("hms.export", ["format=kaggle", "weights_dir={weights}", "out_dir={weights}"],
     "out_dir is the weights folder or inside it"),
    ("hms.export", ["format=kaggle", "weights_dir={weights}", "out_dir={weights}/kit"],
     "out_dir is the weights folder or inside it"),
    ("hms.export", ["format=kaggle", "weights_dir={weights}", "out_dir={file}"],
     "this is a file, not a folder"),
    ("hms.export", ["format=kaggle", "weights_dir={weights}", "out_dir={out}", "kit_name=a b"],
     "kit_name must be a folder name"),
    ("hms.export", ["format=kaggle", "weights_dir={weights}", "out_dir={out}",
                    "python_version=3.10"], "python_version=3.1 is ambiguous"),
    ("hms.export", ["format=kaggle", "weights_dir={weights}", "out_dir={out}",
                    "python_version=2.7"], "python_version must be a version such as '3.12'"),
    ("hms.export", ["format=kaggle", "weights_dir={weights}", "out_dir={out}",
                    "platform=[]"], "platform must be pip platform tags"),
    ("hms.export", ["format=kaggle", "weights_dir={weights}", "out_dir={out}",
                    "platform=Linux-x86_64"], "platform must be pip platform tags"),
    ("hms.export", ["format=kaggle", "weights_dir={weights}", "out_dir={out}", "base={file}"],
     "file.txt: line 1: not a requirement: 'a file'"),
    ("hms.export", ["format=kaggle", "weights_dir={weights}", "out_dir={out}", "base={out}.txt"],
     "base requirements file not found"),
    ("hms.export", ["format=kaggle", "weights_dir={out}/w", "out_dir={out}/k"],
     "weights folder not found"),
    ("hms.export", ["format=kaggle", "weights_dir={weights}", "out_dir={out}"],
     "not a PyTorch Lightning checkpoint"),
    ("hms.export", ["format=kaggle", "weights_dir={foreign}", "out_dir={out}"],
     f"no {ENSEMBLE_FILE} in this weights folder"),
    # hms.plot
    ("hms.plot", ["bogus"], "unknown plot 'bogus'; known: ['sample']"),
    ("hms.plot", ["sample", "data_dir={out}", "out={out}.png"], "data folder not found"),
    ("hms.plot", ["sample", "data_dir={labels}", "weights_dir={out}", "out={out}.png"],
     "weights folder not found"),
    ("hms.plot", ["sample", "data_dir={labels}", "eeg_id=1", "out={out}.png"],
     "eeg_id 1 is in neither train.csv nor test.csv"),
    ("hms.plot", ["sample", "data_dir={labels}", "eeg_id=abc", "out={out}.png"],
     "eeg_id must be an integer >= 0, got 'abc'"),
    ("hms.plot", ["sample", "data_dir={labels}", "out={out}.foo"], "unknown picture format"),
    ("hms.plot", ["sample", "data_dir={labels}", "out={foreign}"], "this is a folder, not a file"),
    ("hms.plot", ["sample", "data_dir={labels}", "out={file}/x.png"], "file.txt is not a folder"),
    # hms.score
    ("hms.score", [], "missing argument solution=... (see conf/score.yaml)"),
    ("hms.score", ["solution={labels}/test_answers.csv", "paths.root_dir={out}"],
     "submission file not found"),
    ("hms.score", ["submission={out}.csv"], "missing argument solution=..."),
    ("hms.score", ["submission={out}.csv", "solution={labels}/test_answers.csv"],
     "submission file not found"),
    ("hms.score", ["submission={labels}/test.csv", "solution={labels}/test_answers.csv"],
     "missing"),
    # hms.prepare
    ("hms.prepare", ["data_dir={out}", "cache_dir={out}/c"], "data folder not found"),
    ("hms.prepare", ["data_dir={labels}", "cache_dir={file}/c"], "file.txt is not a folder"),
    ("hms.prepare", ["data_dir={labels}", "cache_dir={out}/c", "splits=[val]"],
     "splits must be a non-empty list of ['train', 'test']"),
    ("hms.prepare", ["data_dir={labels}", "cache_dir={out}/c", "workers=0"],
     "workers must be an integer >= 1"),
    # hms.synth.compare
    ("hms.synth.compare", [], "give real=DIR and/or synth=DIR"),
    ("hms.synth.compare", ["synth={labels}", "out={file}/c"], "file.txt is not a folder"),
    ("hms.synth.compare", ["synth={labels}", "out={file}"], "this is a file, not a folder"),
    ("hms.synth.compare", ["synth={labels}", "max_units=0"], "max_units must be >= 1"),
    # hms.pipeline: members, folds, choices and every output location before any data or run
    ("hms.pipeline", ["paths.output_dir={out}", "data_dir={out}/d", "members=[nope]"],
     "members=['nope']: choose among the ensemble's"),
    ("hms.pipeline", ["paths.output_dir={out}", "data_dir={out}/d", "folds=[]"],
     "folds must be a non-empty list"),
    ("hms.pipeline", ["paths.output_dir={out}", "data_dir={out}/d", "use=bogus"],
     "use must be one of ['configured', 'fitted']"),
    ("hms.pipeline", ["paths.output_dir={out}", "data_dir={out}/d", "weights_dir={file}/w"],
     "file.txt is not a folder"),
    ("hms.pipeline", ["paths.output_dir={out}", "data_dir={out}/d", "submission={foreign}"],
     "cannot write the submission here: this is a folder"),
    ("hms.pipeline", ["paths.output_dir={out}", "data_dir={file}/d"], "file.txt is not a folder"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("module", "argv", "expected"),
    CASES,
    ids=[f"{m}:{' '.join(a)}"[:80] for m, a, _ in CASES],
)
def test_bad_arguments_end_in_one_line(
    module, argv, expected, inputs, tmp_path, monkeypatch, capsys
):
    work = tmp_path / "work"  # the command's current folder: nothing may appear in it
    work.mkdir()
    names = {"out": str(work / "out"), **{k: str(v) for k, v in inputs.items()}}
    before = {k: _snapshot(v) for k, v in inputs.items() if v.is_dir()}
    code, err = run_main(module, [_fill(a, names) for a in argv], monkeypatch, capsys, work)
    assert code == 2, err
    assert_one_line(err, expected)
    assert _snapshot(work) == set(), _snapshot(work)  # no output, not even a partial one
    assert {k: _snapshot(v) for k, v in inputs.items() if v.is_dir()} == before


def test_train_fold_out_of_range_is_one_line(inputs, tmp_path, monkeypatch, capsys):
    """A constructor instantiated by Hydra (the data module) refuses ``fold``: the wrapping
    ``InstantiationException`` is reported as its cause."""
    argv = [
        "experiment=tiny", "fold=9", f"data.data_dir={inputs['labels']}",
        f"paths.output_dir={tmp_path / 'outputs'}", f"paths.cache_dir={tmp_path / 'cache'}",
    ]  # fmt: skip
    code, err = run_main("hms.train", argv, monkeypatch, capsys, tmp_path)
    assert code == 2, err
    assert_one_line(err, "fold must be in 0..2 (data.folds.n_folds=3), got 9")
    assert not (tmp_path / "cache").exists()


def test_train_logger_without_its_package_is_one_line(inputs, tmp_path, monkeypatch, capsys):
    """``logger=tensorboard`` where neither tensorboard nor tensorboardX is installed (the dev
    set-up installs tensorboard: Lightning is made to see neither): refused before any work."""
    fabric = importlib.import_module("lightning_fabric.loggers.tensorboard")
    monkeypatch.setattr(fabric, "_TENSORBOARD_AVAILABLE", False)
    monkeypatch.setattr(fabric, "_TENSORBOARDX_AVAILABLE", False)
    argv = [
        "experiment=tiny", "logger=tensorboard", f"data.data_dir={inputs['labels']}",
        f"paths.output_dir={tmp_path / 'outputs'}", f"paths.cache_dir={tmp_path / 'cache'}",
    ]  # fmt: skip
    code, err = run_main("hms.train", argv, monkeypatch, capsys, tmp_path)
    assert code == 2, err
    assert_one_line(err, "logger 'tensorboard' needs a package that is not installed")
    assert not (tmp_path / "cache").exists()


def test_train_resume_from_a_file_that_is_no_checkpoint_is_one_line(
    inputs, tmp_path, monkeypatch, capsys
):
    argv = [
        "experiment=tiny", f"ckpt_path={inputs['file']}", f"data.data_dir={inputs['labels']}",
        f"paths.output_dir={tmp_path / 'outputs'}", f"paths.cache_dir={tmp_path / 'cache'}",
    ]  # fmt: skip
    code, err = run_main("hms.train", argv, monkeypatch, capsys, tmp_path)
    assert code == 2, err
    assert_one_line(err, "file.txt: not a checkpoint hms can resume from")
    assert not (tmp_path / "cache").exists()


def test_documented_preset_override_works(tmp_path, monkeypatch, capsys):
    out = tmp_path / "demo"
    argv = [f"out_dir={out}", "preset=demo", "labels_only=true", "progress=false",
            "presets={demo: {train_eegs: 800, test_eegs: 200}}"]  # fmt: skip
    GlobalHydra.instance().clear()
    monkeypatch.setattr(sys, "argv", ["hms.synth", *argv])
    monkeypatch.chdir(tmp_path)
    importlib.import_module("hms.synth.__main__").main()
    GlobalHydra.instance().clear()
    meta = json.loads((out / "synth_meta.json").read_text())
    assert meta["preset"]["train_eegs"] == 800 and meta["preset"]["test_eegs"] == 200
    assert meta["summary"]["counts"]["test_eegs"] == 200


def test_disk_full_is_one_line_exit_1(inputs, tmp_path, monkeypatch, capsys):
    gen = importlib.import_module("hms.synth.generate")

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device", str(tmp_path / "d" / "train.csv"))

    monkeypatch.setattr(gen, "write_csv", full)
    argv = [f"out_dir={tmp_path / 'd'}", "preset=tiny", "labels_only=true"]
    code, err = run_main("hms.synth", argv, monkeypatch, capsys, tmp_path)
    assert code == 1, err
    assert_one_line(err, f"error: disk full: {tmp_path / 'd' / 'train.csv'}")


def test_other_os_errors_keep_their_traceback(tmp_path, monkeypatch, capsys):
    """Only a full disk is turned into a line: another ``OSError`` is a bug to see whole."""
    gen = importlib.import_module("hms.synth.generate")

    def denied(*args, **kwargs):
        raise PermissionError(errno.EACCES, "Permission denied", "x.csv")

    monkeypatch.setattr(gen, "write_csv", denied)
    argv = [f"out_dir={tmp_path / 'd'}", "preset=tiny", "labels_only=true"]
    code, err = run_main("hms.synth", argv, monkeypatch, capsys, tmp_path)
    assert code == 1
    assert "Traceback" in err and "PermissionError" in err


def test_reported_errors():
    data, run = HMSDataError("f.csv", "bad"), HMSRunError("worker killed")
    for cause, expected in ((data, (2, "f.csv: bad")), (run, (1, "worker killed"))):
        outer = InstantiationException("Error in call to target 'x'")
        outer.__cause__ = InstantiationException("inner")
        outer.__cause__.__cause__ = cause
        assert _reported(outer, "train") == expected
    wrapped_bug = InstantiationException("Error in call to target 'x'")
    wrapped_bug.__cause__ = ValueError("a bug")
    assert _reported(wrapped_bug, "train") is None
    assert _reported(OSError(errno.EDQUOT, "Disk quota exceeded"), "x") == (
        1, "disk full: Disk quota exceeded",
    )  # fmt: skip
    assert _reported(OSError(errno.ENOENT, "No such file"), "x") is None


@pytest.mark.parametrize(
    "argv",
    [
        ["out_dir={tmp}/x", "preset=nope"],
        ["out_dir={tmp}/y", "preset=tiny", "presets={tiny: {train_eegs: 10}}"],
    ],
)
def test_whole_process_exits_2_without_traceback(argv, tmp_path):
    out = subprocess.run(
        [sys.executable, "-m", "hms.synth", *(_fill(a, {"tmp": str(tmp_path)}) for a in argv)],
        capture_output=True, text=True, cwd=tmp_path, timeout=120,
    )  # fmt: skip
    assert out.returncode == 2, out.stderr
    assert out.stdout == ""
    assert out.stderr.count("\n") == 1 and out.stderr.startswith("error: "), out.stderr
    assert list(tmp_path.iterdir()) == []


# --------------------------------------------------------------------------- ensemble.json

MALFORMED = [
    ([1, 2], "not an hms ensemble file"),
    (None, "not an hms ensemble file"),
    ("text", "not an hms ensemble file"),
    ({**WEIGHTS_JSON, "format": 2}, "not an hms ensemble file"),
    ({**WEIGHTS_JSON, "members": ["a"]}, "members must be an object, got list"),
    ({**WEIGHTS_JSON, "members": {"a": None}}, "member 'a' must be an object"),
    ({**WEIGHTS_JSON, "members": {"a": ["a/fold0.ckpt"]}}, "member 'a' must be an object"),
    ({**WEIGHTS_JSON, "members": {"a": {"checkpoints": "a/fold0.ckpt"}}},
     "checkpoints must be a list of paths"),
    ({**WEIGHTS_JSON, "members": {"a": {"checkpoints": [1]}}}, "checkpoints must be paths"),
    ({**WEIGHTS_JSON, "members": {"a": {"checkpoints": [None]}}}, "checkpoints must be paths"),
    ({**WEIGHTS_JSON, "members": {"a": {"checkpoints": []}}}, "member 'a' lists no checkpoint"),
    ({**WEIGHTS_JSON, "members": {"a": {"checkpoints": ["/etc/passwd"]}}},
     "checkpoints outside the weights folder"),
    ({**WEIGHTS_JSON, "members": {"a": {"checkpoints": ["a/fold0.ckpt"], "data": [1]}}},
     "member 'a': data must be an object"),
    ({**WEIGHTS_JSON,
      "members": {"a": {"checkpoints": ["a/fold0.ckpt"], "data": {"window": "x"}}}},
     "member 'a': data.window must be an object"),
    ({**WEIGHTS_JSON, "weights": [1.0]}, "weights must be an object, got list"),
    ({**WEIGHTS_JSON, "weights": {"a": "1"}}, "weights must be numbers"),
    ({**WEIGHTS_JSON, "weights": {"a": None}}, "weights must be numbers"),
    ({**WEIGHTS_JSON, "weights": {"a": True}}, "weights must be numbers"),
    ({**WEIGHTS_JSON, "weights": {"a": -1.0}}, "weights must be non-negative"),
    ({**WEIGHTS_JSON, "weights": {"b": 1.0}}, "do not match"),
    ({**WEIGHTS_JSON, "weights": None}, "do not match"),
    ({**WEIGHTS_JSON, "space": ["prob"]}, "space must be one of"),
    ({**WEIGHTS_JSON, "bias": 3}, "bias must be null or a list of 6 numbers"),
    ({**WEIGHTS_JSON, "bias": [0, 0, 0]}, "bias must be null or a list of 6 numbers"),
    ({**WEIGHTS_JSON, "bias": ["a"] * 6}, "bias must be null or a list of 6 numbers"),
    ({**WEIGHTS_JSON, "name": {"x": 1}}, "name must be a string"),
    ({**WEIGHTS_JSON, "cv": [1]}, "cv must be an object"),
    ({**WEIGHTS_JSON, "hms_version": 1}, "hms_version must be a version string"),
    ({**WEIGHTS_JSON, "hms_version": ""}, "hms_version must be a version string"),
]  # fmt: skip


@pytest.mark.parametrize(("content", "expected"), MALFORMED)
def test_read_ensemble_refuses_malformed_files(content, expected, inputs, tmp_path):
    weights = tmp_path / "weights"
    (weights / "a").mkdir(parents=True)
    (weights / "a" / "fold0.ckpt").write_bytes(b"x")
    (weights / ENSEMBLE_FILE).write_text(json.dumps(content))
    with pytest.raises(HMSDataError, match=r"ensemble\.json") as info:
        read_ensemble(weights)
    assert expected in info.value.problem
    assert read_ensemble(inputs["weights"]).checkpoints == {"a": ["a/fold0.ckpt"]}
