"""The Ray backend renders the local backend's frames, byte for byte (float32, CPU, one
torch thread), with a local Ray cluster of two workers; a second run writes nothing."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from otpc.embeddings import encode
from otpc.frame_cache import FrameCache
from otpc.models import ModelSpec, load_pipeline
from otpc.params import RenderSettings
from otpc.render import FrameJob, Renderer, render_frames

ray = pytest.importorskip("ray")
pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("one_thread")]


@pytest.fixture(scope="module")
def cluster():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


def test_ray_frames_equal_local_frames(cluster, tmp_path: Path) -> None:
    from otpc.ray_render import RayCluster, render_frames_ray

    spec = ModelSpec("tiny", dtype="float32")
    settings = RenderSettings(steps=2, batch_size=4)
    model = load_pipeline(spec)
    renderer = Renderer(model, settings)
    a, b = (e.embeds for e in encode(model, ["a red fox", "a lighthouse at dusk"]))
    jobs = [FrameJob((1 - k / 9) * a + k / 9 * b, latent_seed=k % 3) for k in range(10)]
    keyed = [(renderer.key(job), job) for job in jobs]
    local, remote = FrameCache(tmp_path / "local"), FrameCache(tmp_path / "ray")
    render_frames(renderer, local, keyed, len(keyed))
    workers = RayCluster(address="auto", workers=2)
    threads = torch.get_num_threads()
    written = render_frames_ray(spec, settings, str(remote.root), keyed, 10, workers, threads)
    assert written == 10
    for key, _ in keyed:
        assert remote.path(key).read_bytes() == local.path(key).read_bytes()
    again = render_frames_ray(spec, settings, str(remote.root), keyed, 10, workers, threads)
    assert again == 0  # every frame found in the cache: nothing rendered twice
