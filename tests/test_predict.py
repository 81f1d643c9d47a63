"""hms.predict: a real weights folder (two tiny members trained here) on the built-in test split
and on the real Kaggle test files, computed spectrograms, other units, bad inputs, the CLI."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from torch.utils.data import default_collate

from hms.backends.pytorch import resolve_device, resolve_precision
from hms.blend import ENSEMBLE_FILE
from hms.constants import SPEC_EEG_LAG, SPEC_WINDOW_ROWS, SUBMISSION_COLUMNS, VOTE_COLUMNS
from hms.data.cache import HMSCache, build_cache
from hms.data.dataset import CacheDataset
from hms.data.io import file_digest, read_eeg, read_spectrogram, write_eeg_parquet
from hms.data.preprocess import RecordingSettings, WindowSettings
from hms.data.spectrogram import kaggle_spectrogram
from hms.errors import HMSDataError
from hms.models.module import HMSModule
from hms.submission import predict

from .conftest import WEIGHTS, copy_kaggle_test

KAGGLE_EEG, KAGGLE_SPEC = 3911565283, 853520
NOTE = (
    "note: 1 test spectrogram file(s) absent; Kaggle-style spectrograms computed from the EEG "
    "(only the EEG's 50 s are covered, the rest of the 10-min window is zero)"
)


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """One torch thread: on a small shared CPU, more threads make these tiny models far slower."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def weights_variant(weights: Path, dest: Path, edit: Callable[[dict], None] | None) -> Path:
    """A weights folder whose checkpoints link to ``weights``'s, with ``ensemble.json`` edited
    by ``edit`` (``None``: no ensemble.json at all)."""
    dest.mkdir(parents=True)
    for member in WEIGHTS:
        (dest / member).mkdir()
        for ckpt in (weights / member).iterdir():
            (dest / member / ckpt.name).symlink_to(ckpt)
    if edit is not None:
        spec = json.loads((weights / ENSEMBLE_FILE).read_text())
        edit(spec)
        (dest / ENSEMBLE_FILE).write_text(json.dumps(spec))
    return dest


def check_submission(frame: pd.DataFrame, data_dir: Path) -> None:
    """One row per test.csv row in its order, the sample submission's columns, distributions."""
    test = pd.read_csv(data_dir / "test.csv")
    sample = data_dir / "sample_submission.csv"
    columns = list(pd.read_csv(sample).columns) if sample.is_file() else list(SUBMISSION_COLUMNS)
    assert list(frame.columns) == columns
    assert frame["eeg_id"].tolist() == test["eeg_id"].tolist()
    values = frame[list(VOTE_COLUMNS)].to_numpy()
    assert np.isfinite(values).all() and (values >= 0).all()
    np.testing.assert_allclose(values.sum(axis=1), 1.0, atol=1e-6)


def manual_prediction(
    data_dir: Path, weights: Path, cache_dir: Path
) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """The ensemble's prediction computed step by step: each checkpoint's softmax on the whole
    test split in one batch, the mean over a member's folds, the weighted mean of members."""
    spec = json.loads((weights / ENSEMBLE_FILE).read_text())
    members = {}
    for name, info in spec["members"].items():
        settings = RecordingSettings(**info["data"]["recording"])
        cache = HMSCache(build_cache(data_dir, cache_dir, "test", settings, progress=False))
        ds = CacheDataset(cache, window=WindowSettings(**info["data"]["window"]))
        batch = default_collate([ds[i] for i in range(len(ds))])
        folds = []
        for rel in info["checkpoints"]:
            module = HMSModule.load_from_checkpoint(weights / rel, map_location="cpu").eval()
            assert not module.hparams.tta_flip
            with torch.no_grad():
                folds.append(torch.softmax(module(batch), dim=-1).double().numpy())
        members[name] = np.mean(folds, axis=0)
    w = np.array([spec["weights"][m] for m in members])
    mixed = np.tensordot(w / w.sum(), np.stack(list(members.values())), axes=1)
    return mixed / mixed.sum(axis=1, keepdims=True), members


# --------------------------------------------------------------------------- predictions


