"""The ``otpc`` command: interpolate two prompts, check params, log a finished study.

Its option defaults and ranges are the params schema's (``otpc.params``), so one setting has
one definition everywhere. torch, POT and diffusers are imported only by the commands that
use them.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from pathlib import Path
from types import NoneType
from typing import Any, TypeVar, get_args

import click
from annotated_types import Ge, Gt, Le
from pydantic import BaseModel

from otpc.commands import checked_params, params_option, reports_errors
from otpc.params import (
    CoupleParams,
    LpipsBackbone,
    ModelSpec,
    RenderParams,
    ScoreParams,
    load_params,
)
from otpc.study import layout
from otpc.text import is_blank
from otpc.toy.config import TrainConfig

F = TypeVar("F", bound=Callable[..., Any])


def schema(model: type[BaseModel], name: str) -> Callable[[F], F]:
    """A click option for field ``name`` of ``model``: its default, bounds and description
    (an optional field's option defaults to None)."""
    field = model.model_fields[name]
    bounds = {type(m): m for m in field.metadata}
    low = bounds[Ge].ge if Ge in bounds else (bounds[Gt].gt if Gt in bounds else None)
    high = bounds[Le].le if Le in bounds else None
    number = [t for t in (get_args(field.annotation) or (field.annotation,)) if t is not NoneType]
    kind = click.IntRange if number == [int] else click.FloatRange
    extra = {"min_open": True} if Gt in bounds and kind is click.FloatRange else {}
    return click.option(
        f"--{name.replace('_', '-')}",
        default=field.get_default(call_default_factory=True),
        show_default=True,
        help=field.description,
        type=kind(min=low, max=high, **extra),
    )


@click.group()
@click.version_option(package_name="otpc")
def main() -> None:
    """Optimal-transport interpolation between Stable Diffusion prompts."""


def _methods(ctx: click.Context, param: click.Parameter, value: str) -> list[str]:
    from otpc.couplings import METHODS

    methods = list(dict.fromkeys(m.strip() for m in value.split(",") if m.strip()))
    if not methods:
        raise click.BadParameter(f"no method given; known: {', '.join(sorted(METHODS))}")
    unknown = [m for m in methods if m not in METHODS]
    if unknown:
        raise click.BadParameter(
            f"unknown method(s) {', '.join(map(repr, unknown))}; "
            f"known: {', '.join(sorted(METHODS))}"
        )
    return methods


def _prompt(ctx: click.Context, param: click.Parameter, value: str) -> str:
    if is_blank(value):
        raise click.BadParameter(f"{param.name} is an empty prompt")
    return value


def _check_out(out: Path, overwrite: bool) -> None:
    """Before any work: ``out`` is new, empty or may be replaced, and its parent is writable."""
    if out.exists() and not out.is_dir():
        raise click.BadParameter(f"{out} exists and is not a folder", param_hint="--out")
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise click.BadParameter(
            f"{out} exists and is not empty; pass --overwrite to replace it", param_hint="--out"
        )
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        tempfile.TemporaryDirectory(dir=out.parent, prefix=f".{out.name}.check.").cleanup()
    except OSError as err:
        raise click.BadParameter(
            f"cannot write to {out}: {err.strerror or err}", param_hint="--out"
        ) from None


@main.command()
@click.argument("prompt_a", callback=_prompt)
@click.argument("prompt_b", callback=_prompt)
@click.option(
    "--methods",
    default=",".join(CoupleParams.model_fields["methods"].get_default(call_default_factory=True)),
    show_default=True,
    callback=_methods,
    help="Comma-separated coupling methods.",
)
@schema(RenderParams, "frames")
@schema(RenderParams, "seed")
@click.option(
    "--model",
    default=ModelSpec().name,
    show_default=True,
    help="A preset (`otpc methods` lists them), a hub id or a local diffusers folder.",
)
@schema(RenderParams, "steps")
@schema(RenderParams, "guidance")
@schema(RenderParams, "batch_size")
@schema(CoupleParams, "sinkhorn_reg")
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    required=True,
    help="Folder for the images; written whole at the end.",
)
@click.option("--overwrite", is_flag=True, help="Replace --out if it exists and is not empty.")
@click.option(
    "--lpips-backbone",
    "backbone",
    type=click.Choice(get_args(LpipsBackbone)),
    default=ScoreParams.model_fields["backbone"].default,
    show_default=True,
    help="LPIPS backbone: ImageNet weights, or untrained (its PPL means little).",
)
@reports_errors
def interpolate(
    prompt_a: str,
    prompt_b: str,
    methods: list[str],
    frames: int,
    seed: int,
    model: str,
    steps: int | None,
    guidance: float | None,
    batch_size: int,
    sinkhorn_reg: float,
    out: Path,
    overwrite: bool,
    backbone: LpipsBackbone,
) -> None:
    """Render the path from PROMPT_A to PROMPT_B under each coupling method.

    Writes METHOD.png (the frames side by side) and METHOD.gif for each method, and
    comparison.png with one row per method; prints each path's coupling cost and PPL.
    """
    _check_out(out, overwrite)
    from otpc.interpolation import interpolate_pair  # torch and diffusers: only when needed

    settings = RenderParams(
        frames=frames, seed=seed, steps=steps, guidance=guidance, batch_size=batch_size
    )
    result = interpolate_pair(
        prompt_a, prompt_b, methods, ModelSpec(model), settings, sinkhorn_reg, out, backbone
    )
    for note in result.notes:
        click.echo(f"note: {note}")
    for method, (cost, s) in result.paths.items():
        click.echo(
            f"{method:>13}: cost {cost:.4f}  ppl {s.ppl:.5f}  ppl_norm {s.ppl_norm:.5f}  "
            f"length {s.length:.5f}  max_step {s.max_step:.5f}"
        )
    click.echo(f"wrote {out}/comparison.png (rows: {', '.join(methods)})")


