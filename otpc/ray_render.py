"""Rendering on a Ray cluster (``render.backend: ray``): the same frames as
``otpc.render.render_frames``, rendered by workers on any node into a frame cache they all
reach (``otpc.frame_cache``: a folder every node mounts, or a URL).

Every worker reports the context its frames' keys hash (model, revision, dtype, device type,
settings; ``Renderer.context``), so the driver plans with the keys of the frames the workers
will make, without loading the model itself; workers that disagree are an error. The driver
cuts the missing frames into the local backend's batches (the same frames in the same
order, ``batch_size`` at a time) and sends each batch whole to one worker: float32 kernels
round by batch shape, so the same batches give the same bytes. A worker recomputes each
frame's key (a node whose otpc or model differs is refused), renders the batch whole and
writes the frames it does not find in the cache, so a batch retried after its worker died
writes only what the dead one had not, and nothing is written twice. Before any work the
driver writes a probe entry that every worker must find: a cache folder that some node
does not share is refused at once.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor

from tqdm.auto import tqdm

from otpc.frame_cache import FrameCache
from otpc.models import ModelSpec, Resolved, load_pipeline
from otpc.params import RenderSettings
from otpc.ray_pool import Workers
from otpc.render import FrameJob, Renderer, batches


class RenderWorker:
    """One render worker: loads the model once and renders whole batches into the cache."""

    def __init__(self, spec: ModelSpec, settings: RenderSettings, cache: str) -> None:
        self.renderer = Renderer(load_pipeline(spec), settings)
        self.renderer.free_text_encoders()
        self.cache = FrameCache(cache)

    def about(self, probe: str) -> tuple[str, Resolved, bool]:
        """The context this worker's frame keys hash, the model it resolved, and whether it
        finds the cache entry ``probe`` (which the driver has just written)."""
        return self.renderer.context, self.renderer.res, self.cache.has(probe)

    def render(self, batch: list[tuple[str, FrameJob]]) -> int:
        """Render the batch (whole: its pixels depend on its composition) unless all its
        frames are cached; store the missing ones. Returns the batch's size."""
        for key, job in batch:
            if self.renderer.key(job) != key:
                raise RuntimeError(
                    f"Ray worker on {os.uname().nodename}: frame {key} has key "
                    f"{self.renderer.key(job)} here: this node's otpc differs from the driver's"
                )
        missing = [i for i, (key, _) in enumerate(batch) if not self.cache.has(key)]
        if missing:
            images = self.renderer.render([job for _, job in batch])
            with ThreadPoolExecutor(max_workers=min(4, len(missing))) as pool:
                list(pool.map(lambda i: self.cache.put(batch[i][0], images[i]), missing))
        return len(batch)


def render_frames_ray(
    workers: Workers, jobs: Iterable[tuple[str, FrameJob]], total: int, batch_size: int
) -> None:
    """Render each ``(key, job)`` on ``workers`` (``RenderWorker``s) into their cache, in
    the local backend's batches of ``batch_size``."""
    with tqdm(total=total, desc="render (ray)", unit="img", disable=not total) as bar:
        for size in workers.map("render", batches(jobs, batch_size)):
            bar.update(size)
