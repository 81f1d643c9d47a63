"""Errors that name the file and the problem, so a user can fix their data without a debugger."""

from __future__ import annotations

import numbers
from collections.abc import Sequence
from pathlib import Path
from typing import Any


class HMSDataError(ValueError):
    """Bad or missing input data. The message always names the file (when there is one)."""

    def __init__(self, path: str | Path | None, problem: str) -> None:
        self.path = None if path is None else Path(path)
        self.problem = problem
        super().__init__(problem if path is None else f"{path}: {problem}")

    def __reduce__(self):  # keep (path, problem) when raised in a worker process
        return (type(self), (self.path, self.problem))


class HMSRunError(RuntimeError):
    """A run that could not finish for a reason outside its input data (a worker process killed,
    out of memory, a full disk). Commands end with its one-line message, exit status 1."""


def check_int(name: str, value: Any, minimum: int) -> int:
    """``value`` if it is an integer >= ``minimum``; otherwise ``HMSDataError`` naming the
    argument ``name`` and what is allowed (the check of a command's arguments)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        raise HMSDataError(None, f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def check_choice(name: str, value: Any, choices: Sequence[Any]) -> Any:
    """``value`` if it is one of ``choices``; otherwise ``HMSDataError`` naming the argument."""
    if isinstance(value, bool) or value not in choices:
        raise HMSDataError(None, f"{name} must be one of {list(choices)}, got {value!r}")
    return value
