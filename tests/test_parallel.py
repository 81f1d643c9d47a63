"""The process pool (hms.parallel): results in order, job errors passed on, a dead worker an
error instead of a hang."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

from hms.errors import HMSDataError
from hms.parallel import run_jobs


def _square(x: int) -> int:
    return x * x


def _fail_on_three(x: int) -> int:
    if x == 3:
        raise HMSDataError(f"/data/{x}.parquet", "broken file")
    return x


@pytest.mark.parametrize("workers", [1, 2])
def test_results_in_order_and_errors_passed_on(workers):
    assert run_jobs(_square, list(range(10)), workers, "squares", progress=False,
                    start_method="fork") == [x * x for x in range(10)]  # fmt: skip
    with pytest.raises(HMSDataError, match=r"3\.parquet: broken file"):
        run_jobs(_fail_on_three, list(range(6)), workers, "files", progress=False,
                 start_method="fork")  # fmt: skip


def test_a_killed_worker_ends_in_an_error_not_a_hang(tmp_path):
    """SIGKILL of a worker (what the OOM killer does): multiprocessing.Pool would wait for ever;
    run_jobs raises HMSRunError naming the step. Run in a subprocess with a time limit, so a hang
    fails the test instead of stalling the suite."""
    script = tmp_path / "kill.py"
    script.write_text(
        textwrap.dedent("""
        import os, signal
        from hms.errors import HMSRunError
        from hms.parallel import run_jobs

        def job(x):
            if x == 5:
                os.kill(os.getpid(), signal.SIGKILL)
            return x

        if __name__ == "__main__":
            try:
                run_jobs(job, list(range(20)), 2, "test jobs", progress=False)
            except HMSRunError as exc:
                print("RUN ERROR:", exc)
    """)
    )
    result = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, timeout=120, check=False
    )
    assert "RUN ERROR: test jobs: a worker process died" in result.stdout, result.stderr
