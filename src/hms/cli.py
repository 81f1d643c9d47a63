"""What every ``python -m hms.<verb>`` shares: where the Hydra configs live and how errors end."""

from __future__ import annotations

import errno
import functools
import re
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import hydra
from hydra.errors import InstantiationException
from omegaconf.errors import MissingMandatoryValue

import hms
from hms.errors import HMSDataError, HMSRunError

_DISK_FULL = frozenset({errno.ENOSPC, errno.EDQUOT})


def conf_dir() -> Path:
    """The Hydra config folder: packaged in a wheel (``hms/conf``) or the repo's ``conf/``."""
    packaged = Path(hms.__file__).parent / "conf"
    if packaged.is_dir():
        return packaged
    repo = Path(hms.__file__).resolve().parents[2] / "conf"
    if repo.is_dir():
        return repo
    raise FileNotFoundError(f"hms configs not found in {packaged} or {repo}")


def model_names() -> list[str]:
    """Every model config (``conf/model/*.yaml``): what tests and scripts run over, so that a
    new family is covered by adding its file."""
    return sorted(p.stem for p in (conf_dir() / "model").glob("*.yaml"))


def _reported(exc: BaseException, config_name: str) -> tuple[int, str] | None:
    """``(exit status, one-line message)`` for the errors a command reports without a
    traceback, or None for any other exception (a bug: its traceback is wanted).

    An error raised in a constructor that Hydra instantiated (``_target_``) arrives wrapped in
    ``InstantiationException``: its cause is what is reported.
    """
    while isinstance(exc, InstantiationException) and exc.__cause__ is not None:
        exc = exc.__cause__
    if isinstance(exc, HMSDataError):
        return 2, str(exc)
    if isinstance(exc, HMSRunError):  # not the input's fault: a killed worker process
        return 1, str(exc)
    if isinstance(exc, MissingMandatoryValue):  # a ``???`` argument not given
        key = exc.full_key or "?"
        return 2, f"missing argument {key}=... (see conf/{config_name}.yaml)"
    if isinstance(exc, OSError) and exc.errno in _DISK_FULL:  # not the input's fault either
        return 1, f"disk full: {exc.filename or exc.strerror or exc}"
    return None


def hydra_main(config_name: str) -> Callable:
    """``hydra.main`` bound to hms's config folder, with expected errors reported in one line.

    A bad input (``HMSDataError``) or a missing ``???`` argument ends the command with one line
    on stderr, ``error: <problem>``, and exit status 2 instead of a traceback: the message names
    the file or argument and the problem. A run that could not finish for another reason
    (``HMSRunError``: a killed worker process; an ``OSError`` of a full disk or quota) ends the
    same way with exit status 1. Any other exception is a bug and keeps its traceback.
    """

    def decorate(task: Callable[[Any], Any]) -> Callable:
        @functools.wraps(task)
        def guarded(cfg: Any) -> Any:
            try:
                return task(cfg)
            except (
                HMSDataError,
                HMSRunError,
                InstantiationException,
                MissingMandatoryValue,
                OSError,
            ) as exc:
                report = _reported(exc, config_name)
                if report is None:
                    raise
                status, message = report
                message = " ".join(message.split())  # one line, whatever a message embeds
                print(f"error: {message}", file=sys.stderr)
                raise SystemExit(status) from None

        run = hydra.main(version_base="1.3", config_path=str(conf_dir()), config_name=config_name)(
            guarded
        )

        @functools.wraps(task)
        def entry(cfg_passthrough: Any = None) -> Any:
            if cfg_passthrough is None:
                sys.argv[1:] = quote_values(sys.argv[1:])
                _check_overrides(config_name, sys.argv[1:])
            return run(cfg_passthrough)

        return entry

    return decorate


_KEY = re.compile(r"^([+~]{0,2}[\w.@/-]+)=(.*)$", re.DOTALL)


def quote_values(args: list[str]) -> list[str]:
    """The command line with each ``key=value`` whose value Hydra's override grammar cannot read
    as it is (a path with a space, a non-ASCII letter, a quote or a parenthesis, as a shell
    passes it whole) quoted for Hydra, so that it arrives as the same string; every override
    Hydra reads as it is (lists, sweeps, interpolations) is left alone."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import OverrideParseException

    parser = OverridesParser.create()

    def read(arg: str) -> tuple[bool, Any]:
        try:
            return True, parser.parse_overrides([arg])[0].value()
        except OverrideParseException:
            return False, None

    out = []
    for arg in args:
        match = None if arg.startswith("-") else _KEY.match(arg)
        if match is not None:
            key, value = match.groups()
            ok, parsed = read(arg)
            # unreadable, or read as another string (Hydra trims the spaces around a value)
            if not ok or (isinstance(parsed, str) and parsed != value):
                escaped = value.replace("\\", "\\\\").replace("'", "\\'")
                quoted = f"{key}='{escaped}'"
                if read(quoted) == (True, value):
                    arg = quoted
        out.append(arg)
    return out


def _hydra_message(exc: BaseException) -> str:
    """One line of a Hydra composition error: its text up to the config search path (the
    options of a config group included), and the OmegaConf cause's first line."""
    lines = []
    for line in str(exc).splitlines():
        if line.startswith("Config search path"):
            break
        if line.strip() and not line.startswith("See https://"):
            lines.append(line.strip())
    cause = exc.__cause__
    if cause is not None and str(cause).strip():
        lines.append(f"({str(cause).strip().splitlines()[0]})")
    return " ".join(lines)


def _check_overrides(config_name: str, args: list[str]) -> None:
    """Compose the config with the command line's overrides before Hydra runs the command: a
    malformed override, an unknown key or an unknown config group option ends in one line and
    exit status 2, where Hydra prints several lines and exits with 1. Command lines with Hydra
    flags (``--multirun``, ``--cfg``, ``--help``, ...) or sweeps are left to Hydra."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import ConfigCompositionException, OverrideParseException

    if any(a.startswith("-") for a in args) or GlobalHydra.instance().is_initialized():
        return
    try:
        overrides = OverridesParser.create().parse_overrides(args)
        if any(o.is_sweep_override() for o in overrides):
            return
        with initialize_config_dir(config_dir=str(conf_dir()), version_base="1.3"):
            compose(config_name, overrides=args)
    except (ConfigCompositionException, OverrideParseException) as exc:
        print(f"error: {_hydra_message(exc)} (see conf/{config_name}.yaml)", file=sys.stderr)
        raise SystemExit(2) from None