def test_tiny_test_split_equals_the_manual_computation(weights, tiny, tmp_path, monkeypatch):
    root, _ = tiny
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))  # where the temporary cache goes
    out = tmp_path / "sub" / "submission.csv"
    frame, members = predict(root, weights, out, device="cpu", progress=False, return_members=True)
    written = pd.read_csv(out)
    check_submission(written, root)
    pd.testing.assert_frame_equal(written, frame, check_exact=False, rtol=0, atol=1e-15)
    expected, expected_members = manual_prediction(root, weights, tmp_path / "manual-cache")
    np.testing.assert_allclose(frame[list(VOTE_COLUMNS)].to_numpy(), expected, rtol=0, atol=1e-5)
    assert list(members) == list(WEIGHTS)
    for name, probs in expected_members.items():
        np.testing.assert_allclose(members[name], probs, rtol=0, atol=1e-5)
    assert not list(scratch.iterdir())  # the temporary cache is gone
    assert not list(out.parent.glob(".*.tmp"))


def test_cache_dir_is_kept_and_reused_one_cache_per_recording_setting(weights, tiny, tmp_path):
    root, _ = tiny

    def effnet_float32(spec: dict) -> None:
        spec["members"]["effnet_b0"]["data"]["recording"]["dtype"] = "float32"

    variant = weights_variant(weights, tmp_path / "w", effnet_float32)
    cache_dir = tmp_path / "cache"
    first = predict(root, variant, None, device="cpu", cache_dir=cache_dir, progress=False)
    caches = sorted(cache_dir.glob("test-*"))
    assert len(caches) == 2  # float16 for resnet1d_gru, float32 for effnet_b0
    built = [(c / "manifest.json").stat().st_mtime_ns for c in caches]
    again = predict(root, variant, None, device="cpu", cache_dir=cache_dir, progress=False)
    assert [(c / "manifest.json").stat().st_mtime_ns for c in caches] == built
    pd.testing.assert_frame_equal(first, again)
    check_submission(first, root)
    # Test-time flip forced on: every checkpoint also sees the mirrored input.
    flipped = predict(
        root, variant, None, device="cpu", tta_flip=True, cache_dir=cache_dir, progress=False
    )
    check_submission(flipped, root)
    assert not np.allclose(flipped[list(VOTE_COLUMNS)], first[list(VOTE_COLUMNS)], atol=1e-7)


def test_real_kaggle_test(weights, kaggle_dir, tmp_path, capsys):
    data = copy_kaggle_test(kaggle_dir, tmp_path / "data")
    frame = predict(data, weights, tmp_path / "submission.csv", device="cpu", progress=False)
    check_submission(frame, data)
    assert frame["eeg_id"].tolist() == [KAGGLE_EEG]
    printed = capsys.readouterr().out
    assert "note:" not in printed and "1 rows -> " in printed


def test_real_kaggle_test_without_its_spectrogram(weights, kaggle_dir, tmp_path, capsys):
    data = copy_kaggle_test(kaggle_dir, tmp_path / "data")
    (data / "test_spectrograms" / f"{KAGGLE_SPEC}.parquet").unlink()
    cache_dir = tmp_path / "cache"
    frame = predict(
        data, weights, tmp_path / "submission.csv", device="cpu", cache_dir=cache_dir,
        progress=False,
    )  # fmt: skip
    check_submission(pd.read_csv(tmp_path / "submission.csv"), data)
    assert frame["eeg_id"].tolist() == [KAGGLE_EEG]
    assert capsys.readouterr().out.count(NOTE) == 1

    # The computed rows: spectrogram second T is EEG second T - 275; the 25 rows whose EEG
    # second lies in the 50-s recording are computed from the raw EEG, the rest are zero.
    (path,) = cache_dir.glob("test-*")
    cache = HMSCache(path)
    info = cache.spectrograms.set_index("spectrogram_id").loc[KAGGLE_SPEC]
    assert bool(info["computed"]) and cache.manifest["n_computed_spectrograms"] == 1
    assert info["nan_fraction"] == pytest.approx(1 - 25 / SPEC_WINDOW_ROWS)
    rows = cache.spec_window(0)
    times = np.arange(1, 600, 2)
    inside = (times - SPEC_EEG_LAG >= 0) & (times - SPEC_EEG_LAG < 50)
    assert inside.sum() == 25 and not rows[~inside].any()
    raw = read_eeg(kaggle_dir / "test_eegs" / f"{KAGGLE_EEG}.parquet")
    _, expected = kaggle_spectrogram(raw, (times[inside] - SPEC_EEG_LAG).astype(np.float64))
    np.testing.assert_array_equal(rows[inside], expected)
    # ... and they resemble the official rows they replace (windows fully inside the EEG).
    _, official = read_spectrogram(kaggle_dir / "test_spectrograms" / f"{KAGGLE_SPEC}.parquet")
    full = np.flatnonzero(inside)[1:-1]
    corr = np.corrcoef(np.log(official[full].ravel() + 1e-3), np.log(rows[full].ravel() + 1e-3))
    assert corr[0, 1] > 0.9

    # A build that does not compute finds this cache but still reports the absent file.
    with pytest.raises(HMSDataError, match=rf"1 file\(s\).*{KAGGLE_SPEC}\.parquet"):
        build_cache(data, cache_dir, "test", RecordingSettings(), progress=False)


