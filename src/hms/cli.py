"""What every ``python -m hms.<verb>`` shares: where the Hydra configs live and how errors end."""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import hydra

import hms
from hms.errors import HMSDataError, HMSRunError


def conf_dir() -> Path:
    """The Hydra config folder: packaged in a wheel (``hms/conf``) or the repo's ``conf/``."""
    packaged = Path(hms.__file__).parent / "conf"
    if packaged.is_dir():
        return packaged
    repo = Path(hms.__file__).resolve().parents[2] / "conf"
    if repo.is_dir():
        return repo
    raise FileNotFoundError(f"hms configs not found in {packaged} or {repo}")


def hydra_main(config_name: str) -> Callable:
    """``hydra.main`` bound to hms's config folder, with data errors reported in one line.

    A bad input (``HMSDataError``) ends the command with its message and exit status 2 instead
    of a traceback: the message already names the file and the problem. A run that could not
    finish for another reason (``HMSRunError``: a killed worker process) ends the same way with
    exit status 1.
    """

    def decorate(task: Callable[[Any], Any]) -> Callable:
        @functools.wraps(task)
        def guarded(cfg: Any) -> Any:
            try:
                return task(cfg)
            except HMSDataError as exc:
                print(f"error: {exc}", file=sys.stderr)
                raise SystemExit(2) from None
            except HMSRunError as exc:  # not the input's fault: a killed worker, a full disk
                print(f"error: {exc}", file=sys.stderr)
                raise SystemExit(1) from None

        return hydra.main(version_base="1.3", config_path=str(conf_dir()), config_name=config_name)(
            guarded
        )

    return decorate
