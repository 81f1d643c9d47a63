"""The offline Kaggle kit (``python -m hms.export format=kaggle``) and ``paths=kaggle``.

Fast: every command composes with ``paths=kaggle`` (its roots from ``HMS_KAGGLE_INPUT`` and
``HMS_KAGGLE_WORKING``), ``hms.predict paths=kaggle`` reads the competition folder and writes
``submission.csv`` in the working root, the notebook's form, the target's tags, the wheels a kit
needs (and the refusal of requirements the image cannot meet), the builder's refusals.

Slow (the kit is built with the package index, then used without any network): a tiny ensemble
trained through ``hms.pipeline``, its kit, a fresh virtual environment holding exactly
``kaggle_base.txt`` (the distributions it names and what they require, linked from this
environment: no hms, hydra-core or edfio), and the notebook's code cells run there in order with
the network cut against the real Kaggle test files laid out as ``/kaggle/input``; its
``submission.csv`` equals ``hms.submission.predict``'s. Then the notebook's clear stops: a missing
input folder, a kit built for another Python and platform (a real one: Python 3.12 on Windows),
a damaged wheel, an image without a base package, weights of another hms version.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
import tomllib
from importlib import metadata
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from omegaconf import OmegaConf
from packaging.tags import Tag
from packaging.utils import canonicalize_name

import hms
from hms.blend import ENSEMBLE_FILE
from hms.cli import conf_dir
from hms.constants import VOTE_COLUMNS
from hms.errors import HMSDataError
from hms.kaggle_kit import (
    BASE_FILE,
    CARD_FILE,
    COMPETITION,
    FILES,
    KIT_FILE,
    base_environment,
    build_kit,
    installed_closure,
    kit_dependencies,
    notebook,
    read_base,
    resolve_target,
    run_notebook,
)
from hms.submission import predict

from .conftest import REPO, copy_kaggle_test

KAGGLE_EEG = 3911565283
COMMANDS = [
    "prepare", "train", "ensemble", "pipeline", "predict", "annotate", "plot", "export", "score",
    "synth", "compare",
]  # fmt: skip


def _pyproject_requires() -> list[str]:
    return tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]


# --------------------------------------------------------------------------- paths=kaggle


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_composes_with_paths_kaggle(command, tmp_path, monkeypatch):
    """``paths=kaggle``: data from the input root, everything written under the working root."""
    inp, work = tmp_path / "input", tmp_path / "working"
    monkeypatch.setenv("HMS_KAGGLE_INPUT", str(inp))
    monkeypatch.setenv("HMS_KAGGLE_WORKING", str(work))
    GlobalHydra.instance().clear()
    with initialize_config_dir(str(conf_dir()), version_base="1.3"):
        cfg = compose(command, overrides=["paths=kaggle"])
    GlobalHydra.instance().clear()
    paths = OmegaConf.to_container(cfg.paths, resolve=True)
    assert paths == {
        "input_dir": str(inp),
        "root_dir": str(work),
        "data_dir": f"{inp}/{COMPETITION}",
        "cache_dir": f"{work}/cache",
        "output_dir": f"{work}/outputs",
    }
    resolved = OmegaConf.to_container(cfg, resolve=False)  # mandatory (???) values stay as such
    expected = {
        "predict": {"test_path": f"{inp}/{COMPETITION}", "out": f"{work}/submission.csv"},
        "annotate": {"out_dir": f"{work}/outputs/annotate"},
        "plot": {"data_dir": f"{inp}/{COMPETITION}"},
        "score": {"submission": f"{work}/submission.csv"},
        "synth": {"out_dir": f"{work}/data/demo"},
        "prepare": {"data_dir": f"{inp}/{COMPETITION}", "cache_dir": f"{work}/cache"},
        "train": {"run_dir": f"{work}/outputs/runs/demo/effnet_b0/fold0"},
        "ensemble": {"weights_dir": f"{work}/outputs/ensembles/demo/demo"},
        "pipeline": {"data_dir": f"{work}/data/demo", "weights_dir": f"{work}/outputs/ensembles"
                     "/demo/demo"},
    }.get(command, {})  # fmt: skip
    for key, value in expected.items():
        assert OmegaConf.select(cfg, key) == value, (key, resolved.get(key))


def test_predict_with_paths_kaggle_reads_the_competition_folder(
    weights, kaggle_dir, tmp_path, monkeypatch, capsys
):
    """``python -m hms.predict paths=kaggle weights_dir=DIR``: the real test files at
    ``<input>/hms-harmful-brain-activity-classification``, the submission at
    ``<working>/submission.csv``, as ``hms.submission.predict`` computes it."""
    inp, work = tmp_path / "input", tmp_path / "working"
    data = copy_kaggle_test(kaggle_dir, inp / COMPETITION)
    monkeypatch.setenv("HMS_KAGGLE_INPUT", str(inp))
    monkeypatch.setenv("HMS_KAGGLE_WORKING", str(work))
    monkeypatch.setattr(sys, "argv", ["hms.predict", "paths=kaggle", f"weights_dir={weights}"])
    monkeypatch.chdir(tmp_path)
    from hms.predict import main

    GlobalHydra.instance().clear()
    main()
    GlobalHydra.instance().clear()
    written = pd.read_csv(work / "submission.csv")
    assert written["eeg_id"].tolist() == [KAGGLE_EEG]
    assert f"1 rows -> {work / 'submission.csv'}" in capsys.readouterr().out
    expected = predict(data, weights, None, device="cpu", progress=False)
    np.testing.assert_allclose(written[list(VOTE_COLUMNS)], expected[list(VOTE_COLUMNS)], atol=1e-6)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["input", "working"]  # nothing else


# --------------------------------------------------------------------------- the builder's parts


def test_the_target_tags_and_markers():
    here = resolve_target()
    assert here.native and here.python == sys.version_info[:2] and here.pip_options() == []
    assert here.fits("hydra_core-1.3.8-py3-none-any.whl")
    kaggle = resolve_target(3.12, "manylinux_2_35_x86_64")  # as Hydra reads python_version=3.12
    assert not kaggle.native and kaggle.describe() == "Python 3.12 on manylinux_2_35_x86_64"
    assert kaggle.fits("PyYAML-6.0.3-cp312-cp312-manylinux_2_17_x86_64.manylinux2014_x86_64.whl")
    assert kaggle.fits("lightgbm-4.6.0-py3-none-manylinux_2_28_x86_64.whl")
    assert kaggle.fits("hydra_core-1.3.8-py3-none-any.whl")
    assert not kaggle.fits("PyYAML-6.0.3-cp311-cp311-manylinux_2_17_x86_64.whl")
    assert not kaggle.fits("lightgbm-4.6.0-py3-none-win_amd64.whl")
    assert not kaggle.fits("numpy-2.4.6-cp312-cp312-manylinux_2_39_x86_64.whl")  # newer glibc
    options = kaggle.pip_options()
    assert options[:6] == ["--python-version", "3.12", "--implementation", "cp", "--abi", "cp312"]
    assert "manylinux2014_x86_64" in options and "manylinux_2_35_x86_64" in options
    env = kaggle.marker_environment()
    assert (env["python_version"], env["sys_platform"], env["platform_machine"]) == (
        "3.12", "linux", "x86_64",
    )  # fmt: skip
    windows = resolve_target("3.12", "win_amd64").marker_environment()
    assert (windows["sys_platform"], windows["platform_system"]) == ("win32", "Windows")
    assert Tag("cp312", "cp312", "win_amd64") in resolve_target("3.12", "win_amd64").tags
    with pytest.raises(HMSDataError, match="ambiguous"):
        resolve_target(3.1)  # python_version=3.10 as YAML reads it
    assert resolve_target("3.10").python == (3, 10)


def test_the_packaged_base_is_what_the_image_holds_and_names_its_image():
    base = read_base()
    names = base.names
    for need in ("torch", "pytorch-lightning", "omegaconf", "timm", "pandas", "pip"):
        assert need in names
    assert not names & {"hms", "hydra-core", "edfio"}
    assert "Kaggle/docker-python" in base.image and "1ebea3c" in base.image
    assert all(b.image_version for b in base.requirements)  # each checked against the image


def test_a_kit_carries_hms_hydra_and_edfio_and_refuses_what_the_image_cannot_meet():
    base = read_base()
    for target in (resolve_target(), resolve_target("3.12", "manylinux_2_35_x86_64")):
        deps = kit_dependencies(_pyproject_requires(), base, target)
        assert {canonicalize_name(d.name) for d in deps} == {"hydra-core", "edfio"}
        for dep in deps:
            assert dep.version == metadata.version(dep.name) and dep.required_by == "hms"
    # The pins hms had before the kit (torch 2.11 only) cannot install over the image's 2.10.
    old = [r for r in _pyproject_requires() if not r.startswith("torch")]
    old += ["torch>=2.11,<2.12"]
    with pytest.raises(
        HMSDataError,
        match=r"hms requires torch<2.12,>=2.11, but the notebook "
        r"image holds torch 2.10.0\+cpu: the kit would not install there",
    ):
        kit_dependencies(old, base, resolve_target())  # fmt: skip
    with pytest.raises(HMSDataError, match=r"not-a-package-of-hms .* nor installed here"):
        kit_dependencies(["not-a-package-of-hms>=1"], base, resolve_target())


def test_base_files_are_checked(tmp_path):
    bad = tmp_path / "base.txt"
    bad.write_text("torch>=2.11  # image: 2.10.0+cpu\n")
    with pytest.raises(HMSDataError, match=r"does not hold the image's torch 2\.10\.0"):
        read_base(bad)
    bad.write_text("torch  # image: 2.10.0\nTorch\n")
    with pytest.raises(HMSDataError, match=r"listed twice: \['torch'\]"):
        read_base(bad)
    bad.write_text("# only comments\n")
    with pytest.raises(HMSDataError, match="no requirement"):
        read_base(bad)


def test_the_notebook_is_nbformat_4_of_plain_python_cells():
    doc = json.loads(json.dumps(notebook("my-kit")))
    assert doc["nbformat"] == 4 and doc["metadata"]["kernelspec"]["name"] == "python3"
    kinds = [c["cell_type"] for c in doc["cells"]]
    assert kinds[0] == "markdown" and kinds.count("code") >= 5
    code = []
    for cell in doc["cells"]:
        assert isinstance(cell["source"], list) and cell["metadata"] == {}
        if cell["cell_type"] == "code":
            assert cell["outputs"] == [] and cell["execution_count"] is None
            text = "".join(cell["source"])
            compile(text, "<cell>", "exec")  # plain Python
            lines = [line.strip() for line in text.splitlines()]
            assert not [line for line in lines if line.startswith(("!", "%"))]
            code.append(text)
    script = "\n".join(code)
    assert 'KIT_NAME = "my-kit"' in script and 'KIT_NAME = "hms-kit"' not in script
    for needed in ('"HMS_KAGGLE_INPUT", "/kaggle/input"', '"HMS_KAGGLE_WORKING", "/kaggle/working"',
                   f'COMPETITION = "{COMPETITION}"', '"-m", "pip", "install", "--no-index"',
                   '"-m", "hms.predict", "paths=kaggle"', "sys_tags()"):  # fmt: skip
        assert needed in script, needed


def test_the_builder_refuses_weights_of_another_hms_version_bad_settings_foreign_scores(
    weights, tmp_path
):
    variant = tmp_path / "weights"
    shutil.copytree(weights, variant, symlinks=True)
    spec = json.loads((variant / ENSEMBLE_FILE).read_text())
    (variant / ENSEMBLE_FILE).write_text(json.dumps({**spec, "hms_version": "0.0.1"}))
    with pytest.raises(
        HMSDataError,
        match=rf"written by hms 0.0.1, but the kit would install "
        rf"hms {hms.__version__}",
    ):
        build_kit(variant, tmp_path / "kit", log=lambda _: None)  # fmt: skip
    edited = json.loads(json.dumps(spec))
    edited["members"]["effnet_b0"]["data"]["recording"]["bogus"] = 1
    (variant / ENSEMBLE_FILE).write_text(json.dumps(edited))
    with pytest.raises(HMSDataError, match=r"member 'effnet_b0': unknown RecordingSettings"):
        build_kit(variant, tmp_path / "kit", log=lambda _: None)  # as hms.predict refuses it
    (variant / ENSEMBLE_FILE).write_text(json.dumps(spec))
    scores = tmp_path / "scores.csv"
    pd.DataFrame({"name": ["someone"], "cv": [1.0], "cv_hq": [1.0], "test": [1.0],
                  "test_hq": [1.0]}).to_csv(scores, index=False)  # fmt: skip
    with pytest.raises(HMSDataError, match="not the scores of this weights folder"):
        build_kit(variant, tmp_path / "kit", scores=scores, log=lambda _: None)
    assert not (tmp_path / "kit").exists()


# --------------------------------------------------------------------------- the kit, offline


def _tree(root: Path) -> dict[str, tuple[int, int]]:
    return {
        str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns)
        for p in root.rglob("*")
        if p.is_file()
    }


@pytest.fixture(scope="module")
def pipeline_run(tiny, tmp_path_factory) -> dict[str, Path]:
    """A tiny ensemble as a user gets it: ``python -m hms.pipeline`` on the tiny built-in
    dataset (the ResNet1D-GRU of the duo ensemble, two folds): a weights folder with its
    report and OOF blend beside ensemble.json, and the scores table of the pipeline."""
    root, _ = tiny
    work = tmp_path_factory.mktemp("kit-pipeline")
    data = work / "data"
    shutil.copytree(root, data)
    out = work / "outputs"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "WANDB_MODE": "disabled"}
    cmd = [
        sys.executable, "-m", "hms.pipeline", "experiment=tiny", f"data_dir={data}",
        "synth_preset=null", "ensemble=duo", "members=[resnet1d_gru]", "folds=[0,1]",
        f"paths.output_dir={out}", f"paths.cache_dir={work / 'cache'}",
        'train_overrides=["debug=fast","data.batch_size=4"]',
    ]  # fmt: skip
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    return {
        "data": data,
        "weights": out / "ensembles" / "tiny" / "duo",
        "scores": out / "submissions" / "tiny-duo-scores.csv",
    }


@pytest.fixture(scope="module")
def kit(pipeline_run, tmp_path_factory) -> tuple[Path, str]:
    """The kit of the pipeline's weights, built by the command (with the package index)."""
    out = tmp_path_factory.mktemp("kit") / "hms-kit"
    cmd = [sys.executable, "-m", "hms.export", "format=kaggle",
           f"weights_dir={pipeline_run['weights']}", f"out_dir={out}"]  # fmt: skip
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    return out, done.stdout


