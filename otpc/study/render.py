"""Step 4: render every path's frames, then copy them into the stage's output folder.

One plan lists every distinct frame of the study with its cache key (pair by pair, so memory
holds one pair's paths); only the frames missing from the content-addressed cache are
rendered, their conditioning rebuilt pair by pair, so a re-run after a crash or after adding
pairs renders only what is missing. The end frames t=0 (A) and t=1 (B) are the same image for
every permutation coupling (row invariance) and are rendered once per pair.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import polars as pl

from otpc import embeddings
from otpc.atomic import atomic_dir
from otpc.errors import InputError
from otpc.frame_cache import FrameCache
from otpc.images import save_gif, save_png, strip
from otpc.models import ModelSpec, Resolved, describe, load_pipeline
from otpc.params import RayParams, RenderParams
from otpc.paths import conditioning_path, t_grid
from otpc.render import FrameJob, Renderer, job_key, missing_keys, render_frames
from otpc.seeds import latent_seed
from otpc.study.couple import coupling_from_row
from otpc.study.embed import load_index
from otpc.study.layout import INDEX
from otpc.tables import COUPLINGS, FRAMES, PAIRS

if TYPE_CHECKING:
    from otpc.ray_pool import Workers


@dataclass(frozen=True)
class PlannedFrame:
    """One distinct image of the study: the paths that show it (all permutation paths of a
    pair share its end frames), its frame number and its cache key."""

    pair_id: str
    path_ids: tuple[str, ...]
    k: int
    key: str


def pair_jobs(
    pair_id: str,
    couplings: pl.DataFrame,
    ea: embeddings.PromptEmbedding,
    eb: embeddings.PromptEmbedding,
    frames: int,
    seed: int,
) -> Iterator[tuple[tuple[str, ...], int, FrameJob]]:
    """Every distinct frame of one pair's paths: (paths that show it, k, job)."""
    ts = t_grid(frames)
    last = frames - 1
    lseed = latent_seed(seed, pair_id)
    rows = list(couplings.iter_rows(named=True))
    shared = tuple(r["path_id"] for r in rows if r["permutation"] is not None)
    if shared:
        yield shared, 0, FrameJob(ea.embeds, lseed, ea.pooled)
        yield shared, last, FrameJob(eb.embeds, lseed, eb.pooled)
    for row in rows:
        coupling = coupling_from_row(row)
        path, pooled = conditioning_path(ea.embeds, eb.embeds, coupling, ts, ea.pooled, eb.pooled)
        own = range(1, last) if coupling.permutation is not None else range(frames)
        for k in own:
            yield (
                (row["path_id"],),
                k,
                FrameJob(path[k], lseed, None if pooled is None else pooled[k]),
            )


def _jobs_by_pair(
    pairs: pl.DataFrame, couplings: pl.DataFrame, emb_dir: Path, frames: int, seed: int
) -> Iterator[tuple[str, Iterator[tuple[tuple[str, ...], int, FrameJob]]]]:
    """(pair id, its frames' jobs) for each pair, the pair's embeddings read when reached."""
    index = load_index(emb_dir)
    by_pair = couplings.partition_by("pair_id", as_dict=True)
    for pid, a_text, b_text in pairs.select("pair_id", "prompt_a", "prompt_b").iter_rows():
        ea, eb = (embeddings.load(emb_dir, index[text]) for text in (a_text, b_text))
        yield pid, pair_jobs(pid, by_pair[(pid,)], ea, eb, frames, seed)


def plan_frames(
    pairs: pl.DataFrame,
    couplings: pl.DataFrame,
    emb_dir: Path,
    frames: int,
    seed: int,
    key: Callable[[FrameJob], str],
) -> list[PlannedFrame]:
    """Every distinct frame of the study with its cache key ``key(job)``, pair by pair."""
    return [
        PlannedFrame(pid, path_ids, k, key(job))
        for pid, jobs in _jobs_by_pair(pairs, couplings, emb_dir, frames, seed)
        for path_ids, k, job in jobs
    ]


