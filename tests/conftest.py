"""Shared fixtures: the real Kaggle sample files and small HMS-layout folders built on the fly."""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import mne
import numpy as np
import pandas as pd
import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf
from scipy.signal import resample_poly

from hms.blend import ENSEMBLE_FILE, EnsembleSpec, read_ensemble
from hms.cli import conf_dir
from hms.constants import EEG_CHANNELS, SAMPLE_RATE, TRAIN_COLUMNS, VOTE_COLUMNS
from hms.data.io import write_eeg_parquet, write_spectrogram_parquet

REPO = Path(__file__).resolve().parents[1]
# Real files of the Kaggle competition, kept in the repository as test fixtures (their terms:
# tests/data/kaggle_samples/README.md); pyproject.toml leaves them out of the wheel and sdist.
KAGGLE_SAMPLES = REPO / "tests" / "data" / "kaggle_samples"
KAGGLE_SAMPLE_FILES = (
    "test.csv", "sample_submission.csv", "train.csv", "test_eegs/3911565283.parquet",
    "test_spectrograms/853520.parquet", "train_eegs/1000913311.parquet",
    "train_spectrograms/1000189855.parquet",
)  # fmt: skip

# Read by hms (conf/paths/*.yaml, hms.progress, the Kaggle notebook) or by Hydra: a value in the
# caller's shell would change what the tests see. Tests that need one set it themselves.
# HMS_FUZZ_SCALE is the suite's own knob (tests/test_fuzz.py), kept.
KEPT_ENV = ("HMS_FUZZ_SCALE",)
_ENV_PATCH = pytest.MonkeyPatch()


def pytest_configure(config: pytest.Config) -> None:
    """The suite runs alike whatever HYDRA_* or HMS_* variables the caller's shell holds: they
    are removed before collection (so from every fixture, test and subprocess, and from what
    test modules read at import); a test's own ``monkeypatch.setenv`` still applies."""
    for name in list(os.environ):
        if name.startswith(("HYDRA_", "HMS_")) and name not in KEPT_ENV:
            _ENV_PATCH.delenv(name)


def pytest_unconfigure(config: pytest.Config) -> None:
    _ENV_PATCH.undo()


@pytest.fixture(scope="session")
def kaggle_dir() -> Path:
    """The real competition files, in the repository at tests/data/kaggle_samples; a test that
    reads them fails (never skips) when one is missing."""
    missing = [name for name in KAGGLE_SAMPLE_FILES if not (KAGGLE_SAMPLES / name).is_file()]
    if missing:
        pytest.fail(
            f"the real Kaggle sample files are missing from {KAGGLE_SAMPLES}: {', '.join(missing)}"
            " (they are part of the repository: restore them with git)",
            pytrace=False,
        )
    return KAGGLE_SAMPLES


def sine_eeg(n_samples: int, seed: int = 0) -> np.ndarray:
    """A referential recording whose channels are distinct sines (5-15 Hz) plus a little noise."""
    rng = np.random.default_rng(seed)
    t = np.arange(n_samples) / SAMPLE_RATE
    freqs = np.linspace(5, 15, len(EEG_CHANNELS))
    x = 40 * np.sin(2 * np.pi * freqs[None, :] * t[:, None] + rng.uniform(0, 6, len(freqs)))
    return (x + rng.normal(0, 2, x.shape)).astype(np.float32)