@pytest.mark.slow
def test_the_kit_holds_wheels_base_weights_card_notebook_readme(kit, pipeline_run):
    out, printed = kit
    manifest = json.loads((out / KIT_FILE).read_text())
    assert sorted(p.name for p in out.iterdir()) == sorted(
        [KIT_FILE, "wheels", BASE_FILE, "weights", "submit.ipynb", "README.md"]
    )
    wheels = {canonicalize_name(w["name"]): w for w in manifest["wheels"]}
    assert set(wheels) == {"hms", "hydra-core", "edfio"}
    assert sorted(p.name for p in (out / "wheels").iterdir()) == sorted(
        w["file"] for w in wheels.values()
    )
    assert wheels["hms"]["version"] == manifest["hms_version"] == hms.__version__
    assert wheels["hms"]["source"].startswith(f"built from {REPO}")
    assert wheels["hydra-core"]["version"] == metadata.version("hydra-core")
    assert (out / BASE_FILE).read_text() == (FILES / BASE_FILE).read_text()
    here = sysconfig.get_platform().replace("-", "_")
    python = f"{sys.version_info[0]}.{sys.version_info[1]}"
    assert manifest["target"]["description"] == f"Python {python} on {here}"

    # weights/: ensemble.json and its checkpoints, unchanged, and the card; nothing else.
    source = pipeline_run["weights"]
    assert (source / "report").is_dir() and (source / "oof_blend.parquet").is_file()
    kept = sorted(str(p.relative_to(out / "weights")) for p in (out / "weights").rglob("*.*"))
    assert kept == sorted([CARD_FILE, ENSEMBLE_FILE, "resnet1d_gru/fold0.ckpt",
                           "resnet1d_gru/fold1.ckpt"])  # fmt: skip
    for rel in kept[1:]:
        assert (out / "weights" / rel).read_bytes() == (source / rel).read_bytes()
    assert "not copied from" in printed and "oof_blend.parquet" in printed and "report/" in printed
    card = (out / "weights" / CARD_FILE).read_text()
    scores = pd.read_csv(pipeline_run["scores"]).set_index("name")
    for needed in (
        f"written by hms {hms.__version__}",
        "| resnet1d_gru | ResNet1DGRU | 2 |",
        f"{scores.loc['resnet1d_gru', 'cv']:.4f}",
        f"{scores.loc['blend: fitted, in-sample', 'test']:.4f}",  # the test figures, found
        str(pipeline_run["scores"]),
        f"`{pipeline_run['data']}`",
        "the built-in dataset, preset tiny, seed 0, generator 2.",
        "resnet1d_gru/fold1.ckpt",
    ):
        assert needed in card, needed
    readme = (out / "README.md").read_text()
    assert "$" not in readme.replace("$$", "") and "hms-kit" in readme and "Run time" in readme


