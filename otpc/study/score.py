"""Step 5: LPIPS between consecutive frames; per path its smoothness (``PathLength``).

Each path's distances are cached under a hash of the metric and of its frame files' bytes:
a score is reused only for exactly the images it was computed on, and a killed run resumes
where it stopped.
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path

import numpy as np
import polars as pl
import torch
from tqdm.auto import tqdm

from otpc import png
from otpc.atomic import write_json
from otpc.params import ScoreParams
from otpc.perceptual import PathLength, load_lpips, path_length, step_distances
from otpc.study.layout import INDEX, SCORE_CACHE
from otpc.tables import COUPLINGS, FRAMES, PAIRS, SCORES

log = logging.getLogger(__name__)


def _cached_steps(path: Path, expected: int) -> list[float] | None:
    """A path's cached LPIPS steps; a damaged entry is reported and scored again."""
    try:
        steps = json.loads(path.read_text())["steps"]
    except FileNotFoundError:
        return None
    except (json.JSONDecodeError, KeyError, TypeError) as err:
        log.warning("corrupt score cache entry %s (%s), scoring it again", path, err)
        return None
    if len(steps) != expected:
        log.warning(
            "score cache entry %s has %d steps, expected %d; scoring it again",
            path,
            len(steps),
            expected,
        )
        return None
    return steps


def _entry(cache_dir: Path, metric_id: str, blobs: list[bytes]) -> Path:
    """The cache file of a path's distances: a hash of the metric and of every frame file."""
    h = hashlib.sha256(metric_id.encode())
    for blob in blobs:
        h.update(hashlib.sha256(blob).digest())
    return cache_dir / f"{h.hexdigest()[:32]}.json"


def score_paths(
    render_dir: Path,
    pairs_path: Path,
    couplings_path: Path,
    params: ScoreParams,
    out: Path,
    cache_dir: Path = SCORE_CACHE,
    device: torch.device | str = "cpu",
) -> tuple[pl.DataFrame, int]:
    """Score every rendered path; write the scores table (one row per path) to ``out``.
    Returns it and how many paths were scored (the others came from the cache)."""
    index = FRAMES.read(render_dir / INDEX)
    metric = load_lpips(params.net, device, params.backbone)
    tag = metric.tag
    metric_id = f"{tag}:{metric.dtype}:{params.min_size}px"
    rows = []
    scored = 0
    paths = index.sort("path_id", "k").group_by("path_id", maintain_order=True)
    for (path_id,), group in tqdm(
        paths, total=index["path_id"].n_unique(), desc="score", unit="path"
    ):
        files = [render_dir / f for f in group["file"].to_list()]
        blobs = [f.read_bytes() for f in files]
        entry = _entry(cache_dir, metric_id, blobs)
        steps = _cached_steps(entry, len(files) - 1)
        if steps is None:
            frames = np.stack(
                [png.decode(blob, f)[0] for f, blob in zip(files, blobs, strict=True)]
            )
            steps = step_distances(metric, frames, params.min_size, params.batch_size).tolist()
            scored += 1
            write_json(entry, {"path_id": path_id, "metric": tag, "steps": steps})
        rows.append(
            {
                "path_id": path_id,
                **path_length(np.asarray(steps))._asdict(),
                "frames": len(files),
                "steps": steps,
            }
        )
    scores = pl.DataFrame(
        rows,
        schema={
            "path_id": pl.String,
            **dict.fromkeys(PathLength._fields, pl.Float64),
            "frames": pl.Int32,
            "steps": pl.List(pl.Float64),
        },
    )
    couplings = COUPLINGS.read(couplings_path).select(
        "path_id", "pair_id", "method", "replicate", "path_kind", "cost", "degenerate"
    )
    pairs = PAIRS.read(pairs_path).select("pair_id", "score", "group")
    table = (
        couplings.join(scores, on="path_id", how="inner")
        .join(pairs, on="pair_id")
        .with_columns(
            pl.lit(tag).alias("metric"),
            pl.lit(bool(index["random_weights"][0])).alias("random_weights"),
            pl.lit(index["model"][0]).alias("model"),
        )
        .sort("pair_id", "method", "replicate")
    )
    return SCORES.write(table, out), scored
