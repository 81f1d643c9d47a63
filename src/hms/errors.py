"""Errors that name the file and the problem, so a user can fix their data without a debugger."""

from __future__ import annotations

from pathlib import Path


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