@pytest.mark.slow
def test_the_notebook_offline_writes_what_hms_predict_writes(kit, kaggle_dir, tmp_path):
    out, _ = kit
    python = base_environment(tmp_path / "env")
    # The environment holds exactly the base: the distributions it names and what they need.
    listed = subprocess.run(
        [python, "-c", "import importlib.metadata as m; print(*(d.metadata['Name'] for d in "
         "m.distributions()), sep='\\n')"],
        capture_output=True, text=True, env={"PATH": os.environ["PATH"]}, check=True,
    ).stdout.split()  # fmt: skip
    want = installed_closure(b.requirement.name for b in read_base().requirements)
    assert {canonicalize_name(n) for n in listed} == set(want)
    assert not set(want) & {"hms", "hydra-core", "edfio"}
    for module, present in (("torch", True), ("pandas", True), ("hydra", False),
                            ("hms", False), ("edfio", False)):  # fmt: skip
        probe = subprocess.run([python, "-c", f"import {module}"], capture_output=True,
                               env={"PATH": os.environ["PATH"]})  # fmt: skip
        assert (probe.returncode == 0) == present, module
    inp, work = tmp_path / "input", tmp_path / "working"
    copy_kaggle_test(kaggle_dir, inp / COMPETITION)
    shutil.copytree(out, inp / "hms-kit")
    before = _tree(inp)

    done = run_notebook(out, python, inp, work, timeout=900)
    output = done.stdout + done.stderr
    assert done.returncode == 0, output[-4000:]
    assert "Traceback" not in output
    assert f"hms {hms.__version__}: installed, the kit's and the weights' version" in output
    assert "Successfully installed" in output and "hydra-core" in output
    assert _tree(inp) == before  # the input stays as it was (read-only on Kaggle)
    notebook_sub = pd.read_csv(work / "submission.csv")
    expected = predict(inp / COMPETITION, out / "weights", None, device="cpu", progress=False)
    assert list(notebook_sub.columns) == list(expected.columns)
    assert notebook_sub["eeg_id"].tolist() == expected["eeg_id"].tolist() == [KAGGLE_EEG]
    got, want = notebook_sub[list(VOTE_COLUMNS)].to_numpy(), expected[list(VOTE_COLUMNS)].to_numpy()
    assert np.abs(got - want).max() <= 1e-5
    assert sorted(p.name for p in work.iterdir()) == ["submission.csv"]


