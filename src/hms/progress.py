"""Progress that a person can read, in a terminal and in a log: the one progress display of hms.

On a terminal (stderr is a TTY) a phase shows tqdm's bar, redrawn in place. Anywhere else (CI,
``nohup``, a Kaggle log, a pipe) a redrawn bar is hundreds of carriage-return lines: there a
phase prints one line when it ends (``train EEGs: 1200 files in 41.0 s``), and a long phase a
line every ``HMS_PROGRESS_INTERVAL`` seconds (default 60) with its count, rate and time left.
``HMS_PROGRESS=bar`` or ``lines`` forces one form. Every progress display of hms goes through
``progress`` (the process pool, inference, annotation, the cache build and the synthesis through
``hms.parallel``); Lightning's bar has the same rule in ``hms.training``.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Iterable, Iterator
from typing import Any, TextIO

ENV_MODE = "HMS_PROGRESS"  # "bar", "lines", or unset: bars on a terminal, lines elsewhere
ENV_INTERVAL = "HMS_PROGRESS_INTERVAL"  # seconds between the lines of a long phase
DEFAULT_INTERVAL_S = 60.0


def is_terminal(stream: TextIO | None = None) -> bool:
    """True when ``stream`` (stderr by default) is a terminal that can redraw a bar in place;
    ``HMS_PROGRESS=bar`` / ``lines`` decides instead when set."""
    mode = os.environ.get(ENV_MODE, "").strip().lower()
    if mode in ("bar", "bars"):
        return True
    if mode in ("line", "lines"):
        return False
    if stream is None and "ipykernel" in sys.modules:  # a notebook: tqdm draws a widget
        return True
    stream = sys.stderr if stream is None else stream
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):  # closed or replaced streams
        return False


def _interval() -> float:
    try:
        value = float(os.environ.get(ENV_INTERVAL, DEFAULT_INTERVAL_S))
    except ValueError:
        return DEFAULT_INTERVAL_S
    return value if value > 0 else DEFAULT_INTERVAL_S


def _duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.1f} s"
    if seconds < 7200:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


class LineProgress:
    """tqdm's interface (``update``, ``close``, iteration, a context manager) as log lines: one
    when the phase ends, and one every ``interval`` seconds while it runs."""

    def __init__(
        self,
        iterable: Iterable | None = None,
        total: int | None = None,
        desc: str = "",
        unit: str = "step",
        interval: float | None = None,
        stream: TextIO | None = None,
    ) -> None:
        self.iterable = iterable
        if total is None and iterable is not None and hasattr(iterable, "__len__"):
            total = len(iterable)  # type: ignore[arg-type]
        self.total, self.desc, self.unit = total, desc, unit
        self.n = 0
        self.interval = _interval() if interval is None else interval
        self.stream = stream
        self.start = self.last = time.monotonic()
        self.closed = False

    def _write(self, text: str) -> None:
        stream = sys.stderr if self.stream is None else self.stream
        print(text, file=stream, flush=True)

    def _count(self) -> str:
        units = self.unit
        if (self.n if self.total is None else self.total) != 1 and not units.endswith("s"):
            units += "es" if units.endswith(("sh", "ch", "x")) else "s"
        of = f"/{self.total}" if self.total is not None else ""
        return f"{self.n}{of} {units}"

    def update(self, n: int = 1) -> None:
        self.n += n
        now = time.monotonic()
        if now - self.last >= self.interval and not self.closed:
            self.last = now
            elapsed = now - self.start
            rate = self.n / elapsed if elapsed > 0 else 0.0
            left = ""
            if self.total and rate > 0 and self.n < self.total:
                left = f", about {_duration((self.total - self.n) / rate)} left"
            self._write(f"{self.desc}: {self._count()} in {_duration(elapsed)}{left}")

    def close(self) -> None:
        """The phase's line, when it is complete (a phase stopped by an error says nothing:
        the error is the line to read)."""
        if self.closed:
            return
        self.closed = True
        if self.total is None or self.n >= self.total:
            elapsed = _duration(time.monotonic() - self.start)
            self._write(f"{self.desc}: {self._count()} in {elapsed}")

    def __iter__(self) -> Iterator:
        if self.iterable is None:
            raise TypeError("LineProgress without an iterable cannot be iterated")
        for item in self.iterable:
            yield item
            self.update()
        self.close()

    def __enter__(self) -> LineProgress:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


class _Silent:
    """What a disabled progress display is: the interface, doing nothing."""

    def __init__(self, iterable: Iterable | None = None) -> None:
        self.iterable = iterable
        self.n = 0

    def update(self, n: int = 1) -> None:
        self.n += n

    def close(self) -> None:
        pass

    def __iter__(self) -> Iterator:
        yield from self.iterable if self.iterable is not None else ()

    def __enter__(self) -> _Silent:
        return self

    def __exit__(self, *exc: Any) -> None:
        pass


def progress(
    iterable: Iterable | None = None,
    total: int | None = None,
    desc: str = "",
    unit: str = "step",
    enabled: bool = True,
    leave: bool = False,
):
    """A progress display of one phase: tqdm's bar on a terminal, log lines elsewhere, nothing
    when not ``enabled``. Use it as tqdm: iterate over it, or ``update(n)`` then ``close()``."""
    if not enabled:
        return _Silent(iterable)
    if is_terminal():
        from tqdm.auto import tqdm

        return tqdm(iterable, total=total, desc=desc, unit=unit, leave=leave)
    return LineProgress(iterable, total=total, desc=desc, unit=unit)
