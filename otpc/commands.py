"""What the ``otpc`` command and the pipeline's stages share: checked params, and one place
where errors become messages.

An ``OtpcError`` (bad params, data or model; outputs not ready) and a file-system error (a
full or read-only disk) end a command with one line and exit status 1; anything else is a
bug and keeps its traceback.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable, Collection
from pathlib import Path
from typing import Any, TypeVar

import click

from otpc.errors import OtpcError
from otpc.params import Params
from otpc.timings import Report, record

F = TypeVar("F", bound=Callable[..., Any])

params_option = click.option(
    "--params",
    "params_path",
    default="params.yaml",
    show_default=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="The study's parameter file.",
)


def checked_params(path: Path, checks: Collection[str] | None = None) -> Params:
    """``path`` validated by the schema, ``dvc.yaml``, the registries and the preflight
    ``checks`` (default: all, as ``otpc check`` does); ``ParamsError`` listing the problems."""
    from otpc.preflight import CHECKS, check  # imports torch and the registries

    return check(path, CHECKS if checks is None else checks)


def os_error_message(err: OSError) -> str:
    """One line for a file-system error: the file, what went wrong, and nothing else."""
    where = f"{err.filename}: " if err.filename else ""
    return f"{where}{err.strerror or err} (no partial output is left; fix it and re-run)"


def reports_errors(fn: F) -> F:
    """Turn an ``OtpcError`` or a file-system error raised by ``fn`` into a one-line
    ``click`` error (exit status 1)."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except OtpcError as err:
            raise click.ClickException(str(err)) from err
        except OSError as err:
            raise click.ClickException(os_error_message(err)) from err

    return wrapper  # type: ignore[return-value]


def stage(checks: Collection[str] | None = None) -> Callable[[F], F]:
    """A pipeline stage: check ``--params`` before any work (the schema, ``dvc.yaml`` and the
    registries always; of the preflight checks, those named in ``checks``, default all: what
    the stage needs), then run ``fn(params=..., ...)``, reporting errors as one line. A
    ``Report`` it returns is printed as one line with the stage's time, and recorded
    (``otpc.timings``)."""

    def decorate(fn: F) -> F:
        spec = fn.__globals__.get("__spec__")  # `python -m stages.render`: stages.render
        name = (spec.name if spec else fn.__module__).rsplit(".", 1)[-1]

        @reports_errors
        @functools.wraps(fn)
        def wrapper(*args: Any, params_path: Path, **kwargs: Any) -> None:
            start = time.perf_counter()
            report = fn(*args, params=checked_params(params_path, checks), **kwargs)
            seconds = time.perf_counter() - start
            counts = report.counts if isinstance(report, Report) else {}
            record(name, seconds, counts)
            if isinstance(report, Report):
                click.echo(f"{name}: {report.line} ({seconds:.1f} s)")

        return wrapper  # type: ignore[return-value]

    return decorate