@pytest.fixture(scope="module")
def used_env(tmp_path_factory) -> Path:
    """One fresh environment for the failure cases (the last one installs hms into it)."""
    return base_environment(tmp_path_factory.mktemp("used-env") / "env")


def _expect_stop(done: subprocess.CompletedProcess, message: str) -> None:
    output = done.stdout + done.stderr
    assert done.returncode == 1, output[-3000:]
    assert "Traceback" not in output, output[-3000:]
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("hms kit: ") and message in last, output[-3000:]


def _hydra_installed(python: Path) -> bool:
    probe = [python, "-c", "import hydra"]
    env = {"PATH": os.environ["PATH"]}
    return subprocess.run(probe, capture_output=True, env=env).returncode == 0


@pytest.mark.slow
def test_a_missing_input_folder_stops_with_a_clear_message(kit, used_env, tmp_path):
    out, _ = kit
    done = run_notebook(out, used_env, tmp_path / "nope", tmp_path / "working")
    _expect_stop(done, f"the input folder {tmp_path / 'nope'} does not exist")
    inp = tmp_path / "input"
    (inp / "someone-else").mkdir(parents=True)
    done = run_notebook(out, used_env, inp, tmp_path / "working")
    _expect_stop(done, f"no hms kit under {inp} (expected {inp / 'hms-kit' / KIT_FILE})")
    assert "someone-else/" in done.stderr
    shutil.copytree(out, inp / "my-uploaded-kit")  # another slug: found by its marker
    done = run_notebook(out, used_env, inp, tmp_path / "working")
    _expect_stop(done, f"the competition data is not under {inp}")
    assert f"note: the kit is at {inp / 'my-uploaded-kit'}" in done.stdout
    assert not _hydra_installed(used_env)


