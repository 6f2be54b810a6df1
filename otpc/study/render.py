"""Step 4: render every path's frames; write them with a strip and a GIF per path.

Frames come from the shared content-addressed cache, so a re-run after a crash or after
adding pairs renders only what is missing. The end frames t=0 (A) and t=1 (B) are the same
image for every permutation coupling (row invariance) and are rendered once per pair.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import polars as pl

from otpc import embeddings
from otpc.atomic import atomic_dir, write_with
from otpc.couplings import derive_seed
from otpc.frame_cache import FrameCache
from otpc.images import save_gif, save_png, strip
from otpc.models import ModelSpec, load_pipeline
from otpc.params import RenderParams
from otpc.paths import interpolate, path_frames, t_grid
from otpc.render import FrameJob, Renderer, RenderSettings, render_missing
from otpc.study.couple import coupling_from_row
from otpc.study.embed import load_index

INDEX = "index.parquet"


@dataclass(frozen=True)
class Slot:
    """Where a job's frame goes: (path_id, frame number); ``shared`` ends go to many paths."""

    pair_id: str
    path_ids: tuple[str, ...]
    k: int


def settings_from(params: RenderParams) -> RenderSettings:
    return RenderSettings(steps=params.steps, guidance=params.guidance, height=params.height,
                          width=params.width, batch_size=params.batch_size,
                          decode_batch_size=params.decode_batch_size, compile=params.compile,
                          compile_mode=params.compile_mode)


def latent_seed(seed: int, pair_id: str) -> int:
    """All frames of all paths of a pair share this noise seed."""
    return derive_seed(seed, "latent", pair_id)


def plan_jobs(pairs: pl.DataFrame, couplings: pl.DataFrame, emb_dir: Path, frames: int,
              seed: int) -> Iterator[tuple[Slot, FrameJob]]:
    """Every frame to render, pair by pair, computed lazily (memory bounded by one pair)."""
    ts = t_grid(frames)
    last = frames - 1
    index = load_index(emb_dir)
    by_pair = couplings.partition_by("pair_id", as_dict=True)
    for pid, a_text, b_text in pairs.select("pair_id", "prompt_a", "prompt_b").iter_rows():
        ea, eb = (embeddings.load(emb_dir, index[t]) for t in (a_text, b_text))
        lseed = latent_seed(seed, pid)
        rows = list(by_pair[(pid,)].iter_rows(named=True))
        shared = tuple(r["path_id"] for r in rows if r["permutation"] is not None)
        if shared:
            yield Slot(pid, shared, 0), FrameJob(ea.embeds, lseed, ea.pooled)
            yield Slot(pid, shared, last), FrameJob(eb.embeds, lseed, eb.pooled)
        for row in rows:
            c = coupling_from_row(row)
            path = path_frames(ea.embeds.double(), eb.embeds.double(), c, ts).float()
            # SDXL's pooled vector has no rows: it moves linearly with the same t.
            pooled = (None if ea.pooled is None
                      else interpolate(ea.pooled.double(), eb.pooled.double(), ts).float())
            own = range(1, last) if c.permutation is not None else range(0, frames)
            for k in own:
                yield (Slot(pid, (row["path_id"],), k),
                       FrameJob(path[k], lseed, None if pooled is None else pooled[k]))


def render_study(pairs_path: Path, emb_dir: Path, couplings_path: Path, spec: ModelSpec,
                 params: RenderParams, out: Path) -> pl.DataFrame:
    """Render all paths (only frames missing from the cache) and write ``out`` whole."""
    pairs = pl.read_parquet(pairs_path)
    couplings = pl.read_parquet(couplings_path)
    renderer = Renderer(load_pipeline(spec), settings_from(params))
    cache = FrameCache(Path(params.cache_dir))
    slots: list[Slot] = []

    def jobs() -> Iterator[FrameJob]:
        slots.clear()
        for slot, job in plan_jobs(pairs, couplings, emb_dir, params.frames, params.seed):
            slots.append(slot)
            yield job

    keys, rendered = render_missing(renderer, cache, jobs)
    print(f"render: {rendered} frame(s) rendered, {len(set(keys)) - rendered} from the cache")
    ts = t_grid(params.frames)
    rows = [{"path_id": p, "pair_id": s.pair_id, "k": s.k, "t": float(ts[s.k]), "key": key,
             "file": f"frames/{p}/{s.k:02d}.png"}
            for s, key in zip(slots, keys) for p in s.path_ids]
    index = pl.DataFrame(rows).sort("path_id", "k")
    with atomic_dir(out) as tmp:
        for path_id, group in index.group_by("path_id", maintain_order=True):
            frames = []
            for key, file in group.select("key", "file").iter_rows():
                data, pixels = cache.read(key)  # verified: the pixels recorded for the key
                (tmp / file).parent.mkdir(parents=True, exist_ok=True)
                (tmp / file).write_bytes(data)
                frames.append(pixels)
            save_png(tmp / "strips" / f"{path_id[0]}.png", strip(frames))
            save_gif(tmp / "strips" / f"{path_id[0]}.gif", frames)
        index = index.with_columns(pl.lit(renderer.res.random_weights).alias("random_weights"))
        write_with(tmp / INDEX, index.write_parquet)
    return index