def write_layout(
    root: Path,
    n_patients: int = 6,
    eegs_per_patient: int = 2,
    rows_per_eeg: int = 3,
    seed: int = 0,
    eeg_seconds: int = 70,
    spec_seconds: int = 700,
) -> pd.DataFrame:
    """A small HMS-layout train split: sine EEGs, their Kaggle spectrograms and a train.csv."""
    rng = np.random.default_rng(seed)
    (root / "train_eegs").mkdir(parents=True, exist_ok=True)
    (root / "train_spectrograms").mkdir(parents=True, exist_ok=True)
    rows = []
    label_id = 1000
    for p in range(n_patients):
        for e in range(eegs_per_patient):
            eeg_id = 10_000 + 100 * p + e
            spec_id = 20_000 + 100 * p + e
            eeg = sine_eeg(eeg_seconds * SAMPLE_RATE, seed=eeg_id)
            write_eeg_parquet(root / "train_eegs" / f"{eeg_id}.parquet", eeg)
            # The EEG starts at session second 301: spectrogram second 301 + t is EEG second t,
            # so a window at EEG offset o has its spectrogram window at o + 301 - 275 (even).
            # Values are random power (the content of these spectrograms is not under test).
            times = np.arange(1, spec_seconds, 2)
            values = rng.gamma(4.0, 5.0, size=(len(times), 400)).astype(np.float32)
            write_spectrogram_parquet(
                root / "train_spectrograms" / f"{spec_id}.parquet", times, values
            )
            votes = rng.integers(0, 4, size=(2, 6))
            votes[:, rng.integers(6)] += 1
            for k in range(rows_per_eeg):
                offset = 6.0 * k  # even seconds; the last window ends at 6 * (rows - 1) + 50
                v = votes[0] if k < 2 else votes[1]
                rows.append(
                    {
                        "eeg_id": eeg_id,
                        "eeg_sub_id": k,
                        "eeg_label_offset_seconds": float(offset),
                        "spectrogram_id": spec_id,
                        "spectrogram_sub_id": k,
                        "spectrogram_label_offset_seconds": float(offset + 301 - 275),
                        "label_id": label_id,
                        "patient_id": 500 + p,
                        "expert_consensus": ["Seizure", "LPD", "GPD", "LRDA", "GRDA", "Other"][
                            int(np.argmax(v))
                        ],
                        **dict(zip(VOTE_COLUMNS, v.tolist(), strict=True)),
                    }
                )
                label_id += 1
    train = pd.DataFrame(rows)[list(TRAIN_COLUMNS)]
    train.to_csv(root / "train.csv", index=False)
    return train


@pytest.fixture(scope="session")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    """The built-in ``tiny`` dataset, generated once per test session (read-only for tests)."""
    from hms.synth import generate

    out = tmp_path_factory.mktemp("synth") / "tiny"
    summary = generate(out, preset="tiny", seed=0, workers=1, progress=False)
    return out, summary


@pytest.fixture(scope="session")
def _small_layout_template(tmp_path_factory) -> tuple[Path, pd.DataFrame]:
    root = tmp_path_factory.mktemp("template") / "data"
    return root, write_layout(root)


@pytest.fixture
def small_layout(_small_layout_template, tmp_path: Path) -> tuple[Path, pd.DataFrame]:
    """A private copy (tests may damage it) of a small HMS train split with sine EEGs."""
    template, train = _small_layout_template
    root = tmp_path / "data"
    shutil.copytree(template, root)
    return root, train.copy()


def copy_kaggle_test(kaggle_dir: Path, dest: Path) -> Path:
    """A writable copy of the real public test split (test.csv + its EEG and spectrogram)."""
    dest.mkdir(parents=True, exist_ok=True)
    for name in ("test.csv", "sample_submission.csv"):
        shutil.copy(kaggle_dir / name, dest / name)
    for sub in ("test_eegs", "test_spectrograms"):
        shutil.copytree(kaggle_dir / sub, dest / sub)
    return dest


# Tiny members, so that training three runs and predicting stays in seconds on a CPU.
RESNET = (
    "model=resnet1d_gru", "model.net.stem_channels=4", "model.net.stem_kernels=[3,7]",
    "model.net.block_channels=[8,8,8,8,8]", "model.net.gru_hidden=8", "model.net.gru_layers=1",
)  # fmt: skip
EFFNET = ("model=effnet_b0", "model.net.eeg_spec.n_mels=16", "model.net.eeg_spec.hop_length=156")
RUNS = (("resnet1d_gru", 0, RESNET), ("resnet1d_gru", 1, RESNET), ("effnet_b0", 0, EFFNET))
WEIGHTS = {"resnet1d_gru": 0.6, "effnet_b0": 0.4}