@pytest.mark.slow
def test_a_kit_for_another_python_and_platform_stops_before_installing(
    pipeline_run, kaggle_dir, used_env, tmp_path
):
    """A real kit for Python 3.12 on Windows, whose base leaves out lightgbm, omegaconf and
    antlr4-python3-runtime: lightgbm's Windows wheel and omegaconf come from the index for that
    target, antlr4-python3-runtime (an sdist only) is built into a pure-Python wheel."""
    base = tmp_path / "base.txt"
    lines = (FILES / BASE_FILE).read_text().splitlines()
    base.write_text("\n".join(x for x in lines if not x.startswith(("lightgbm", "omegaconf",
                                                                      "antlr4"))))  # fmt: skip
    foreign = tmp_path / "kit-win"
    manifest = build_kit(
        pipeline_run["weights"], foreign, python_version="3.12", platform="win_amd64",
        base=base, log=lambda _: None,
    )  # fmt: skip
    files = {canonicalize_name(w["name"]): w for w in manifest["wheels"]}
    assert set(files) == {"hms", "hydra-core", "edfio", "lightgbm", "omegaconf",
                          "antlr4-python3-runtime"}  # fmt: skip
    assert files["lightgbm"]["file"].endswith("-win_amd64.whl")
    assert files["antlr4-python3-runtime"]["file"].endswith("-py3-none-any.whl")
    assert files["antlr4-python3-runtime"]["source"].startswith("built from its sdist")
    assert manifest["target"]["description"] == "Python 3.12 on win_amd64"

    inp = tmp_path / "input"
    copy_kaggle_test(kaggle_dir, inp / COMPETITION)
    shutil.copytree(foreign, inp / "hms-kit")
    done = run_notebook(foreign, used_env, inp, tmp_path / "working")
    here = sysconfig.get_platform().replace("-", "_")
    _expect_stop(
        done, f"the kit was built for Python 3.12 on win_amd64, but this notebook runs Python "
        f"{sys.version_info[0]}.{sys.version_info[1]} on {here}: pip cannot install "
        f"{files['lightgbm']['file']} here",
    )  # fmt: skip
    assert not _hydra_installed(used_env)  # nothing was installed