@main.command()
@params_option
@reports_errors
def check(params_path: Path) -> None:
    """Validate the study's params file and report every problem.

    Besides the schema it reads the model's configuration files (not its weights) to check
    render sizes and steps, and checks the device, data files, LPIPS weights and caches on
    this machine: every check a stage may run before it does any work (each stage runs the
    ones it needs).
    """
    checked_params(params_path)
    click.echo(f"{params_path}: ok")


@main.command("log")
@params_option
@click.option(
    "--exp-name",
    default=None,
    help="The DVC experiment these results belong to (default: workspace).",
)
@reports_errors
def log_cmd(params_path: Path, exp_name: str | None) -> None:
    """Log the finished study in this folder to MLflow (no duplicate if already logged).

    Refuses if an output is missing or `dvc status` finds a stage out of date.
    """
    from otpc.tracking import log_study, logged_line, not_ready, out_of_date

    params = load_params(params_path)
    stale = out_of_date(Path.cwd())
    if stale:
        raise not_ready(stale)
    logged = log_study(params, Path.cwd(), layout.METRICS, layout.logged_outputs(), exp_name)
    click.echo(logged_line(logged, params.study))


@main.command("power")
@params_option
@click.option(
    "--scores",
    type=click.Path(dir_okay=False, path_type=Path),
    default=layout.SCORES,
    show_default=True,
    help="The pilot's scores table (its pairs are the population simulated).",
)
@click.option("--sizes", default="20,40,60,80", show_default=True, help="Pairs per group.")
@click.option("--simulations", type=click.IntRange(min=10), default=200, show_default=True)
@click.option(
    "--permutations",
    type=click.IntRange(min=100),
    default=2000,
    show_default=True,
    help="Resamples of each permutation test in a simulated study.",
)
@click.option(
    "--out",
    type=click.Path(dir_okay=False, path_type=Path),
    default=Path("powered/power.json"),
    show_default=True,
)
@reports_errors
def power_cmd(
    params_path: Path, scores: Path, sizes: str, simulations: int, permutations: int, out: Path
) -> None:
    """The pre-registered tests' power at each size, simulated from a pilot run's analysed
    pairs (``--params`` is the pilot's: its groups, pair selection and analysis)."""
    import polars as pl

    from otpc.atomic import write_json
    from otpc.pairs import group_labels
    from otpc.params import PRIMARY
    from otpc.stats import per_pair
    from otpc.study.aggregate import select_pairs
    from otpc.study.power import power
    from otpc.tables import SCORES

    params = load_params(params_path)
    try:
        wanted = [int(n) for n in sizes.split(",")]
    except ValueError:
        raise click.BadParameter(f"not a comma-separated list of sizes: {sizes!r}") from None
    agg = params.aggregate.model_copy(update={"permutations": permutations})
    pilot = SCORES.read(scores).filter(
        (pl.col("variant") == PRIMARY) & (pl.col("path_kind") != "barycentric")
    )
    pilot, _ = select_pairs(pilot, params.data.n_per_group, params.aggregate)
    groups = group_labels(params.data.bins)
    result = power(per_pair(pilot), groups, agg, wanted, simulations, params.aggregate.seed)
    write_json(out, {"pilot": str(scores), "simulations": simulations, "sizes": result})
    for size in result.values():
        shown = ", ".join(f"{k} {v:.0%}" for k, v in size["power"].items())
        click.echo(f"n = {size['pairs_per_group']} per group: {shown}")
    click.echo(f"wrote {out}")