def compose_train(work: Path, data_dir: Path, *overrides: str):
    with initialize_config_dir(str(conf_dir()), version_base="1.3"):
        return compose(
            "train",
            overrides=[
                "experiment=tiny", "debug=fast", "data.batch_size=4", f"data.data_dir={data_dir}",
                f"paths.cache_dir={work / 'cache'}", f"paths.output_dir={work / 'outputs'}",
                *overrides,
            ],
        )  # fmt: skip


@pytest.fixture(scope="session")
def weights(tiny, tmp_path_factory) -> Path:
    """A weights folder as hms.ensemble writes it, from runs trained here for real."""
    root, _ = tiny
    work = tmp_path_factory.mktemp("predict-train")
    out = work / "weights"
    checkpoints: dict[str, list[str]] = {}
    data: dict[str, dict] = {}
    for member, fold, overrides in RUNS:
        cfg = compose_train(work, root, *overrides, f"fold={fold}")
        from hms.training import train  # Lightning and timm: only for the tests that need them

        train(cfg)
        run = Path(cfg.run_dir)
        rel = f"{member}/fold{fold}.ckpt"
        (out / member).mkdir(parents=True, exist_ok=True)
        shutil.copy(run / "best.ckpt", out / rel)
        checkpoints.setdefault(member, []).append(rel)
        saved = OmegaConf.load(run / "config.yaml").data
        data[member] = {
            "recording": OmegaConf.to_container(saved.recording),
            "window": OmegaConf.to_container(saved.window),
        }
    spec = EnsembleSpec(name="test", weights=WEIGHTS, checkpoints=checkpoints, data=data)
    (out / ENSEMBLE_FILE).write_text(json.dumps(spec.to_json(), indent=2))
    return out


_MEMBER_CHECKPOINTS: dict[str, bytes] = {}


def member_module(model: str, seed: int = 0):
    """An untrained ``HMSModule`` of ``model`` at the demo's size (no download); the feature
    baseline gets one small tree, so that it predicts."""
    from hms.backends.pytorch import module_class

    with initialize_config_dir(str(conf_dir()), version_base="1.3"):
        cfg = compose("train", overrides=[f"model={model}", "pretrained=false", "scale=demo"])
    kwargs = OmegaConf.to_container(cfg.model, resolve=True)
    kwargs.pop("_target_")
    kwargs.pop("_recursive_", None)
    import torch

    torch.manual_seed(seed)
    module = module_class()(**kwargs)
    if module.net.one_pass:
        tree = {"feature": np.array([0, 0, 0]), "threshold": np.array([0.5, 0, 0]),
                "left": np.array([1, 1, 2]), "right": np.array([2, 1, 2]),
                "value": np.array([0.0, -0.1, 0.1]), "depth": 1}  # fmt: skip
        module.net.trees.set_trees([tree] * 6, list(range(6)))
    return module


def write_member_checkpoint(model: str, path: Path) -> Path:
    """A real checkpoint of an untrained ``model`` (``member_module``), as hms.train writes it;
    made once per model and session, then copied."""
    if model not in _MEMBER_CHECKPOINTS:
        from hms.training import save_module_checkpoint

        scratch = Path(os.environ.get("TMPDIR", "/tmp")) / f"hms-member-{os.getpid()}-{model}.ckpt"
        save_module_checkpoint(member_module(model), scratch)
        _MEMBER_CHECKPOINTS[model] = scratch.read_bytes()
        scratch.unlink()
    path.write_bytes(_MEMBER_CHECKPOINTS[model])
    return path


# --------------------------------------------------------------------------- recordings


EDF_RATE = 256  # Hz: not the HMS 200 Hz, so reading must resample
START = dt.datetime(2024, 3, 1, 22, 15, 0, tzinfo=dt.UTC)


def edf_name(hms: str) -> str:
    """How a clinical system might name an HMS channel: modern names, prefixes, references."""
    modern = {"T3": "T7", "T4": "T8", "T5": "P7", "T6": "P8"}
    if hms == "EKG":
        return "ECG EKG"
    return f"EEG {modern.get(hms, hms).upper()}-REF"