@pytest.mark.slow
def test_a_damaged_wheel_or_an_image_without_a_base_package_stops(
    kit, kaggle_dir, used_env, tmp_path
):
    out, _ = kit
    inp = tmp_path / "input"
    copy_kaggle_test(kaggle_dir, inp / COMPETITION)
    shutil.copytree(out, inp / "hms-kit")
    wheel = next((inp / "hms-kit" / "wheels").glob("hydra_core-*.whl"))
    data = bytearray(wheel.read_bytes())
    data[100] ^= 0xFF
    wheel.write_bytes(bytes(data))
    done = run_notebook(out, used_env, inp, tmp_path / "working")
    _expect_stop(done, f"{wheel} is damaged (its SHA-256 is not the kit's)")
    shutil.copyfile(out / "wheels" / wheel.name, wheel)
    with (inp / "hms-kit" / BASE_FILE).open("a") as fh:
        fh.write("hms-kit-test-absent-package>=1  # image: 1.0\ntorch>=99\n")
    done = run_notebook(out, used_env, inp, tmp_path / "working")
    _expect_stop(done, "this notebook's image lacks what the kit assumes it holds")
    assert "hms-kit-test-absent-package>=1 (not installed)" in done.stderr
    assert f"torch>=99 (the image has {metadata.version('torch')})" in done.stderr
    assert not _hydra_installed(used_env)