@main.group()
def toy() -> None:
    """The trained toy model (the embedded default): train it again."""


@toy.command("train")
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Folder to write the model to (default: the one otpc ships, model.name: toy).",
)
@click.option("--seed", type=int, default=TrainConfig.seed, show_default=True)
@click.option(
    "--vae-steps", type=click.IntRange(min=1), default=TrainConfig.vae_steps, show_default=True
)
@click.option(
    "--unet-steps", type=click.IntRange(min=1), default=TrainConfig.unet_steps, show_default=True
)
@click.option("--overwrite", is_flag=True, help="Replace --out if it holds a model.")
@reports_errors
def toy_train(
    out: Path | None, seed: int, vae_steps: int, unet_steps: int, overwrite: bool
) -> None:
    """Train the toy model from nothing (seeded; about an hour on 2 CPU cores) and save it
    as a diffusers folder with its loss log and a record of this command. Its state is saved
    every 200 steps: the same command, run again after a stop, continues from there."""
    import shlex
    import sys

    from otpc.toy import MODEL_DIR
    from otpc.toy.train import train

    folder = out or MODEL_DIR
    _check_out(folder, overwrite)
    config = TrainConfig(seed=seed, vae_steps=vae_steps, unet_steps=unet_steps)
    command = shlex.join(["otpc", *sys.argv[1:]])
    record = train(folder, config, command)
    click.echo(f"toy model -> {folder} ({record['seconds']:.0f} s)")


@main.command("methods")
def methods_cmd() -> None:
    """List the registered coupling methods (couple.methods) and the model presets
    (model.name)."""
    from otpc.couplings import METHODS
    from otpc.models import PRESETS

    width = max(map(len, [*METHODS, *PRESETS]))
    click.echo("coupling methods (couple.methods):")
    for name, method in METHODS.items():
        replicated = " (seeded replicates)" if method.stochastic else ""
        click.echo(f"  {name:>{width}}: {method.doc.splitlines()[0]}{replicated}")
    click.echo("model presets (model.name; [what unset render settings become]):")
    for name, preset in PRESETS.items():
        defaults = [
            f"{preset.steps} steps" if preset.steps is not None else "",
            f"guidance {preset.guidance}" if preset.guidance is not None else "",
            f"{preset.size} px" if preset.size is not None else "",
            "gated" if preset.gated else "",
        ]
        shown = ", ".join(d for d in defaults if d)
        click.echo(f"  {name:>{width}}: {preset.note}" + (f" [{shown}]" if shown else ""))


if __name__ == "__main__":
    main()
