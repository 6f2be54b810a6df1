"""Ray render throughput: the same frames rendered by the local backend and by the Ray
backend on 1 and 2 workers, in one run, on this machine.

Every configuration renders the same jobs (frames of interpolation paths between prompt
pairs, ``benchmarks/render.py``'s) into an empty frame cache, in batches of
``--batch-size``, in fresh processes with one torch thread each (a Ray worker takes one CPU
and Ray gives it one thread; the local backend runs in a process started the same way). It
prints, per configuration, the start-up (Ray: connecting and every worker loading the
model; local: loading it), frames/s while rendering, and whether the frames are the local
backend's bytes; then Ray's overhead per frame (1 worker against local) and the costs per
frame that do not shrink with more GPUs (a frame's key; reading and verifying one cached
frame, as the stage does before and after rendering, at the rendered size and at 512 px; a
worker's PNG encoding; the driver's strip and GIF of a path), from which the README
predicts N GPUs.

Models: ``tiny`` (the offline tiny model) or ``sd15`` (SD 1.5's U-Net, VAE and CLIP width
with random weights, saved as a diffusers folder so that workers load it the standard way;
3.4 GB in float32). Weights do not change speed.

  python benchmarks/ray_render.py --arch tiny --steps 4 --frames 8 --paths 4 --batch-size 4
  python benchmarks/ray_render.py --arch sd15 --size 64 --steps 2 --frames 4 --paths 2 \
      --batch-size 2
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import torch
from render import build_sd15, make_paths  # benchmarks/render.py

from otpc import png
from otpc.frame_cache import FrameCache
from otpc.images import save_gif, save_png, strip
from otpc.models import LoadedModel, ModelSpec, load_pipeline
from otpc.params import RayParams, RenderSettings
from otpc.ray_pool import Workers
from otpc.ray_render import RenderWorker, render_frames_ray
from otpc.render import FrameJob, Renderer, job_key, render_frames


def timed(fn: Callable[[], object]) -> tuple[float, object]:
    start = time.perf_counter()
    out = fn()
    return time.perf_counter() - start, out


def model_spec(arch: str, folder: Path) -> ModelSpec:
    """The spec workers load: the tiny preset, or SD 1.5's shapes saved under ``folder``."""
    if arch == "tiny":
        return ModelSpec("tiny", dtype="float32", device="cpu")
    build_sd15(torch.device("cpu"), torch.float32).pipe.save_pretrained(
        folder, safe_serialization=True
    )
    return ModelSpec(str(folder), dtype="float32", device="cpu")


def cached_bytes(cache: FrameCache, keys: list[str]) -> list[bytes]:
    return [cache.read(key)[0] for key in keys]


def run_local(
    spec: ModelSpec, settings: RenderSettings, jobs: list[tuple[str, FrameJob]], root: Path
) -> tuple[float, float]:
    """(start-up s, render s) for the local backend, in this process."""
    start, model = timed(lambda: load_pipeline(spec))
    assert isinstance(model, LoadedModel)
    renderer = Renderer(model, settings)
    cache = FrameCache(root)
    seconds, _ = timed(lambda: render_frames(renderer, cache, iter(jobs), len(jobs)))
    return start, seconds


def in_fresh_process(fn: Callable[..., tuple[float, float]], *args: object) -> tuple[float, float]:
    """``fn(*args)`` in a new Python process (one torch thread, as a Ray worker starts)."""
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=1, mp_context=context) as pool:
        return pool.submit(fn, *args).result()


def run_ray(
    spec: ModelSpec,
    settings: RenderSettings,
    jobs: list[tuple[str, FrameJob]],
    root: Path,
    workers: int,
) -> tuple[float, float, FrameCache]:
    """(start-up s, render s, cache) for the Ray backend on ``workers`` one-CPU workers."""
    import ray

    cluster = RayParams(address="local", workers=workers, cpus_per_worker=1)
    start, pool = timed(lambda: Workers(cluster, RenderWorker, spec, settings, str(root)))
    assert isinstance(pool, Workers)
    up, _ = timed(lambda: pool.ask_all("about", "0" * 32))  # every worker has its model
    n, size = len(jobs), settings.batch_size
    seconds, _ = timed(lambda: render_frames_ray(pool, iter(jobs), n, size))
    for actor in pool.actors:
        ray.kill(actor)
    return start + up, seconds, FrameCache(root)


