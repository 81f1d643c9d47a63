"""Two commands writing the same output at once never interleave (issue 25, item 3): the second
is refused at once, naming the first (``hms.data.io.output_lock``), and a reader never sees a
half-written file (``atomic_path`` / ``atomic_dir``). Tested with real processes."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest

from hms.constants import SUBMISSION_COLUMNS
from hms.data.io import output_lock, output_lock_file
from hms.errors import HMSRunError

from .conftest import sine_eeg, write_edf
from .test_cli_errors import assert_one_line, run_main

HOLD = """
import sys
from hms.data.io import output_lock
with output_lock(sys.argv[1]):
    print("held", flush=True)
    sys.stdin.read()
"""


@contextlib.contextmanager
def held_by_another_process(path: Path) -> Iterator[int]:
    """A real process holding ``path``'s output lock until the block ends; yields its pid."""
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLD, str(path)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert proc.stdout.readline().strip() == "held"
        yield proc.pid
    finally:
        proc.stdin.close()
        proc.wait(timeout=60)
    assert proc.returncode == 0


def test_the_lock_refuses_a_second_writer_and_leaves_nothing(tmp_path):
    out = tmp_path / "new" / "deeper" / "submission.csv"
    with held_by_another_process(out) as pid:
        assert output_lock_file(out).is_file()
        refused = rf"submission.csv: another hms command is writing this submission \(pid {pid} on "
        with pytest.raises(HMSRunError, match=refused), output_lock(out, "submission"):
            pass
    assert not (tmp_path / "new").exists()  # the lock's folders, left empty, are removed
    with output_lock(out), output_lock(out):  # free again; nested in one process: one lock
        assert output_lock_file(out).is_file()
        out.write_text("x")
    assert out.read_text() == "x" and not output_lock_file(out).exists()


def test_a_killed_holder_leaves_the_output_free(tmp_path):
    out = tmp_path / "submission.csv"
    proc = subprocess.Popen([sys.executable, "-c", HOLD, str(out)], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True)  # fmt: skip
    assert proc.stdout.readline().strip() == "held"
    proc.kill()
    proc.wait()
    assert output_lock_file(out).exists()  # left by the killed process: no lock any more
    with output_lock(out):
        pass
    assert not output_lock_file(out).exists()


def test_every_command_that_writes_an_output_is_refused_while_another_writes_it(
    weights, tiny, tmp_path, monkeypatch, capsys
):
    """predict ``out=``, annotate ``out_dir=``, export ``out_dir=`` (TorchScript and ONNX) and
    ensemble ``weights_dir=``: exit status 1, one line naming the holder; the output untouched."""
    from .test_ensemble import write_runs

    root, _ = tiny
    edf = write_edf(tmp_path / "rec.edf", sine_eeg(60 * 200))
    runs = write_runs(tmp_path / "runs", "resnet1d_gru", [0, 1])
    cases = [
        ("hms.predict", "sub.csv", [f"test_path={root}", f"weights_dir={weights}", "out={out}"]),
        ("hms.annotate", "ann", [f"recording={edf}", f"weights_dir={weights}", "out_dir={out}"]),
        ("hms.export", "ts", [f"weights_dir={weights}", "out_dir={out}"]),
        ("hms.export", "onnx", ["format=onnx", f"weights_dir={weights}", "out_dir={out}"]),
        ("hms.ensemble", "w", [f"runs_dir={runs}", "weights_dir={out}", "ensemble=duo",
                               "~ensemble.members.effnet_b0", "~ensemble.members.features_gbm"]),
    ]  # fmt: skip
    for module, name, argv in cases:
        out = tmp_path / "outputs" / name
        argv = [a.replace("{out}", str(out)) for a in argv]
        with held_by_another_process(out) as pid:
            code, err = run_main(module, argv, monkeypatch, capsys, tmp_path)
            assert code == 1, (module, err)
            assert_one_line(err, f"{out}: another hms command is writing this")
            assert f"(pid {pid} on " in err
            assert not out.exists()
        assert not (tmp_path / "outputs").exists()


def _valid(path: Path) -> bool:
    frame = pd.read_csv(path)
    return list(frame.columns) == list(SUBMISSION_COLUMNS) and len(frame) == 8


def test_two_predictions_into_one_file_never_interleave_and_a_reader_sees_whole_files(
    weights, tiny, tmp_path
):
    """Two ``hms.predict`` processes started together on one ``out=``: each ends in its
    submission or in the one-line refusal (never a mix of the two), and a reader polling the
    file all along only ever reads a whole submission."""
    root, _ = tiny
    out = tmp_path / "sub.csv"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "hms.predict", f"test_path={root}", f"weights_dir={weights}",
           f"out={out}", "device=cpu", "progress=false"]  # fmt: skip
    reads, stop = [], threading.Event()

    def reader() -> None:
        while not stop.is_set():
            if out.exists():
                reads.append(_valid(out))
            time.sleep(0.005)

    thread = threading.Thread(target=reader)
    thread.start()
    try:
        procs = [subprocess.Popen(cmd, stderr=subprocess.PIPE, stdout=subprocess.PIPE,
                                  text=True, env=env) for _ in range(2)]  # fmt: skip
        results = [(p.wait(timeout=600), p.stderr.read()) for p in procs]
    finally:
        stop.set()
        thread.join()
    for code, err in results:
        assert code in (0, 1), err
        if code == 1:
            assert err.strip().splitlines()[-1].startswith("error: ") and "another hms" in err
    assert any(code == 0 for code, _ in results)
    assert reads and all(reads), reads.count(False)
    assert _valid(out) and not output_lock_file(out).exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["sub.csv"]
