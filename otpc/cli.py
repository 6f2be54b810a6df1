"""The ``otpc`` command: interpolate two prompts, check params, log a finished study."""

from __future__ import annotations

import copy
import tempfile
from pathlib import Path

import click
import numpy as np
import torch
from tqdm.auto import tqdm

from otpc.couplings import METHODS, couple, derive_seed
from otpc.pairs import is_blank, shorten
from otpc.params import ParamsError, load_params
from otpc.study import layout


@click.group()
def main() -> None:
    """Optimal-transport interpolation between Stable Diffusion prompts."""


def _methods(ctx: click.Context, param: click.Parameter, value: str) -> list[str]:
    methods = list(dict.fromkeys(m.strip() for m in value.split(",") if m.strip()))
    if not methods:
        raise click.BadParameter(f"no method given; known: {', '.join(sorted(METHODS))}")
    unknown = [m for m in methods if m not in METHODS]
    if unknown:
        raise click.BadParameter(f"unknown method(s) {', '.join(map(repr, unknown))}; "
                                 f"known: {', '.join(sorted(METHODS))}")
    return methods


def _prompt(ctx: click.Context, param: click.Parameter, value: str) -> str:
    if is_blank(value):
        raise click.BadParameter(f"{param.name} is an empty prompt")
    return value


@main.command()
@click.argument("prompt_a", callback=_prompt)
@click.argument("prompt_b", callback=_prompt)
@click.option("--methods", default="clip,ot,random", show_default=True, callback=_methods,
              help="Comma-separated coupling methods.")
@click.option("--frames", default=9, show_default=True, type=click.IntRange(min=2),
              help="Frames on the path, ends included (at least 2).")
@click.option("--seed", default=0, show_default=True, type=int, help="Noise and random-coupling seed.")
@click.option("--model", default="tiny", show_default=True,
              help="tiny, a preset (sd15, sd21, sdxl), a hub id or a local diffusers folder.")
@click.option("--steps", default=25, show_default=True, type=click.IntRange(min=1))
@click.option("--guidance", default=7.5, show_default=True, type=click.FloatRange(min=0))
@click.option("--batch-size", default=16, show_default=True, type=click.IntRange(min=1))
@click.option("--sinkhorn-reg", default=0.05, show_default=True, type=click.FloatRange(min=0, min_open=True))
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), required=True,
              help="Folder for the images; written whole at the end.")
@click.option("--overwrite", is_flag=True, help="Replace --out if it exists and is not empty.")
def interpolate(prompt_a: str, prompt_b: str, methods: list[str], frames: int, seed: int,
                model: str, steps: int, guidance: float, batch_size: int, sinkhorn_reg: float,
                out: Path, overwrite: bool) -> None:
    """Render the path from PROMPT_A to PROMPT_B under each coupling method.

    Writes METHOD.png (the frames side by side) and METHOD.gif for each method, and
    comparison.png with one row per method; prints each path's coupling cost and PPL.
    """
    _check_out(out, overwrite)
    try:
        _interpolate(prompt_a, prompt_b, methods, frames, seed, model, steps, guidance,
                     batch_size, sinkhorn_reg, out)
    except OSError as err:
        from otpc.stagekit import os_error_message

        raise click.ClickException(os_error_message(err)) from err


def _check_out(out: Path, overwrite: bool) -> None:
    """Before any work: ``out`` is new, empty or may be replaced, and its parent is writable."""
    if out.exists() and not out.is_dir():
        raise click.BadParameter(f"{out} exists and is not a folder", param_hint="--out")
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise click.BadParameter(f"{out} exists and is not empty; pass --overwrite to replace it",
                                 param_hint="--out")
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        tempfile.TemporaryDirectory(dir=out.parent, prefix=f".{out.name}.check.").cleanup()
    except OSError as err:
        raise click.BadParameter(f"cannot write to {out}: {err.strerror or err}",
                                 param_hint="--out") from None


