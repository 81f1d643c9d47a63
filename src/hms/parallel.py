"""One function over many jobs in worker processes, with progress (``hms.progress``: a bar on a
terminal, lines in a log): the one process pool of hms (the cache build and the synthesis use it).

``concurrent.futures.ProcessPoolExecutor`` rather than ``multiprocessing.Pool``: when a worker
dies (killed, out of memory, a bus error on a full disk) the pool breaks and ``run_jobs`` raises
``HMSRunError`` at once, where ``Pool`` would wait for the lost result for ever. An exception that
a job raises (e.g. ``HMSDataError`` naming a bad file) reaches the caller unchanged.
"""

from __future__ import annotations

import multiprocessing as mp
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import Any

from hms.errors import HMSRunError
from hms.progress import progress as progress_display


def run_jobs(
    fn: Callable[[Any], Any],
    jobs: Sequence[Any],
    workers: int,
    desc: str,
    unit: str = "job",
    progress: bool = True,
    start_method: str = "spawn",
    chunksize: int = 1,
    min_jobs: int = 2,
) -> list:
    """``[fn(job) for job in jobs]``, in order, on ``workers`` processes (in this process when
    ``workers <= 1`` or there are fewer than ``min_jobs`` jobs). ``fn`` must be picklable (a
    module-level function); ``start_method="fork"`` is faster where nothing forbids it."""
    results: list = []
    bar = progress_display(total=len(jobs), desc=desc, unit=unit, enabled=progress)
    try:
        if workers <= 1 or len(jobs) < min_jobs:
            for job in jobs:
                results.append(fn(job))
                bar.update()
        else:
            ctx = mp.get_context(start_method)
            with ProcessPoolExecutor(max_workers=workers, mp_context=ctx) as pool:
                for result in pool.map(fn, jobs, chunksize=chunksize):
                    results.append(result)
                    bar.update()
    except BrokenProcessPool as exc:
        raise HMSRunError(
            f"{desc}: a worker process died (killed, out of memory, or a full disk?) after "
            f"{len(results)} of {len(jobs)} {unit}s; nothing of this step is kept"
        ) from exc
    finally:
        bar.close()
    return results