def render_study(
    pairs_path: Path,
    emb_dir: Path,
    couplings_path: Path,
    spec: ModelSpec,
    params: RenderParams,
    out: Path,
    ray: RayParams | None = None,
) -> tuple[pl.DataFrame, int]:
    """Render the frames missing from the cache (here, or with ``render.backend: ray`` on the
    cluster ``ray`` names), then write ``out`` whole: every path's frames, a strip and a GIF
    per path, and the frames index. Returns the index and how many frames were rendered."""
    pairs, couplings = PAIRS.read(pairs_path), COUPLINGS.read(couplings_path)
    cache = FrameCache(params.cache_dir)
    render: Callable[[Iterator[tuple[str, FrameJob]], int], object]
    if params.backend == "ray":  # workers load the model; their keys are the plan's
        from otpc.ray_pool import Workers
        from otpc.ray_render import RenderWorker, render_frames_ray

        workers = Workers(ray or RayParams(), RenderWorker, spec, params, params.cache_dir)
        context, res = _about_workers(workers, cache, spec)
        render = partial(render_frames_ray, workers, batch_size=params.batch_size)
    else:
        renderer = Renderer(load_pipeline(spec), params)
        renderer.free_text_encoders()  # the prompts were encoded by `embed`
        context, res = renderer.context, renderer.res
        render = partial(render_frames, renderer, cache)
    key = partial(job_key, context)
    plan = plan_frames(pairs, couplings, emb_dir, params.frames, params.seed, key)
    missing = missing_keys(cache, (frame.key for frame in plan))
    todo = set(missing)
    by_pair: dict[str, list[PlannedFrame]] = {}
    for frame in plan:
        by_pair.setdefault(frame.pair_id, []).append(frame)

    def missing_jobs() -> Iterator[tuple[str, FrameJob]]:
        """The jobs of the missing frames, rebuilt pair by pair in plan order."""
        wanted = pairs.filter(pl.col("pair_id").is_in([f.pair_id for f in plan if f.key in todo]))
        for pid, jobs in _jobs_by_pair(wanted, couplings, emb_dir, params.frames, params.seed):
            for frame, (_, _, job) in zip(by_pair[pid], jobs, strict=True):
                if frame.key in todo:
                    todo.discard(frame.key)
                    yield frame.key, job

    render(missing_jobs(), len(missing))
    index = _write_render_folder(plan, cache, params.frames, res, out)
    return index, len(missing)


def _about_workers(workers: Workers, cache: FrameCache, spec: ModelSpec) -> tuple[str, Resolved]:
    """The context and model the Ray workers render with, the same on every worker, on the
    device type ``model.device`` names here; ``InputError`` if a worker cannot reach the
    cache."""
    from otpc.ray_pool import agreed, same_device

    probe = uuid.uuid4().hex
    cache.put(probe, np.zeros((1, 1, 3), np.uint8))
    try:
        answers = workers.ask_all("about", probe)
    finally:
        cache.remove(probe)
    if not all(reaches for _, _, reaches in answers):
        raise InputError(
            f"render.cache_dir {str(cache.root)!r}: some Ray workers do not find what this "
            "machine writes there; it must be a folder every node mounts, or a URL"
        )
    context = agreed([context for context, _, _ in answers], "model or settings")
    res = answers[0][1]  # the same model (its fingerprint is in the context), maybe elsewhere
    same_device(res.device.type, spec.device)
    return context, res


def _write_render_folder(
    plan: list[PlannedFrame], cache: FrameCache, frames: int, res: Resolved, out: Path
) -> pl.DataFrame:
    """Copy each path's frames (verified) from the cache into ``out``, with its strip and GIF
    and the frames index, several paths at once; ``out`` is replaced whole."""
    ts = t_grid(frames)
    model = describe(res)
    rows = [
        {
            "path_id": p,
            "pair_id": f.pair_id,
            "k": f.k,
            "t": float(ts[f.k]),
            "key": f.key,
            "file": f"frames/{p}/{f.k:02d}.png",
            "random_weights": res.random_weights,
            "model": model,
        }
        for f in plan
        for p in f.path_ids
    ]
    index = FRAMES.frame(rows).sort("path_id", "k")

    def write_path(path_id: str, group: pl.DataFrame, tmp: Path) -> None:
        images = []
        for key, file in group.select("key", "file").iter_rows():
            try:
                data, pixels = cache.read(key)  # verified: the pixels recorded for the key
            except FileNotFoundError:
                raise RuntimeError(f"frame {key} ({file}) is not in {cache.root}") from None
            (tmp / file).parent.mkdir(parents=True, exist_ok=True)
            (tmp / file).write_bytes(data)
            images.append(pixels)
        save_png(tmp / "strips" / f"{path_id}.png", strip(images))
        save_gif(tmp / "strips" / f"{path_id}.gif", images)

    with (
        atomic_dir(out) as tmp,
        ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool,
    ):  # paths in parallel: reading (a URL cache) and PNG/GIF coding release the GIL
        groups = index.group_by("path_id", maintain_order=True)
        done = [pool.submit(write_path, path_id, group, tmp) for (path_id,), group in groups]
        try:
            for future in done:
                future.result()
        except BaseException:
            pool.shutdown(cancel_futures=True)
            raise
        return FRAMES.write(index, tmp / INDEX)
