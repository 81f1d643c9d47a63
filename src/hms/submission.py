"""HMS test folder + weights folder -> the submission: the work of ``python -m hms.predict``.

``test_path`` is an HMS-layout folder (``test.csv``, ``test_eegs/``, ``test_spectrograms/``, and
optionally ``sample_submission.csv``); ``weights_dir`` is a folder written by ``hms.ensemble``
(``ensemble.json`` and ``<member>/fold<k>.ckpt``) or its ONNX export (``<member>/fold<k>.onnx``,
run by onnxruntime without torch), see ``hms.blend``. For each member, the test
split goes through the same cache and preprocessing as training, with the member's own
``data.recording`` settings (members that share them share one cache) and ``data.window``
settings; every fold checkpoint predicts the test rows, a member's folds are averaged (mean of
probabilities), and the members are blended as ``ensemble.json`` says (``hms.inference``).

The output has one row per ``test.csv`` row, in its order: ``eeg_id`` and the six vote columns
(in the order of ``sample_submission.csv`` when the folder has one), each row a probability
distribution. It is written under a temporary name and renamed, so a failed run leaves no partial
file and does not touch a previous one.

Offline by design: checkpoints rebuild their networks without downloading weights, and wandb is
never imported (``hms.backends.pytorch``). A spectrogram file that is absent (a recording
from outside Kaggle) is not an error: its Kaggle-style rows are computed from the EEG
(``build_cache(..., missing_spectrograms="compute")``), covering the EEG's 50 s of the 10-min
window.
"""

from __future__ import annotations

# Only light modules are imported here (see hms.inference): the backend (torch or onnxruntime)
# and the cache code are imported when the checks have passed.
import contextlib
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from hms.backends.base import check_device
from hms.blend import read_ensemble
from hms.constants import SUBMISSION_COLUMNS, VOTE_COLUMNS
from hms.data.io import (
    HMSLayout,
    check_writable,
    output_lock,
    read_sample_submission,
    write_csv,
)
from hms.data.preprocess import RecordingSettings
from hms.errors import HMSDataError, check_int
from hms.inference import open_weights, predict_member

if TYPE_CHECKING:
    from hms.data.cache import HMSCache

SPLIT = "test"
_ROW_SUM_TOL = 1e-6


def _output_columns(layout: HMSLayout, test: pd.DataFrame) -> list[str]:
    """The submission's columns: those of ``sample_submission.csv`` when present."""
    if not layout.sample_submission.is_file():
        return list(SUBMISSION_COLUMNS)
    sample = read_sample_submission(layout.sample_submission)
    if set(sample["eeg_id"]) != set(test["eeg_id"]):
        print(
            f"note: {layout.sample_submission} lists other eeg_ids than test.csv; the output "
            "has the rows of test.csv"
        )
    return list(sample.columns)


def _check_submission(frame: pd.DataFrame, test: pd.DataFrame, columns: list[str]) -> None:
    """What the output must be before it is written: a failure here is a bug, not bad input."""
    values = frame[list(VOTE_COLUMNS)].to_numpy(np.float64)
    problems = []
    if list(frame.columns) != columns:
        problems.append(f"columns {list(frame.columns)} instead of {columns}")
    if len(frame) != len(test) or not np.array_equal(frame["eeg_id"], test["eeg_id"]):
        problems.append("rows are not those of test.csv in its order")
    if not np.isfinite(values).all():
        problems.append("non-finite probabilities")
    elif (values < 0).any() or not np.allclose(values.sum(axis=1), 1.0, atol=_ROW_SUM_TOL):
        problems.append("rows that are not probability distributions")
    if problems:
        raise RuntimeError("the submission is invalid: " + "; ".join(problems))


def _test_caches(
    layout: HMSLayout,
    cache_dir: str | Path,
    settings: list[RecordingSettings],
    test: pd.DataFrame,
    workers: int,
    progress: bool,
) -> dict[RecordingSettings, HMSCache]:
    """The test split's cache for each distinct recording setting (absent spectrograms are
    computed from the EEG, and said so once)."""
    from hms.data.cache import HMSCache, build_cache

    caches: dict[RecordingSettings, HMSCache] = {}
    for setting in dict.fromkeys(settings):
        path = build_cache(
            layout.root, cache_dir, SPLIT, setting, workers=workers, progress=progress,
            missing_spectrograms="compute",
        )  # fmt: skip
        cache = HMSCache(path)
        if not np.array_equal(cache.samples["eeg_id"].to_numpy(), test["eeg_id"].to_numpy()):
            raise HMSDataError(path, "this cache's rows are not those of test.csv; delete it")
        caches[setting] = cache
    n_computed = int(next(iter(caches.values())).spectrograms["computed"].sum())
    if n_computed:
        print(
            f"note: {n_computed} test spectrogram file(s) absent; Kaggle-style spectrograms "
            "computed from the EEG (only the EEG's 50 s are covered, the rest of the 10-min "
            "window is zero)"
        )
    return caches


