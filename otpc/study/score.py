"""Step 5: LPIPS between consecutive frames; per path its smoothness (``PathLength``).

Each path's distances are cached under a key hashing the metric and its frame files' bytes:
a score is reused only for exactly the images it was computed on, and a killed run resumes
where it stopped. An entry records its key, the metric and the path with the distances, and
a digest of all of it (``otpc.sealed``): an entry that was edited, damaged or copied over
another is reported once, removed and scored again.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterator
from functools import partial
from pathlib import Path

import numpy as np
import polars as pl
from tqdm.auto import tqdm

from otpc import png
from otpc.errors import InputError
from otpc.models import pick_device
from otpc.params import RayParams, ScoreParams
from otpc.perceptual import PathLength, load_lpips, path_length, step_distances
from otpc.sealed import read_sealed, write_sealed
from otpc.study.layout import INDEX, SCORE_CACHE
from otpc.tables import COUPLINGS, FRAMES, PAIRS, SCORES

log = logging.getLogger(__name__)
ENTRY_FORMAT = "2"  # part of every key: entries of an older layout are not looked up


def _cached_steps(entry: Path, key: str, path_id: str) -> list[float] | None:
    """The LPIPS steps cached in ``entry`` for the frames and metric ``key`` names; None if
    there are none, or if the entry fails its checks (reported, naming the path and the file,
    and removed: the path is scored again)."""
    try:
        return read_sealed(entry, {"key": key})["steps"]
    except FileNotFoundError:
        return None
    except InputError as err:
        log.warning("bad score cache entry for path %s, scoring it again: %s", path_id, err)
        entry.unlink(missing_ok=True)
        return None


def _read(files: list[Path]) -> list[bytes]:
    return [f.read_bytes() for f in files]


def _key(cache_id: str, blobs: list[bytes]) -> str:
    """The cache key of a path's distances: a hash of the entry format, the metric and every
    frame file."""
    h = hashlib.sha256(f"{ENTRY_FORMAT} {cache_id}".encode())
    for blob in blobs:
        h.update(hashlib.sha256(blob).digest())
    return h.hexdigest()


def _entry(cache_dir: Path, key: str) -> Path:
    """The file of the cache entry ``key``."""
    return cache_dir / f"{key[:32]}.json"


class PathScorer:
    """LPIPS, loaded once, measuring whole paths from their frame files' bytes (here, or as
    a Ray worker: ``score.backend: ray``)."""

    def __init__(self, params: ScoreParams, device: str) -> None:
        self.metric = load_lpips(params.net, pick_device(device), params.backbone)
        self.params = params

    def about(self) -> tuple[str, str, str]:
        """The metric's tag, what its distances are cached under (with the frames), and the
        device type it runs on."""
        metric = self.metric
        return metric.tag, metric.cache_id(self.params.min_size), metric.device.type

    def steps(self, path: tuple[str, list[str], list[bytes]]) -> tuple[str, list[float]]:
        """(path id, its LPIPS steps) for (path id, its frame files' names and bytes, in
        order); a damaged file is an error naming it."""
        path_id, names, blobs = path
        frames = np.stack(
            [png.decode(blob, name)[0] for name, blob in zip(names, blobs, strict=True)]
        )
        p = self.params
        return path_id, step_distances(self.metric, frames, p.min_size, p.batch_size).tolist()


def score_paths(
    render_dir: Path,
    pairs_path: Path,
    couplings_path: Path,
    params: ScoreParams,
    out: Path,
    cache_dir: Path = SCORE_CACHE,
    device: str = "cpu",
    ray: RayParams | None = None,
) -> tuple[pl.DataFrame, int]:
    """Score every rendered path not in the score cache (here on ``device``, or with
    ``score.backend: ray`` on the cluster ``ray`` names, each worker on its own best device
    for ``device``); write the scores table (one row per path) to ``out``. Returns it and
    how many paths were scored (the others came from the cache)."""
    index = FRAMES.read(render_dir / INDEX)
    if params.backend == "ray":
        from otpc.ray_pool import Workers, agreed, same_device

        workers = Workers(ray or RayParams(), PathScorer, params, device)
        tag, cache_id, where = agreed(workers.ask_all("about"), "metric")
        same_device(where, device)
        measure = partial(workers.map, "steps")
    else:
        scorer = PathScorer(params, device)
        tag, cache_id, _ = scorer.about()
        measure = partial(map, scorer.steps)
    files = {
        path_id: [render_dir / f for f in group["file"].to_list()]
        for (path_id,), group in index.sort("path_id", "k").group_by("path_id", maintain_order=True)
    }
    found: dict[str, list[float]] = {}
    for path_id, paths in files.items():
        key = _key(cache_id, _read(paths))
        steps = _cached_steps(_entry(cache_dir, key), key, path_id)
        if steps is not None:
            found[path_id] = steps
    todo = [path_id for path_id in files if path_id not in found]
    keys: dict[str, str] = {}

    def frames_of_todo() -> Iterator[tuple[str, list[str], list[bytes]]]:
        for path_id in todo:  # read as workers free up; cached under the bytes scored
            blobs = _read(files[path_id])
            keys[path_id] = _key(cache_id, blobs)
            yield path_id, [str(f) for f in files[path_id]], blobs

    for path_id, steps in tqdm(
        measure(frames_of_todo()), total=len(todo), desc=f"score ({params.backend})", unit="path"
    ):
        found[path_id] = steps
        key = keys.pop(path_id)
        write_sealed(
            _entry(cache_dir, key),
            {"key": key, "cache_id": cache_id, "metric": tag, "path_id": path_id, "steps": steps},
        )
    rows = [
        {
            "path_id": path_id,
            **path_length(np.asarray(found[path_id]))._asdict(),
            "frames": len(paths),
            "steps": found[path_id],
        }
        for path_id, paths in files.items()
    ]
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
    return SCORES.write(table, out), len(todo)