def driver_costs(context: str, job: FrameJob, image: np.ndarray, root: Path) -> list[str]:
    """What the driver spends per frame: its key, and reading and verifying its file."""
    key_s = min(timed(lambda: job_key(context, job))[0] for _ in range(50))
    lines = [f"driver: key of one frame {key_s * 1e3:.2f} ms"]
    side = 512
    smooth = np.linspace(0, 255, side * side * 3).reshape(side, side, 3)
    noise = np.random.default_rng(0).integers(0, 32, (side, side, 3))
    for name, pixels in (("rendered", image), ("512 px", (smooth + noise) % 256)):
        cache = FrameCache(root / name.replace(" ", ""))
        cache.put("ab" * 16, pixels.astype(np.uint8))
        read_s = min(timed(lambda c=cache: c.read("ab" * 16))[0] for _ in range(20))
        size_kb = len(cache.path("ab" * 16).read_bytes()) / 1e3
        lines.append(
            f"driver: read + verify one {name} frame ({size_kb:.0f} kB PNG) {read_s * 1e3:.2f} ms"
        )
    frame = ((smooth + noise) % 256).astype(np.uint8)
    encode_s = min(timed(lambda: png.encode(frame))[0] for _ in range(5))
    lines.append(f"worker: PNG-encode one 512 px frame {encode_s * 1e3:.1f} ms")
    path = [np.roll(frame, 8 * k, axis=1) for k in range(17)]
    tail_s = min(
        timed(lambda: (save_png(root / "s.png", strip(path)), save_gif(root / "p.gif", path)))[0]
        for _ in range(3)
    )
    lines.append(
        f"driver: strip + GIF of a 17-frame 512 px path {tail_s * 1e3:.0f} ms "
        f"({tail_s / 17 * 1e3:.1f} ms per frame)"
    )
    return lines


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--arch", choices=["tiny", "sd15"], default="tiny")
    ap.add_argument("--size", type=int, default=None, help="image side (default: the model's)")
    ap.add_argument("--steps", type=int, default=4)
    ap.add_argument("--frames", type=int, default=8, help="frames per path")
    ap.add_argument("--paths", type=int, default=4)
    ap.add_argument("--batch-size", type=int, default=4)
    ap.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    args = ap.parse_args()
    os.environ["OMP_NUM_THREADS"] = "1"  # the local process's too, as Ray sets its workers'

    import ray

    torch.set_num_threads(1)
    ray.init(num_cpus=max(args.workers), include_dashboard=False, log_to_driver=False)
    with tempfile.TemporaryDirectory(prefix="otpc-ray-bench-") as tmp:
        work = Path(tmp)
        spec = model_spec(args.arch, work / "model")
        settings = RenderSettings(
            steps=args.steps, height=args.size, width=args.size, batch_size=args.batch_size
        )
        model = load_pipeline(spec)
        renderer = Renderer(model, settings)
        frames = make_paths(model, args.paths, args.frames, seed=0)
        jobs = [(renderer.key(job), job) for job in frames]
        keys = [key for key, _ in jobs]
        print(
            f"{args.arch}: {len(jobs)} frames of {renderer.width} px, {renderer.steps} steps, "
            f"guidance {renderer.guidance:g}, batches of {args.batch_size}, float32, CPU, "
            "one torch thread per process"
        )
        del model, renderer
        start, local_s = in_fresh_process(run_local, spec, settings, jobs, work / "local")
        reference = cached_bytes(FrameCache(work / "local"), keys)
        rate = {0: len(jobs) / local_s}
        print(f"local   : start {start:6.1f} s, {rate[0]:7.2f} frames/s")
        for n in args.workers:
            start, seconds, cache = run_ray(spec, settings, jobs, work / f"ray{n}", n)
            same = cached_bytes(cache, keys) == reference
            rate[n] = len(jobs) / seconds
            print(
                f"ray x{n:<3d}: start {start:6.1f} s, {rate[n]:7.2f} frames/s "
                f"({rate[n] / rate[0]:.2f} x local), same bytes as local: {same}"
            )
        if 1 in rate:
            overhead = 1 / rate[1] - 1 / rate[0]
            print(f"ray overhead per frame (1 worker against local): {overhead * 1e3:+.1f} ms")
        model = load_pipeline(spec)
        renderer = Renderer(model, settings)
        first = cache.read(keys[0])[1]
        for line in driver_costs(renderer.context, frames[0], first, work / "driver"):
            print(line)
        shutil.rmtree(work / "model", ignore_errors=True)


if __name__ == "__main__":
    main()