def write_edf(path: Path, signals_uv: np.ndarray, drop: tuple[str, ...] = ()) -> Path:
    """(time, 20) µV at 200 Hz -> an EDF at 256 Hz with clinical channel names, in volts."""
    keep = [i for i, c in enumerate(EEG_CHANNELS) if c not in drop]
    data = resample_poly(signals_uv[:, keep].astype(np.float64), EDF_RATE, SAMPLE_RATE, axis=0)
    names = [edf_name(EEG_CHANNELS[i]) for i in keep]
    types = ["ecg" if EEG_CHANNELS[i] == "EKG" else "eeg" for i in keep]
    info = mne.create_info(names, EDF_RATE, types)
    raw = mne.io.RawArray(data.T * 1e-6, info, verbose="error")
    raw.set_meas_date(START)
    # Extra channels a clinical file has and hms must ignore: a bipolar derivation, a photic one.
    extra = mne.io.RawArray(
        np.zeros((2, raw.n_times)), mne.create_info(["FP1-F7", "PHOTIC"], EDF_RATE, "misc"),
        verbose="error",
    )  # fmt: skip
    raw.add_channels([extra], force_update_info=True)
    mne.export.export_raw(path, raw, fmt="edf", overwrite=True, verbose="error")
    return path


# --------------------------------------------------------------------------- every family


@pytest.fixture(scope="session")
def family_run(tiny, tmp_path_factory) -> dict[str, Path]:
    """A weights folder of every model family, as the main command writes it: ``python -m
    hms.pipeline`` on the tiny built-in dataset with the seed ensemble (effnet_b0, resnet1d_gru,
    multispec_b0, multispec_b1 with dataset normalisation, the feature baseline) and every other
    ``conf/model/*.yaml`` added to it (a new family is exported and checked by its file), the
    demo's model sizes, test-time flip on, fold 0, one batch per stage."""
    from hms.cli import model_names

    root, _ = tiny
    seed = OmegaConf.load(conf_dir() / "ensemble" / "seed.yaml").members
    others = [f"+ensemble.members.{m}={{weight: 0.1}}" for m in model_names() if m not in seed]
    work = tmp_path_factory.mktemp("family")
    data = work / "data"
    shutil.copytree(root, data)
    out = work / "outputs"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "WANDB_MODE": "disabled"}
    cmd = [
        sys.executable, "-m", "hms.pipeline", "experiment=tiny", f"data_dir={data}",
        "synth_preset=null", "ensemble=seed", "folds=[0]", f"paths.output_dir={out}",
        f"paths.cache_dir={work / 'cache'}",
        'train_overrides=["debug=fast","data.batch_size=4","scale=demo","model.tta_flip=true",'
        '"refine.enabled=false"]',  # the demo's knowledge transfer reads every fold's teacher
        *others,
    ]  # fmt: skip
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    assert set(read_ensemble(out / "ensembles" / "tiny" / "seed").members) == set(model_names())
    return {"data": data, "weights": out / "ensembles" / "tiny" / "seed", "work": work}


@pytest.fixture(scope="session")
def family_onnx(family_run) -> Path:
    """The ONNX export of ``family_run``'s weights folder, by the command."""
    out = family_run["work"] / "onnx"
    cmd = [sys.executable, "-m", "hms.export", "format=onnx",
           f"weights_dir={family_run['weights']}", f"out_dir={out}"]  # fmt: skip
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    return out


NO_TORCH = Path(__file__).with_name("no_torch.py")


def run_without_torch(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    """``python -m <args>`` in a process where torch, torchvision, torchaudio, Lightning and
    timm cannot be imported (``tests/no_torch.py``), as on a machine without them."""
    return subprocess.run(
        [sys.executable, str(NO_TORCH), *args], capture_output=True, text=True, cwd=cwd,
        timeout=900,
    )  # fmt: skip
