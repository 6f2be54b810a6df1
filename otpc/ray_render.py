"""Rendering on a Ray cluster: the same frames as ``otpc.render.render_frames``, rendered by
workers on any machine of the cluster into a frame cache they all reach (a shared folder or
a URL: ``otpc.frame_cache``).

The driver cuts the missing frames into the batches the local backend would render (the
same frames, in the same order, ``batch_size`` at a time), and each batch goes to one
worker whole: a batch's composition decides its pixels (float32 kernels round by batch
shape), so the same batches give the same bytes. Workers are Ray actors that load the
pipeline once and render with the driver's torch thread count. A worker writes each frame to
the cache as it finishes a batch, and skips frames already there, so a batch retried after
its worker died renders only what is missing, and nothing is written twice. The driver
returns only when every batch is done; the stage then checks the cache for every frame.
Ray is imported only here.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from itertools import islice
from typing import Any

from tqdm.auto import tqdm

from otpc.models import ModelSpec
from otpc.params import RenderSettings
from otpc.render import FrameJob


@dataclass(frozen=True)
class RayCluster:
    """Where and how wide: ``address`` as ``ray.init`` takes it ("auto": a running cluster,
    "local": start one in this process, or ``ray://host:port``), how many workers, and
    what each takes of a node."""

    address: str = "auto"
    workers: int = 2
    cpus_per_worker: float = 1.0
    gpus_per_worker: float = 0.0


def _batches(
    jobs: Iterable[tuple[str, FrameJob]], size: int
) -> Iterator[list[tuple[str, FrameJob]]]:
    iterator = iter(jobs)
    while batch := list(islice(iterator, size)):
        yield batch


def _worker_class(ray: Any) -> Any:
    """The worker actor (built here so that importing this module does not import Ray)."""

    @ray.remote(max_restarts=-1, max_task_retries=3)
    class RenderWorker:
        """Loads the model once; renders whole batches into the shared cache."""

        def __init__(
            self, spec: ModelSpec, settings: RenderSettings, cache_root: str, threads: int
        ) -> None:
            import torch

            from otpc.frame_cache import FrameCache
            from otpc.models import load_pipeline
            from otpc.render import Renderer

            torch.set_num_threads(threads)
            self.renderer = Renderer(load_pipeline(spec), settings)
            self.renderer.free_text_encoders()
            self.cache = FrameCache(cache_root)

        def render(self, batch: list[tuple[str, FrameJob]]) -> int:
            """Render the batch unless all its frames are cached; store the missing ones.
            Returns how many frames this call wrote."""
            missing = [i for i, (key, _) in enumerate(batch) if not self.cache.has(key)]
            if not missing:
                return 0
            images = self.renderer.render([job for _, job in batch])  # whole: same pixels
            for i in missing:
                self.cache.put(batch[i][0], images[i])
            return len(missing)

    return RenderWorker


def render_frames_ray(
    spec: ModelSpec,
    settings: RenderSettings,
    cache_root: str,
    jobs: Iterable[tuple[str, FrameJob]],
    total: int,
    cluster: RayCluster,
    threads: int,
) -> int:
    """Render each ``(key, job)`` into the cache at ``cache_root`` on ``cluster``, in the
    local backend's batches; returns how many frames the workers wrote."""
    import ray

    if not ray.is_initialized():
        ray.init(
            address=None if cluster.address == "local" else cluster.address,
            include_dashboard=False,
            log_to_driver=False,
        )
    worker = _worker_class(ray).options(
        num_cpus=cluster.cpus_per_worker, num_gpus=cluster.gpus_per_worker
    )
    actors = [worker.remote(spec, settings, cache_root, threads) for _ in range(cluster.workers)]
    idle = list(actors)
    running: dict[Any, tuple[Any, int]] = {}  # task -> (its actor, its batch's size)
    written = 0
    with tqdm(total=total, desc="render (ray)", unit="img", disable=not total) as bar:

        def finish_one() -> None:
            nonlocal written
            [done], _ = ray.wait(list(running), num_returns=1)
            actor, size = running.pop(done)
            written += ray.get(done)
            idle.append(actor)
            bar.update(size)

        for batch in _batches(jobs, settings.batch_size):  # at most one batch per worker held
            if not idle:
                finish_one()
            actor = idle.pop()
            running[actor.render.remote(batch)] = (actor, len(batch))
        while running:
            finish_one()
    return written
