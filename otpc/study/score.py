"""Step 5: LPIPS between consecutive frames; per path its smoothness (``PathLength``), under
the primary scoring and each robustness variant (``score.robustness``: another K, net or
size, on the same rendered frames), and the LPIPS distance of its two end frames.

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
from otpc.params import PRIMARY, RayParams, ScoreParams
from otpc.perceptual import PathLength, load_lpips, pair_distances, path_length
from otpc.sealed import read_sealed, write_sealed
from otpc.study.layout import INDEX, SCORE_CACHE
from otpc.tables import COUPLINGS, FRAMES, PAIRS, SCORES

log = logging.getLogger(__name__)
PathFrames = tuple[str, list[str], list[bytes]]  # path id, its frame files' names and bytes
ENDS = "#ends"  # a path's two end frames, scored as a path of their own
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

    def steps(self, paths: list[PathFrames]) -> list[tuple[str, list[float]]]:
        """(path id, its LPIPS steps) for each (path id, its frame files' names and bytes, in
        order): every consecutive pair of the paths measured together, ``batch_size`` at a
        time; a damaged file is an error naming it."""
        frames = [
            np.stack([png.decode(blob, name)[0] for name, blob in zip(names, blobs, strict=True)])
            for _, names, blobs in paths
        ]
        p = self.params
        first = np.concatenate([f[:-1] for f in frames])
        second = np.concatenate([f[1:] for f in frames])
        d = pair_distances(self.metric, first, second, p.min_size, p.batch_size).tolist()
        ends = np.cumsum([0] + [len(f) - 1 for f in frames])
        return [(path_id, d[ends[i] : ends[i + 1]]) for i, (path_id, _, _) in enumerate(paths)]


def _chunks(paths: Iterator[PathFrames], steps: int) -> Iterator[list[PathFrames]]:
    """Consecutive paths in lists of at most ``steps`` LPIPS steps (a longer path alone)."""
    chunk: list[PathFrames] = []
    for path in paths:
        if chunk and sum(len(p[1]) - 1 for p in chunk) + len(path[1]) - 1 > steps:
            yield chunk
            chunk = []
        chunk.append(path)
    if chunk:
        yield chunk


def _stride(params: ScoreParams, rendered: int) -> int:
    """Every how many rendered frames a scored path takes one (``score.frames``)."""
    return 1 if params.frames is None else (rendered - 1) // (params.frames - 1)


def _measure_paths(
    params: ScoreParams,
    device: str,
    ray: RayParams | None,
    paths: dict[str, list[Path]],
    cache_dir: Path,
    desc: str,
) -> tuple[dict[str, list[float]], str, list[str]]:
    """The LPIPS steps of each path of ``paths`` (path id -> its frame files, in order) under
    ``params``, from the score cache or computed (here, or on the Ray cluster ``ray``
    names), once per distinct content; returns them, the metric's tag and the paths whose
    steps were computed (the others came from the cache or share one's content)."""
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
    key = {path_id: _key(cache_id, _read(files)) for path_id, files in paths.items()}
    found: dict[str, list[float]] = {}
    for path_id in paths:
        steps = _cached_steps(_entry(cache_dir, key[path_id]), key[path_id], path_id)
        if steps is not None:
            found[path_id] = steps
    todo: dict[str, str] = {}  # one per distinct content (shared end frames: once a pair)
    for path_id in paths:
        if path_id not in found:
            todo.setdefault(key[path_id], path_id)

    def frames_of_todo() -> Iterator[PathFrames]:
        for path_id in todo.values():  # read as workers free up
            yield path_id, [str(f) for f in paths[path_id]], _read(paths[path_id])

    computed: dict[str, list[float]] = {}
    with tqdm(total=len(todo), desc=desc, unit="path") as bar:
        for done in measure(_chunks(frames_of_todo(), params.batch_size)):
            for path_id, steps in done:
                k = key[path_id]
                computed[k] = steps
                write_sealed(
                    _entry(cache_dir, k),
                    {
                        "key": k,
                        "cache_id": cache_id,
                        "metric": tag,
                        "path_id": path_id,
                        "steps": steps,
                    },
                )
            bar.update(len(done))
    found |= {p: computed[key[p]] for p in paths if p not in found}
    return found, tag, list(todo.values())


def score_paths(
    render_dir: Path,
    pairs_path: Path,
    couplings_path: Path,
    params: ScoreParams,
    out: Path,
    cache_dir: Path = SCORE_CACHE,
    device: str = "cpu",
    ray: RayParams | None = None,
) -> tuple[pl.DataFrame, int, int]:
    """Score every rendered path not in the score cache (here on ``device``, or with
    ``score.backend: ray`` on the cluster ``ray`` names, each worker on its own best device
    for ``device``), under the primary scoring and each robustness variant, with the LPIPS
    distance of its two end frames (primary scoring); write the scores table (one row per
    path and variant) to ``out``. Returns it, how many paths were scored, and of how many
    (paths times scorings; the others came from the cache or share a scored path's frames)."""
    index = FRAMES.read(render_dir / INDEX)
    files = {
        path_id: [render_dir / f for f in group["file"].to_list()]
        for (path_id,), group in index.sort("path_id", "k").group_by("path_id", maintain_order=True)
    }
    rendered = len(next(iter(files.values())))
    parts, scored, measured = [], 0, 0
    for i, variant in enumerate(params.variants()):
        stride = _stride(variant, rendered)
        name = PRIMARY if i == 0 else params.robustness[i - 1].name()
        subpaths = {path_id: paths[::stride] for path_id, paths in files.items()}
        if i == 0:  # a pair's end frames, as a path of two
            subpaths |= {f"{path_id}{ENDS}": [p[0], p[-1]] for path_id, p in files.items()}
        found, tag, computed = _measure_paths(
            variant, device, ray, subpaths, cache_dir, f"score {name} ({variant.backend})"
        )
        scored += sum(not p.endswith(ENDS) for p in computed)
        measured += len(files)
        if i == 0:
            ends = {path_id: found[f"{path_id}{ENDS}"][0] for path_id in files}
        parts.append(
            pl.DataFrame(
                [
                    {
                        "path_id": path_id,
                        **path_length(np.asarray(found[path_id]))._asdict(),
                        "frames": len(subpaths[path_id]),
                        "steps": found[path_id],
                        "end_lpips": ends[path_id],
                        "variant": name,
                        "metric": tag,
                    }
                    for path_id in files
                ],
                schema={
                    "path_id": pl.String,
                    **dict.fromkeys(PathLength._fields, pl.Float64),
                    "frames": pl.Int32,
                    "steps": pl.List(pl.Float64),
                    "end_lpips": pl.Float64,
                    "variant": pl.String,
                    "metric": pl.String,
                },
            )
        )
    couplings = COUPLINGS.read(couplings_path).select(
        "path_id", "pair_id", "method", "replicate", "path_kind", "cost", "degenerate"
    )
    pairs = PAIRS.read(pairs_path).select("pair_id", "score", "group", "rank")
    table = (
        couplings.join(pl.concat(parts), on="path_id", how="inner")
        .join(pairs, on="pair_id")
        .with_columns(
            pl.lit(bool(index["random_weights"][0])).alias("random_weights"),
            pl.lit(index["model"][0]).alias("model"),
        )
        .sort("variant", "pair_id", "method", "replicate")
    )
    return SCORES.write(table, out), scored, measured