def _interpolate(prompt_a: str, prompt_b: str, methods: list[str], frames: int, seed: int,
                 model: str, steps: int, guidance: float, batch_size: int, sinkhorn_reg: float,
                 out: Path) -> None:
    from otpc.atomic import atomic_dir
    from otpc.embeddings import encode
    from otpc.images import grid, save_gif, save_png, strip
    from otpc.models import ModelSpec, load_pipeline
    from otpc.paths import interpolate, path_frames, t_grid
    from otpc.perceptual import load_lpips, path_length, step_distances
    from otpc.render import Renderer, RenderSettings

    try:
        pipe = load_pipeline(ModelSpec(model))
    except (RuntimeError, ValueError) as err:
        raise click.ClickException(str(err)) from err
    renderer = Renderer(pipe, RenderSettings(steps=steps, guidance=guidance, batch_size=batch_size))
    ea, eb = encode(pipe, [prompt_a, prompt_b])
    for e in (ea, eb):
        if e.truncated:
            click.echo(f"note: prompt truncated to the tokenizer's limit ({e.n_tokens} tokens): "
                       f"{shorten(e.prompt)!r}")
    if pipe.otpc_resolved.random_weights:
        click.echo("note: model has random weights; images carry no meaning")
    ts = t_grid(frames)
    a, b = ea.embeds.double(), eb.embeds.double()
    couplings = [couple(a, b, method, seed=derive_seed(seed, method), sinkhorn_reg=sinkhorn_reg)
                 for method in methods]
    paths = torch.cat([path_frames(a, b, c, ts).float() for c in couplings])
    pooled = None
    if ea.pooled is not None:  # no rows: moves linearly with the same t, as in the study
        pooled = interpolate(ea.pooled.double(), eb.pooled.double(), ts).float()
        pooled = pooled.repeat(len(methods), 1)
    latents = renderer.initial_latents(derive_seed(seed, "latent", prompt_a, prompt_b))
    images = _render(renderer, paths, latents, pooled)
    metric = load_lpips("alex")
    if not metric.pretrained_backbone:
        click.echo("note: LPIPS backbone is untrained (ImageNet weights not in the torch cache)")
    rows = []
    with atomic_dir(out) as tmp:
        for method, c, path_images in zip(methods, couplings, np.split(images, len(methods))):
            ppl, ppl_norm = path_length(step_distances(metric, path_images))
            row = strip(list(path_images))
            save_png(tmp / f"{method}.png", row)
            save_gif(tmp / f"{method}.gif", list(path_images))
            rows.append(row)
            click.echo(f"{method:>9}: cost {c.cost:.4f}  ppl {ppl:.5f}  ppl_norm {ppl_norm:.5f}")
        save_png(tmp / "comparison.png", grid(rows))
    click.echo(f"wrote {out}/comparison.png (rows: {', '.join(methods)})")


def _render(renderer, paths: torch.Tensor, latents: torch.Tensor, pooled: torch.Tensor | None
            ) -> np.ndarray:
    """All frames (F, n, d) from the same noise, in batches; the bar advances per U-Net call."""
    batch_size = renderer.settings.batch_size
    batches = range(0, len(paths), batch_size)
    scheduler = copy.deepcopy(renderer.pipe.scheduler)
    scheduler.set_timesteps(renderer.settings.steps)
    bar = tqdm(total=len(batches) * len(scheduler.timesteps), desc=f"render {len(paths)} frames",
               unit="step", dynamic_ncols=True)

    def advance(*_: object) -> None:  # a forward hook must return None to keep the output
        bar.update()

    hook = renderer.unet.register_forward_hook(advance)
    try:
        images = [renderer.render_batch(paths[i:i + batch_size],
                                        latents.expand(len(paths[i:i + batch_size]), -1, -1, -1),
                                        None if pooled is None else pooled[i:i + batch_size])
                  for i in batches]
    finally:
        hook.remove()
        bar.close()
    return np.concatenate(images)


@main.command()
@click.option("--params", "params_path", default="params.yaml", show_default=True,
              type=click.Path(dir_okay=False, path_type=Path))
def check(params_path: Path) -> None:
    """Validate the study's params file and report every problem.

    Besides the schema it reads the model's configuration files (not its weights) to check
    render sizes and steps, and checks the device, data files and caches on this machine:
    the same checks every stage runs before it does any work.
    """
    from otpc.stagekit import checked_params

    try:
        checked_params(params_path)
    except ParamsError as err:
        raise click.ClickException(str(err)) from err
    click.echo(f"{params_path}: ok")


@main.command("log")
@click.option("--params", "params_path", default="params.yaml", show_default=True,
              type=click.Path(dir_okay=False, path_type=Path))
@click.option("--exp-name", default=None,
              help="The DVC experiment these results belong to (default: workspace).")
def log_cmd(params_path: Path, exp_name: str | None) -> None:
    """Log the finished study in this folder to MLflow (no duplicate if already logged).

    Refuses if an output is missing or is not the file dvc.lock records.
    """
    from otpc.tracking import NotReady, log_study, logged_line, tracking_uri

    try:
        params = load_params(params_path)
        run_id, new = log_study(params, Path.cwd(), layout.METRICS, layout.logged_outputs(),
                                exp_name)
    except (ParamsError, NotReady) as err:
        raise click.ClickException(str(err)) from err
    except Exception as err:  # noqa: BLE001 - report any tracking failure with its URI
        raise click.ClickException(f"could not log to {tracking_uri()}: {err}") from err
    click.echo(logged_line(run_id, new, params.study))


@main.command("methods")
def methods_cmd() -> None:
    """List the registered coupling methods and the model presets."""
    from otpc.models import PRESETS

    for name, method in METHODS.items():
        replicated = " (seeded replicates)" if method.stochastic else ""
        click.echo(f"{name:>9}: {method.doc.splitlines()[0]}{replicated}")
    for name, preset in PRESETS.items():
        click.echo(f"{name:>9}: {preset.note}")
