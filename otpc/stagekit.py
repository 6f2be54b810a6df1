"""What every stage command shares: validated params and clean error reporting."""

from __future__ import annotations

import functools
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from otpc.errors import InputError
from otpc.params import Params, ParamsError, load_params

params_option = click.option("--params", "params_path", default="params.yaml", show_default=True,
                             type=click.Path(dir_okay=False, path_type=Path),
                             help="The study's parameter file.")


def checked_params(path: Path) -> Params:
    """``path`` validated by the schema and by the preflight checks (``otpc check``)."""
    from otpc.preflight import check

    params = load_params(path)
    check(params, path)
    return params


def os_error_message(err: OSError) -> str:
    """One line for a file-system error: the file, what went wrong, and nothing else."""
    where = f"{err.filename}: " if err.filename else ""
    return f"{where}{err.strerror or err} (no partial output is left; fix it and re-run)"


def stage(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Validate params.yaml before any work; turn bad input and file-system errors (a full
    or read-only disk) into a one-line error."""

    @functools.wraps(fn)
    def wrapper(*args: Any, params_path: Path, **kwargs: Any) -> Any:
        try:
            params = checked_params(params_path)
            return fn(*args, params=params, **kwargs)
        except (ParamsError, InputError) as err:
            raise click.ClickException(str(err)) from err
        except OSError as err:
            raise click.ClickException(os_error_message(err)) from err

    return wrapper
