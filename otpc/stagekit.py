"""What every stage command shares: validated params and clean error reporting."""

from __future__ import annotations

import functools
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from otpc.errors import InputError
from otpc.params import ParamsError, load_params

params_option = click.option("--params", "params_path", default="params.yaml", show_default=True,
                             type=click.Path(dir_okay=False, path_type=Path),
                             help="The study's parameter file.")


def stage(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Validate params.yaml before any work; turn bad input into a one-line error."""

    @functools.wraps(fn)
    def wrapper(*args: Any, params_path: Path, **kwargs: Any) -> Any:
        try:
            params = load_params(params_path)
            return fn(*args, params=params, **kwargs)
        except (ParamsError, InputError) as err:
            raise click.ClickException(str(err)) from err

    return wrapper