def test_shared_absent_spectrogram_is_computed_from_the_first_eeg(tiny, tmp_path):
    root, _ = tiny
    data = copy_kaggle_test(root, tmp_path / "data")  # any HMS folder's test split
    test = pd.read_csv(data / "test.csv")
    shared = int(test.loc[0, "spectrogram_id"])
    (data / "test_spectrograms" / f"{shared}.parquet").unlink()
    test.loc[1, "spectrogram_id"] = shared
    test.to_csv(data / "test.csv", index=False)
    built = build_cache(
        data, tmp_path / "cache", "test", progress=False, missing_spectrograms="compute"
    )
    cache = HMSCache(built)
    assert cache.spectrograms["computed"].tolist().count(True) == 1
    raw = read_eeg(data / "test_eegs" / f"{int(test.loc[0, 'eeg_id'])}.parquet")
    times = np.arange(1, 600, 2) - SPEC_EEG_LAG
    inside = (times >= 0) & (times < len(raw) / 200)
    _, expected = kaggle_spectrogram(raw, times[inside].astype(np.float64))
    for sample in (0, 1):  # both test rows read the rows computed from the first row's EEG
        rows = cache.spec_window(cache.window_index(sample))
        np.testing.assert_array_equal(rows[inside], expected)


def test_unusual_recordings_still_predict(weights, tiny, tmp_path):
    """Recordings in volts (x 1e-6) or nanovolts (x 1e3), and one with a channel that is NaN
    throughout, all give valid rows (and a finite float16 cache); without a
    sample_submission.csv the columns are the competition's."""
    root, _ = tiny
    data = copy_kaggle_test(root, tmp_path / "data")
    (data / "sample_submission.csv").unlink()
    eeg_ids = pd.read_csv(data / "test.csv")["eeg_id"].tolist()
    for i, eeg_id in enumerate(eeg_ids):
        path = data / "test_eegs" / f"{eeg_id}.parquet"
        x = read_eeg(path)
        if i == 0:
            x[:, 2] = np.nan  # C3: not one good sample (filled with zeros)
        else:
            x *= np.float32(1e-6 if i % 2 else 1e3)  # 1e3: beyond float16's range (65504)
        write_eeg_parquet(path, x)
    cache_dir = tmp_path / "cache"
    frame = predict(data, weights, tmp_path / "s.csv", device="cpu", cache_dir=cache_dir)
    check_submission(frame, data)
    assert list(frame.columns) == list(SUBMISSION_COLUMNS)
    (path,) = cache_dir.glob("test-*")
    cache = HMSCache(path)
    assert np.isfinite(np.asarray(cache.eeg_array, dtype=np.float32)).all()
    assert cache.eegs.set_index("eeg_id").loc[eeg_ids[0], "bad_fraction"] == 1.0


def test_device_and_precision_defaults():
    assert resolve_precision("auto", torch.device("cpu")) == "32"
    assert resolve_precision("auto", torch.device("cuda")) == "bf16-mixed"
    assert resolve_precision("16-mixed", torch.device("cuda")) == "16-mixed"
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    assert resolve_device("cpu") == torch.device("cpu")
    if not torch.cuda.is_available():
        with pytest.raises(HMSDataError, match="CUDA is not available"):
            resolve_device("cuda")


# --------------------------------------------------------------------------- bad inputs


def _first_eeg(data: Path) -> int:
    return int(pd.read_csv(data / "test.csv")["eeg_id"].iloc[0])


def _missing_eeg(data: Path, weights: Path, tmp: Path) -> tuple[Path, Path, str]:
    eeg = _first_eeg(data)
    (data / "test_eegs" / f"{eeg}.parquet").unlink()
    return data, weights, rf"test\.csv: 1 file\(s\) named by test\.csv do not exist: .*{eeg}"


