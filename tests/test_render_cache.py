"""The content-addressed frame cache: what a key covers, resuming, damage, atomic writes."""

from __future__ import annotations

import logging
import shutil
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from diffusers import DDIMScheduler
from PIL import Image

from otpc import png
from otpc.embeddings import encode
from otpc.frame_cache import FrameCache, frame_key
from otpc.models import LoadedModel, ModelSpec, load_pipeline
from otpc.params import RenderSettings
from otpc.paths import interpolate
from otpc.render import FrameJob, Renderer, render_missing

STEPS = 2
BASE = RenderSettings(steps=STEPS, guidance=7.5, batch_size=4)


def but(settings: RenderSettings, **changes: object) -> RenderSettings:
    return settings.model_copy(update=changes)


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def path(tiny) -> torch.Tensor:
    """Five frames (t = 0, 0.25, ..., 1) between two real prompt embeddings."""
    a, b = encode(tiny, ["a small boat on a lake", "a mountain in the snow"])
    return interpolate(a.embeds, b.embeds, np.linspace(0, 1, 5))


def key_of(renderer: Renderer, embedding: torch.Tensor, seed: int = 0) -> str:
    assert renderer.key(FrameJob(embedding, seed)) == frame_key(
        renderer.context, (embedding, None), seed
    )
    return renderer.key(FrameJob(embedding, seed))


def test_key_covers_what_decides_pixels(tiny, path):
    base = Renderer(tiny, BASE)
    key = key_of(base, path[1])
    changed = {
        "steps": but(BASE, steps=STEPS + 1),
        "guidance": but(BASE, guidance=5.0),
        "height": but(BASE, height=base.height + 8),
        "width": but(BASE, width=base.width + 8),
    }
    for what, settings in changed.items():
        assert key_of(Renderer(tiny, settings), path[1]) != key, what
    assert key_of(base, path[1], seed=1) != key, "seed"
    assert key_of(base, path[2]) != key, "t (the frame's embedding)"
    perm = torch.randperm(path.shape[1], generator=torch.Generator().manual_seed(0))
    assert key_of(base, path[1][perm]) != key, "permutation"
    for what, res in {
        "model": replace(base.res, label="another-model"),
        "weights": replace(base.res, stamp="0" * 16),
        "revision": replace(base.res, revision="0123abcd"),
        "dtype": replace(base.res, dtype=torch.bfloat16),
    }.items():
        other = Renderer(LoadedModel(tiny.pipe, res), BASE)
        assert key_of(other, path[1]) != key, what
    same = [
        but(BASE, batch_size=1),
        but(BASE, decode_batch_size=1),
        but(BASE, compile=True, compile_mode="max-autotune"),
    ]
    for settings in same:
        assert key_of(Renderer(tiny, settings), path[1]) == key, settings
    assert key_of(Renderer(tiny, BASE), path[1].clone()) == key


def test_key_covers_the_scheduler(path):
    model = load_pipeline(ModelSpec("tiny"))
    key = key_of(Renderer(model, BASE), path[0])
    model.pipe.scheduler = DDIMScheduler.from_config(model.pipe.scheduler.config)
    ddim = key_of(Renderer(model, BASE), path[0])
    assert ddim != key
    model.pipe.scheduler = DDIMScheduler.from_config(model.pipe.scheduler.config, steps_offset=0)
    assert key_of(Renderer(model, BASE), path[0]) not in (key, ddim)


def jobs_of(path: torch.Tensor) -> list[FrameJob]:
    return [FrameJob(frame, 7) for frame in path] + [FrameJob(path[0], 8)]


def stored(cache: FrameCache) -> list[Path]:
    return sorted(p for p in cache.root.rglob("*") if p.is_file())