@pytest.mark.slow
def test_weights_of_another_hms_version_stop_after_the_install(kit, kaggle_dir, used_env, tmp_path):
    out, _ = kit
    inp = tmp_path / "input"
    copy_kaggle_test(kaggle_dir, inp / COMPETITION)
    shutil.copytree(out, inp / "hms-kit")
    spec_file = inp / "hms-kit" / "weights" / ENSEMBLE_FILE
    spec_file.write_text(json.dumps({**json.loads(spec_file.read_text()), "hms_version": "0.0.1"}))
    done = run_notebook(out, used_env, inp, tmp_path / "working")
    _expect_stop(
        done, f"the weights folder {inp / 'hms-kit' / 'weights'} was written by hms 0.0.1, but "
        f"the kit installs hms {hms.__version__}",
    )  # fmt: skip
    assert _hydra_installed(used_env)  # installed from the kit, offline
    assert not (tmp_path / "working" / "submission.csv").exists()


@pytest.mark.slow
def test_a_given_hms_wheel_and_a_build_without_the_package_index(kit, pipeline_run, tmp_path):
    """``hms_wheel=FILE`` ships that wheel; without the package index the build stops in one
    line that says the index is needed (exit 1), and leaves no kit."""
    out, _ = kit
    wheel = next((out / "wheels").glob("hms-*.whl"))
    cmd = [
        sys.executable, "-m", "hms.export", "format=kaggle",
        f"weights_dir={pipeline_run['weights']}", f"hms_wheel={wheel}",
    ]  # fmt: skip
    offline = {k: v for k, v in os.environ.items() if not k.startswith("PIP_")}
    offline.update(PIP_NO_INDEX="1", PIP_CONFIG_FILE=os.devnull)
    done = subprocess.run(
        [*cmd, f"out_dir={tmp_path / 'offline'}"], capture_output=True, text=True, env=offline
    )
    assert done.returncode == 1, done.stdout + done.stderr
    assert "Traceback" not in done.stderr and done.stderr.count("\n") == 1, done.stderr
    assert done.stderr.startswith("error: pip could not download edfio==")
    assert "pip download needs the package index" in done.stderr
    assert not (tmp_path / "offline").exists()

    done = subprocess.run([*cmd, f"out_dir={tmp_path / 'kit'}"], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr
    manifest = json.loads((tmp_path / "kit" / KIT_FILE).read_text())
    assert manifest["wheels"][0]["source"] == f"given: {wheel}"
    assert (tmp_path / "kit" / "wheels" / wheel.name).read_bytes() == wheel.read_bytes()