def predict(
    test_path: str | Path,
    weights_dir: str | Path,
    out: str | Path | None = "submission.csv",
    device: str = "auto",
    precision: str | None = "auto",
    batch_size: int = 32,
    num_workers: int = 0,
    tta_flip: bool | None = None,
    cache_dir: str | Path | None = None,
    workers: int = 1,
    progress: bool = True,
    return_members: bool = False,
) -> pd.DataFrame | tuple[pd.DataFrame, dict[str, np.ndarray]]:
    """Predict ``test_path``'s test split with the ensemble in ``weights_dir``; write ``out``.

    Returns the submission (``eeg_id`` and the six vote columns, one row per ``test.csv`` row in
    its order, rows summing to 1); with ``return_members=True``, also each member's prediction
    (the mean over its folds, (rows, 6) in the same row order) by member name, to score members
    on their own. ``out=None`` writes nothing. ``cache_dir=None`` builds the test
    caches in a temporary folder removed at the end; a given folder is kept and reused by the
    next run. ``workers`` processes build the cache; ``num_workers`` feed the model.
    ``tta_flip``: None keeps each checkpoint's setting; True/False forces it for all.
    Bad inputs raise ``HMSDataError`` naming the file and the problem, and write nothing.
    """
    t0 = time.perf_counter()
    # Everything that can be checked cheaply is checked before any work is done: the
    # arguments, the output location, then the inputs.
    check_int("batch_size", batch_size, 1)
    check_int("num_workers", num_workers, 0)
    check_int("workers", workers, 1)
    if tta_flip is not None and not isinstance(tta_flip, bool):
        raise HMSDataError(None, f"tta_flip must be true, false or null, got {tta_flip!r}")
    check_device(device, precision)
    if out is not None:
        check_writable(out, "submission", folder=False)
    if cache_dir is not None:
        check_writable(cache_dir, "cache folder", folder=True)
    weights_dir = Path(weights_dir)
    ensemble = read_ensemble(weights_dir)
    layout = HMSLayout(test_path)
    if not layout.root.is_dir():
        raise HMSDataError(layout.root, "test folder not found")
    test = layout.read_csv(SPLIT)
    columns = _output_columns(layout, test)
    # The backend (torch or onnxruntime) is imported here, after the checks of the files.
    weights = open_weights(weights_dir, device, precision, ensemble)
    recording, window = weights.recording, weights.window
    checkpoints = {m: info.files for m, info in weights.members.items()}

    from hms.data.dataset import CacheDataset

    # Members of weight 0 (references) change nothing in the blend: run only when asked for.
    run = [m for m in ensemble.members if return_members or ensemble.weights[m] > 0]
    member_probs: dict[str, np.ndarray] = {}
    with contextlib.ExitStack() as stack:
        if out is not None:  # one command at a time writes a submission file
            stack.enter_context(output_lock(out, "submission"))
        if cache_dir is None:
            cache_dir = stack.enter_context(tempfile.TemporaryDirectory(prefix="hms-predict-"))
        caches = _test_caches(layout, cache_dir, list(recording.values()), test, workers, progress)
        for member in run:
            dataset = CacheDataset(caches[recording[member]], window=window[member])
            member_probs[member] = predict_member(
                weights, member, dataset, batch_size, tta_flip, num_workers, progress
            )
        probs = ensemble.blend(member_probs)
        frame = pd.DataFrame({"eeg_id": test["eeg_id"].to_numpy(np.int64)})
        for i, col in enumerate(VOTE_COLUMNS):
            frame[col] = probs[:, i]
        frame = frame[columns]
        _check_submission(frame, test, columns)
        if out is not None:
            write_csv(frame, out)
    n_folds = sum(len(checkpoints[m]) for m in run)
    per_member = ", ".join(f"{m} ({len(checkpoints[m])})" for m in run)
    print(
        f"{len(frame)} rows -> {out if out is not None else '(not written)'}: "
        f"{len(run)} member(s), {n_folds} fold {weights.backend.file_kind}(s) [{per_member}], "
        f"{weights.backend.name} on {weights.backend.device} {weights.backend.precision}, "
        f"{time.perf_counter() - t0:.1f} s"
    )
    if return_members:
        return frame, member_probs
    return frame