def test_rerun_renders_only_missing_frames(tiny, path, tmp_path):
    renderer = Renderer(tiny, BASE)
    cache = FrameCache(tmp_path)
    jobs = jobs_of(path) + jobs_of(path)[:2]  # repeated frames are rendered once
    keys, rendered = render_missing(renderer, cache, jobs)
    assert rendered == 6 and len(set(keys)) == 6 and len(keys) == 8
    first = {k: cache.get(k) for k in keys}
    assert all(p.suffix == ".png" for p in stored(cache)) and len(stored(cache)) == 6
    for k in (keys[1], keys[4]):
        cache.path(k).unlink()
    again, rendered = render_missing(renderer, cache, jobs)
    assert again == keys and rendered == 2
    for k in keys:  # re-rendered in other batches: the same pixels
        np.testing.assert_array_equal(cache.get(k), first[k])
    assert render_missing(renderer, cache, jobs)[1] == 0


def truncate(cache: FrameCache, keys: list[str]) -> None:
    damaged = cache.path(keys[2])
    damaged.write_bytes(damaged.read_bytes()[: damaged.stat().st_size // 2])


def swap(cache: FrameCache, keys: list[str]) -> None:
    shutil.copyfile(cache.path(keys[0]), cache.path(keys[2]))  # another valid frame


@pytest.mark.parametrize("damage, message", [(truncate, "truncated"), (swap, "another key")])
def test_damaged_frame_is_reported_and_rendered_again(
    tiny, path, tmp_path, caplog, damage, message
):
    renderer = Renderer(tiny, BASE)
    cache = FrameCache(tmp_path)
    jobs = jobs_of(path)[:3]
    keys, _ = render_missing(renderer, cache, jobs)
    good = cache.get(keys[2])
    damage(cache, keys)
    with pytest.raises(ValueError, match=message):
        cache.get(keys[2])
    with caplog.at_level(logging.WARNING, logger="otpc.frame_cache"):
        _, rendered = render_missing(renderer, cache, jobs)
    assert rendered == 1
    assert any(
        str(cache.path(keys[2])) in r.getMessage() and message in r.getMessage()
        for r in caplog.records
    )
    np.testing.assert_array_equal(cache.get(keys[2]), good)


def test_crash_mid_run_keeps_only_whole_frames_and_resumes(tiny, path, tmp_path):
    """A run that dies after its first batch leaves that batch, and nothing half-written."""

    class DiesInBatchTwo(Renderer):
        calls = 0

        def render(self, jobs: Sequence[FrameJob]) -> np.ndarray:
            DiesInBatchTwo.calls += 1
            if DiesInBatchTwo.calls == 2:
                raise RuntimeError("killed")
            return super().render(jobs)

    cache = FrameCache(tmp_path)
    jobs = jobs_of(path)
    with pytest.raises(RuntimeError, match="killed"):
        render_missing(DiesInBatchTwo(tiny, but(BASE, batch_size=2)), cache, jobs)
    files = stored(cache)
    assert len(files) == 2 and all(p.suffix == ".png" for p in files)
    for p in files:
        assert cache.has(p.stem)
    _keys, rendered = render_missing(Renderer(tiny, but(BASE, batch_size=2)), cache, jobs)
    assert rendered == len(jobs) - 2 and len(stored(cache)) == len(jobs)


def test_foreign_altered_or_unrecorded_entries_are_rejected(tmp_path):
    """An entry is used only if it records its own key and the digest of its pixels."""
    cache = FrameCache(tmp_path)
    dark, light = (np.full((8, 8, 3), v, np.uint8) for v in (10, 200))
    key_a, key_b = "aa" * 16, "bb" * 16
    cache.put(key_a, dark)
    cache.put(key_b, light)
    np.testing.assert_array_equal(cache.get(key_a), dark)

    shutil.copyfile(cache.path(key_b), cache.path(key_a))  # another valid frame swapped in
    with pytest.raises(ValueError, match="holds the frame of another key"):
        cache.read(key_a)
    assert not cache.has(key_a) and not cache.path(key_a).exists()

    pixels, text = png.decode(cache.path(key_b).read_bytes())
    altered = pixels.copy()
    altered[3, 3, 1] ^= 1
    cache.path(key_b).write_bytes(png.encode(altered, text))  # pixels edited, record kept
    with pytest.raises(ValueError, match="not the ones recorded for its key"):
        cache.read(key_b)

    Image.fromarray(light).save(cache.path(key_b))  # a PNG with no record at all
    assert not cache.has(key_b)
