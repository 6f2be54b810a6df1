"""Each path of a study as an MLflow child run of the study's run, its frames logged once.

A child run is named for its method and its prompts (``ot: a dog on a … → a cat on a …``) and
carries a few params (pair, method, replicate, group, prompts), the path's measures as
metrics (``cost``, ``ppl``, ``ppl_norm``, ``length``, ``max_step``; the LPIPS step between
frames k-1 and k as ``lpips_step`` at step k) and its frames as images (key ``frames``,
step = frame index) with its strip.

Frames are logged once per content. Rendering is deterministic, so a frame's cache key
(the frames index's ``key``) names its content, and a path's ``frames_digest`` (the hash of
its keys in order) names the content of all its frames. A path whose digest a finished child
run of the experiment already logged does not log its frames again: its run's tag
``otpc.frames_run`` and its description point to the run that holds them.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any, NamedTuple

import polars as pl
from tqdm.auto import tqdm

from otpc import png

PARENT_TAG = "mlflow.parentRunId"
NOTE_TAG = "mlflow.note.content"  # the run's description (markdown)
PATH_TAG = "otpc.path_id"
DIGEST_TAG = "otpc.frames_digest"
FRAMES_RUN_TAG = "otpc.frames_run"  # the run whose images are this path's frames
IMAGE_KEY = "frames"
MEASURES = ("cost", "ppl", "ppl_norm", "length", "max_step")
PROMPT_PARAM_CHARS = 500  # MLflow keeps params' values short


class PathsLogged(NamedTuple):
    """What ``log_paths`` did: child runs created, and paths whose frames it logged or
    found already logged."""

    runs: int
    frames_logged: int
    frames_reused: int


def frames_digest(keys: Iterable[str]) -> str:
    """The content of a path's frames: a hash of their cache keys in frame order."""
    return hashlib.sha256("\n".join(keys).encode()).hexdigest()[:16]


def shorten(text: str, chars: int) -> str:
    """``text`` on one line, cut to ``chars`` characters with an ellipsis."""
    text = " ".join(text.split())
    return text if len(text) <= chars else text[: chars - 1].rstrip() + "…"


def run_name(method: str, replicate: int | None, prompt_a: str, prompt_b: str) -> str:
    """``ot: a dog on a … → a cat on a …``; a stochastic method's replicate after its name."""
    label = method if replicate is None else f"{method} {replicate}"
    return f"{label}: {shorten(prompt_a, 24)} → {shorten(prompt_b, 24)}"


def logged_digests(client: Any, experiment_id: str) -> dict[str, str]:
    """Frames digest -> id of the finished child run of the experiment that logged them."""
    found: dict[str, str] = {}
    token = None
    while True:
        page = client.search_runs(
            [experiment_id],
            filter_string=f"tags.`{FRAMES_RUN_TAG}` = 'self' and attributes.status = 'FINISHED'",
            max_results=1000,
            page_token=token,
        )
        for run in page:
            found.setdefault(run.data.tags[DIGEST_TAG], run.info.run_id)
        token = page.token
        if not token:
            return found


def path_table(pairs: pl.DataFrame, scores: pl.DataFrame, frames: pl.DataFrame) -> pl.DataFrame:
    """One row per path: its scores, its pair's prompts, and its frames' keys in order."""
    keys = frames.sort("k").group_by("path_id", maintain_order=True).agg("key", "file")
    stochastic = scores.group_by("method").agg(pl.col("replicate").n_unique() > 1)
    return (
        scores.join(pairs.select("pair_id", "prompt_a", "prompt_b"), on="pair_id")
        .join(keys, on="path_id")
        .join(stochastic.rename({"replicate": "stochastic"}), on="method")
        .sort("pair_id", "method", "replicate")
    )


def log_paths(
    client: Any,
    experiment_id: str,
    parent: Any,
    tags: dict[str, str],
    paths: pl.DataFrame,
    render_dir: Path,
    created: list[str],
) -> PathsLogged:
    """A RUNNING child run of ``parent`` per row of ``paths`` (``path_table``), with
    ``tags``; frames logged unless the experiment holds them. Each run's id is appended to
    ``created`` as soon as it exists, for the caller to end them all (FINISHED once the
    whole study is logged, FAILED if anything fails)."""
    logged = logged_digests(client, experiment_id)
    new = reused = 0
    for row in tqdm(paths.iter_rows(named=True), total=len(paths), desc="mlflow", unit="path"):
        digest = frames_digest(row["key"])
        holder = logged.get(digest)
        replicate = row["replicate"] if row["stochastic"] else None
        run_tags = tags | {
            PARENT_TAG: parent.info.run_id,
            PATH_TAG: row["path_id"],
            DIGEST_TAG: digest,
            FRAMES_RUN_TAG: holder or "self",
        }
        if holder:
            run_tags[NOTE_TAG] = (
                f"Frames: the same images as run [{holder}](#/experiments/{experiment_id}"
                f"/runs/{holder}), which logged them (logged once per content)."
            )
        run = client.create_run(
            experiment_id,
            run_name=run_name(row["method"], replicate, row["prompt_a"], row["prompt_b"]),
            tags=run_tags,
        )
        created.append(run.info.run_id)
        _log_measures(client, run.info.run_id, row)
        if holder:
            reused += 1
            continue
        for k, file in enumerate(row["file"]):
            client.log_image(run.info.run_id, png.read(render_dir / file), key=IMAGE_KEY, step=k)
        client.log_artifact(run.info.run_id, str(render_dir / "strips" / f"{row['path_id']}.png"))
        logged[digest] = run.info.run_id
        new += 1
    return PathsLogged(len(paths), new, reused)


def _log_measures(client: Any, run_id: str, row: dict[str, Any]) -> None:
    """A path's params and metrics, in one call."""
    from mlflow.entities import Metric, Param

    params = {
        "pair": row["pair_id"],
        "method": row["method"],
        "replicate": str(row["replicate"]),
        "group": row["group"],
        "prompt_a": shorten(row["prompt_a"], PROMPT_PARAM_CHARS),
        "prompt_b": shorten(row["prompt_b"], PROMPT_PARAM_CHARS),
    }
    now = int(time.time() * 1000)
    metrics = [Metric(m, float(row[m]), now, 0) for m in MEASURES if row[m] is not None]
    metrics += [Metric("lpips_step", float(d), now, k) for k, d in enumerate(row["steps"], 1)]
    client.log_batch(
        run_id,
        metrics=metrics,
        params=[Param(k, str(v)) for k, v in params.items()],
        synchronous=True,
    )