def _renamed_column(data: Path, weights: Path, tmp: Path) -> tuple[Path, Path, str]:
    pd.read_csv(data / "test.csv").rename(columns={"patient_id": "patient"}).to_csv(
        data / "test.csv", index=False
    )
    return data, weights, r"test\.csv: test\.csv is missing columns \['patient_id'\]"


def _eeg_without_a_channel(data: Path, weights: Path, tmp: Path) -> tuple[Path, Path, str]:
    path = data / "test_eegs" / f"{_first_eeg(data)}.parquet"
    pd.read_parquet(path).drop(columns=["Fz"]).to_parquet(path, index=False)
    return data, weights, rf"{path.name}: EEG is missing columns \['Fz'\]"


def _empty_test_csv(data: Path, weights: Path, tmp: Path) -> tuple[Path, Path, str]:
    (data / "test.csv").write_text("spectrogram_id,eeg_id,patient_id\n")
    return data, weights, r"test\.csv: test\.csv has no rows"


def _no_test_folder(data: Path, weights: Path, tmp: Path) -> tuple[Path, Path, str]:
    return tmp / "nowhere", weights, "test folder not found"


def _no_ensemble_json(data: Path, weights: Path, tmp: Path) -> tuple[Path, Path, str]:
    return data, weights_variant(weights, tmp / "w", None), "no ensemble.json in this weights"


def _checkpoint_of_another_model(data: Path, weights: Path, tmp: Path) -> tuple[Path, Path, str]:
    variant = weights_variant(weights, tmp / "w", lambda spec: None)
    (variant / "resnet1d_gru" / "fold1.ckpt").unlink()
    shutil.copy(weights / "effnet_b0" / "fold0.ckpt", variant / "resnet1d_gru" / "fold1.ckpt")
    return (
        data,
        variant,
        r"fold1\.ckpt: checkpoint of model 'effnet_b0', but the ensemble lists it under member "
        r"'resnet1d_gru'",
    )


def _not_a_checkpoint(data: Path, weights: Path, tmp: Path) -> tuple[Path, Path, str]:
    variant = weights_variant(weights, tmp / "w", lambda spec: None)
    (variant / "resnet1d_gru" / "fold1.ckpt").unlink()
    (variant / "resnet1d_gru" / "fold1.ckpt").write_text("not a checkpoint\n")
    return data, variant, r"resnet1d_gru/fold1\.ckpt: not a PyTorch Lightning checkpoint"


def _plain_torch_file(data: Path, weights: Path, tmp: Path) -> tuple[Path, Path, str]:
    variant = weights_variant(weights, tmp / "w", lambda spec: None)
    (variant / "effnet_b0" / "fold0.ckpt").unlink()
    torch.save({"weight": torch.zeros(3)}, variant / "effnet_b0" / "fold0.ckpt")
    return data, variant, r"effnet_b0/fold0\.ckpt: not an hms model checkpoint"


def _missing_checkpoint(data: Path, weights: Path, tmp: Path) -> tuple[Path, Path, str]:
    def edit(spec: dict) -> None:
        spec["members"]["effnet_b0"]["checkpoints"] = ["effnet_b0/fold4.ckpt"]

    return data, weights_variant(weights, tmp / "w", edit), r"checkpoints not found: .*fold4"


def _checkpoint_outside_the_folder(data: Path, weights: Path, tmp: Path) -> tuple[Path, Path, str]:
    def edit(spec: dict) -> None:
        spec["members"]["effnet_b0"]["checkpoints"][0] = f"../{weights.name}/effnet_b0/fold0.ckpt"

    return data, weights_variant(weights, tmp / "w", edit), r"outside the weights folder"


def _hostile_checkpoint(data: Path, weights: Path, tmp: Path) -> tuple[Path, Path, str]:
    """A checkpoint whose hyperparameters name a callable outside hms.models."""
    variant = weights_variant(weights, tmp / "w", lambda spec: None)
    target = variant / "effnet_b0" / "fold0.ckpt"
    ckpt = torch.load(target, map_location="cpu", weights_only=True)
    marker = tmp / "ran"
    ckpt["hyper_parameters"]["net_class"] = "subprocess.run"
    ckpt["hyper_parameters"]["net"] = {"args": f"touch {marker}", "shell": True}
    target.unlink()
    torch.save(ckpt, target)
    message = r"effnet_b0/fold0\.ckpt: cannot rebuild .*'subprocess\.run' is not an hms network"
    return data, variant, message


