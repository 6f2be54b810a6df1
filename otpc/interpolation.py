"""One pair, every coupling method: the images along each path and their PPL, as
``otpc interpolate`` shows them. Seeds are the study's for the same pair (its id derived from
the two prompts, as for a CSV pair): with one seed for couplings and noise, and the same
model and render settings, the frames are the study's."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from otpc.atomic import atomic_dir
from otpc.couplings import couple
from otpc.embeddings import encode
from otpc.images import grid, save_gif, save_png, strip
from otpc.models import ModelSpec, describe, load_pipeline
from otpc.pairs import pair_id_for
from otpc.params import LpipsBackbone, RenderParams, ScoreParams
from otpc.paths import conditioning_path, t_grid
from otpc.perceptual import PathLength, load_lpips, path_length, step_distances
from otpc.render import Renderer
from otpc.row_blocks import pair_blocks
from otpc.seeds import coupling_seed, latent_seed
from otpc.text import shorten

MIN_SIZE = ScoreParams.model_fields["min_size"].default  # LPIPS sees frames as the study does


@dataclass
class PairResult:
    """Per method: (coupling cost, its path's smoothness); and notes on how to read the images."""

    paths: dict[str, tuple[float, PathLength]] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


def interpolate_pair(
    prompt_a: str,
    prompt_b: str,
    methods: list[str],
    spec: ModelSpec,
    settings: RenderParams,
    sinkhorn_reg: float,
    out: Path,
    backbone: LpipsBackbone = "imagenet",
) -> PairResult:
    """Render the path from A to B under each method, all frames from the same noise, and
    write ``out`` whole: ``<method>.png`` (strip), ``<method>.gif`` and ``comparison.png``.
    PPL is LPIPS (alex) on its ImageNet backbone, or on an untrained one if ``backbone`` says
    so."""
    metric = load_lpips("alex", backbone=backbone)
    model = load_pipeline(spec)
    renderer = Renderer(model, settings)
    ea, eb = encode(model, [prompt_a, prompt_b])
    renderer.free_text_encoders()
    result = PairResult()
    result.notes += [
        f"prompt truncated to the tokenizer's limit ({e.n_tokens} tokens): {shorten(e.prompt)!r}"
        for e in (ea, eb)
        if e.truncated
    ]
    result.notes.append(f"model {describe(model.resolved)}")
    if model.resolved.random_weights:
        result.notes.append("model has random weights; images carry no meaning")
    ts = t_grid(settings.frames)
    a, b = ea.embeds.double(), eb.embeds.double()
    pid = pair_id_for(prompt_a, prompt_b)
    couplings = [
        couple(
            a,
            b,
            m,
            seed=coupling_seed(settings.seed, pid, m, 0),
            structure=pair_blocks(ea.blocks, eb.blocks),
            sinkhorn_reg=sinkhorn_reg,
        )
        for m in methods
    ]
    paths = [
        conditioning_path(ea.embeds, eb.embeds, c, ts, ea.pooled, eb.pooled) for c in couplings
    ]
    rows = torch.cat([path for path, _ in paths])
    pooled = None if paths[0][1] is None else torch.cat([p for _, p in paths if p is not None])
    latents = renderer.initial_latents(latent_seed(settings.seed, pid))
    images = _render(renderer, rows, latents, pooled)
    if not metric.pretrained_backbone:
        result.notes.append("LPIPS backbone is untrained: PPL means little")
    strips = []
    with atomic_dir(out) as tmp:
        for method, c, path_images in zip(
            methods, couplings, np.split(images, len(methods)), strict=True
        ):
            smoothness = path_length(step_distances(metric, path_images, MIN_SIZE))
            strips.append(strip(list(path_images)))
            save_png(tmp / f"{method}.png", strips[-1])
            save_gif(tmp / f"{method}.gif", list(path_images))
            result.paths[method] = (c.cost, smoothness)
        save_png(tmp / "comparison.png", grid(strips, labels=methods))
    return result


def _render(
    renderer: Renderer, rows: torch.Tensor, latents: torch.Tensor, pooled: torch.Tensor | None
) -> np.ndarray:
    """All frames (F, n, d) from the same noise, in batches; the bar advances per step."""
    batch_size = renderer.settings.batch_size
    starts = range(0, len(rows), batch_size)
    with tqdm(
        total=len(starts) * len(renderer.scheduler().timesteps),
        desc=f"render {len(rows)} frames",
        unit="step",
        dynamic_ncols=True,
    ) as bar:
        return np.concatenate(
            [
                renderer.render_batch(
                    rows[i : i + batch_size],
                    latents.expand(len(rows[i : i + batch_size]), -1, -1, -1),
                    None if pooled is None else pooled[i : i + batch_size],
                    on_step=bar.update,
                )
                for i in starts
            ]
        )
