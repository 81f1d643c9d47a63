"""Paths as users type them: a folder with spaces, accents, non-Latin letters, a quote or
parentheses reaches every command as the same string (hms.cli.quote_values quotes for Hydra the
values its grammar would refuse or trim), and the commands run on such paths."""

from __future__ import annotations

import importlib
import shutil
import sys

import numpy as np
import pandas as pd
import pytest
from hydra.core.global_hydra import GlobalHydra
from hydra.core.override_parser.overrides_parser import OverridesParser

from hms.cli import quote_values
from hms.constants import VOTE_COLUMNS
from tests.conftest import copy_kaggle_test, write_edf

ODD = ["my recordings", "Données été", "日本語 テスト", "it's (copy)", "trailing "]


@pytest.mark.parametrize(
    "value",
    [f"/data/{name}/x.csv" for name in ODD]
    + ["C:\\dir\\sub dir\\", "/a b\\'c", " lead", "/plain/path.csv", "${paths.root_dir}/d"],
)
def test_a_value_reaches_hydra_as_the_same_string(value):
    (arg,) = quote_values([f"test_path={value}"])
    assert OverridesParser.create().parse_overrides([arg])[0].value() == value


def test_what_hydra_reads_as_it_is_is_left_alone():
    args = ["fold=0,1", "model=effnet_b0", "folds=[0,1]", "-m", "+x={a: 1}", "seed=3", "x=null"]
    assert quote_values(args) == args


def run_command(module: str, argv: list[str], monkeypatch, cwd) -> None:
    """``python -m <module> <argv>`` in this process, as a shell passes the arguments (each
    whole); it must end normally."""
    mod = importlib.import_module(module)
    GlobalHydra.instance().clear()
    monkeypatch.setattr(sys, "argv", [module, *argv])
    monkeypatch.chdir(cwd)
    try:
        mod.main()
    finally:
        GlobalHydra.instance().clear()


@pytest.fixture
def odd_root(tmp_path):
    root = tmp_path / "Mes données (été) 日本"
    root.mkdir()
    return root


def test_predict_export_and_score_with_such_paths(weights, kaggle_dir, odd_root, monkeypatch):
    test = copy_kaggle_test(kaggle_dir, odd_root / "kaggle test")
    folder = odd_root / "my weights"
    shutil.copytree(weights, folder)
    out = odd_root / "sub mission.csv"
    args = [f"test_path={test}", f"weights_dir={folder}", f"out={out}", "progress=false"]
    run_command("hms.predict", args, monkeypatch, odd_root)
    sub = pd.read_csv(out)
    np.testing.assert_allclose(sub[list(VOTE_COLUMNS)].sum(axis=1), 1.0, atol=1e-5)
    exported = odd_root / "torch script"
    run_command("hms.export", [f"weights_dir={folder}", f"out_dir={exported}"], monkeypatch,
                odd_root)  # fmt: skip
    assert (exported / "export.json").is_file() and list(exported.glob("*/*.pt"))
    solution = odd_root / "the answers.csv"
    sub.to_csv(solution, index=False)
    run_command("hms.score", [f"submission={out}", f"solution={solution}"], monkeypatch, odd_root)


def test_prepare_and_annotate_with_such_paths(tiny, weights, odd_root, monkeypatch, capsys):
    root, _ = tiny
    data = odd_root / "hms data"
    shutil.copytree(root, data)
    run_command("hms.prepare", [f"data_dir={data}", f"cache_dir={odd_root / 'ca che'}"],
                monkeypatch, odd_root)  # fmt: skip
    assert list((odd_root / "ca che").iterdir())
    from hms.data.io import read_eeg

    first = pd.read_csv(data / "test.csv")["eeg_id"][0]
    edf = write_edf(odd_root / "patient é 1.edf", read_eeg(data / "test_eegs" / f"{first}.parquet"))
    out = odd_root / "time line"
    args = [f"recording={edf}", f"weights_dir={weights}", f"out_dir={out}", "progress=false",
            "missing=interpolate"]  # fmt: skip
    run_command("hms.annotate", args, monkeypatch, odd_root)
    assert (out / "annotate.json").is_file()