def _checkpoint_changed_after_build(data: Path, weights: Path, tmp: Path) -> tuple:
    """A checkpoint other than the one hms.ensemble recorded (``built_from``) in the folder."""

    def edit(spec: dict) -> None:
        sums = {}
        for entry in spec["members"].values():
            for rel in entry["checkpoints"]:
                sums[rel] = {"sha256": file_digest(weights / rel)["sha256"]}
        sums["effnet_b0/fold0.ckpt"] = sums["resnet1d_gru/fold0.ckpt"]  # recorded: another file
        spec["built_from"] = {"checkpoints": sums}

    message = r"effnet_b0/fold0\.ckpt: checkpoint changed after hms\.ensemble built this folder"
    return data, weights_variant(weights, tmp / "w", edit), message


BAD_INPUTS = {
    f.__name__.strip("_"): f
    for f in (
        _missing_eeg, _renamed_column, _eeg_without_a_channel, _empty_test_csv, _no_test_folder,
        _no_ensemble_json, _checkpoint_of_another_model, _not_a_checkpoint, _plain_torch_file,
        _missing_checkpoint, _checkpoint_outside_the_folder, _hostile_checkpoint,
        _checkpoint_changed_after_build,
    )
}  # fmt: skip


@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_bad_input_is_named_and_writes_nothing(case, weights, tiny, tmp_path):
    root, _ = tiny
    data = copy_kaggle_test(root, tmp_path / "data")
    test_path, weights_dir, message = BAD_INPUTS[case](data, weights, tmp_path)
    out = tmp_path / "out" / "submission.csv"
    with pytest.raises(HMSDataError, match=message):
        predict(test_path, weights_dir, out, device="cpu", progress=False)
    assert not out.exists() and not list(tmp_path.glob("out/.*"))
    assert not (tmp_path / "ran").exists()  # the hostile checkpoint's command never ran


def test_an_unwritable_output_is_refused_before_the_work(weights, tiny, tmp_path):
    root, _ = tiny
    data = copy_kaggle_test(root, tmp_path / "data")
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    with pytest.raises(HMSDataError, match=r"a_file/sub\.csv: cannot write the submission here"):
        predict(data, weights, blocker / "sub.csv", device="cpu", progress=False)
    assert not list((tmp_path / "data").glob("**/.*tmp"))


def test_a_failed_run_keeps_the_previous_submission(weights, tiny, tmp_path):
    root, _ = tiny
    data = copy_kaggle_test(root, tmp_path / "data")
    out = tmp_path / "submission.csv"
    out.write_text("eeg_id,seizure_vote\n1,1.0\n")  # a previous run's file
    before = out.read_bytes()
    path = data / "test_eegs" / f"{_first_eeg(data)}.parquet"
    pd.read_parquet(path).drop(columns=["O2"]).to_parquet(path, index=False)  # fails mid-build
    with pytest.raises(HMSDataError, match="EEG is missing columns"):
        predict(data, weights, out, device="cpu", progress=False)
    assert out.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data", "submission.csv"]


# --------------------------------------------------------------------------- the command


def _run_cli(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "hms.predict", *args],
        capture_output=True, text=True, cwd=tmp_path, env=env, timeout=600,
    )  # fmt: skip


def test_command_line(weights, tiny, tmp_path):
    root, _ = tiny
    run = _run_cli(
        tmp_path, f"test_path={root}", f"weights_dir={weights}", "out=sub/submission.csv",
        "progress=false",
    )  # fmt: skip
    assert run.returncode == 0, run.stderr[-3000:]
    written = pd.read_csv(tmp_path / "sub" / "submission.csv")
    check_submission(written, root)
    assert "8 rows -> sub/submission.csv: 2 member(s), 3 fold checkpoint(s)" in run.stdout
    # Offline: wandb is never imported. -X importtime lists every module imported (and the
    # attempt that timm makes, which fails at once): none of wandb's own modules is loaded.
    assert not re.search(r"\|\s+wandb\.\w", run.stderr)
    assert re.search(r"\|\s+hms\.models\.module$", run.stderr, flags=re.MULTILINE)

    no_json = weights_variant(weights, tmp_path / "w", None)
    failed = _run_cli(
        tmp_path, f"test_path={root}", f"weights_dir={no_json}", "out=failed.csv",
    )  # fmt: skip
    assert failed.returncode == 2
    assert "error: " in failed.stderr and "no ensemble.json" in failed.stderr
    assert "Traceback" not in failed.stderr
    assert not (tmp_path / "failed.csv").exists()
