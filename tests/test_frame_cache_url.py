"""The frame cache at a URL (S3, against the moto server the tests start): the same
verified, atomic entries as a local folder, and the same frames as a local cache."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from otpc import png
from otpc.frame_cache import FrameCache
from otpc.params import RenderSettings
from otpc.render import FrameJob, Renderer, render_missing
from tests.servers import moto_server

BUCKET = "otpc-frames-test"


@pytest.fixture(scope="module")
def s3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A bucket on a moto S3 server; the environment points fsspec and boto at it."""
    with moto_server(tmp_path_factory.mktemp("moto")) as url:
        saved = dict(os.environ)
        os.environ.update(
            AWS_ACCESS_KEY_ID="testing",
            AWS_SECRET_ACCESS_KEY="testing",
            AWS_DEFAULT_REGION="us-east-1",
            AWS_ENDPOINT_URL_S3=url,
        )
        import s3fs

        s3fs.S3FileSystem.clear_instance_cache()
        s3fs.S3FileSystem(endpoint_url=url).mkdir(BUCKET)
        try:
            yield f"s3://{BUCKET}"
        finally:
            os.environ.clear()
            os.environ.update(saved)
            s3fs.S3FileSystem.clear_instance_cache()


def image(seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (8, 8, 3), dtype=np.uint8)


def test_entries_round_trip_and_leave_no_temporary_keys(s3: str) -> None:
    cache = FrameCache(f"{s3}/roundtrip")
    assert not cache.has("ab" * 16)
    cache.put("ab" * 16, image(1))
    np.testing.assert_array_equal(cache.get("ab" * 16), image(1))
    listed = cache.fs.find(f"{BUCKET}/roundtrip")
    assert listed == [f"{BUCKET}/roundtrip/ab/{'ab' * 16}.png"]  # no temporary key is left


def test_other_filesystems_write_a_temporary_key_and_move_it() -> None:
    cache = FrameCache("memory://otpc-frames-test")
    assert not cache.atomic_puts  # unlike S3, where one request puts an object whole
    cache.put("cd" * 16, image(3))
    np.testing.assert_array_equal(cache.get("cd" * 16), image(3))
    assert cache.fs.find("/otpc-frames-test") == [f"/otpc-frames-test/cd/{'cd' * 16}.png"]


def test_a_damaged_or_foreign_entry_is_removed_and_rendered_again(s3: str) -> None:
    cache = FrameCache(f"{s3}/damaged")
    a, b = "aa" * 16, "bb" * 16
    cache.put(a, image(1))
    cache.put(b, image(2))
    whole = cache.fs.cat_file(cache.path(a))
    cache.fs.pipe_file(cache.path(a), whole[: len(whole) // 2])  # truncated
    assert not cache.has(a) and not cache.fs.exists(cache.path(a))
    cache.fs.pipe_file(cache.path(a), cache.fs.cat_file(cache.path(b)))  # another frame
    assert not cache.has(a)
    pixels, text = png.decode(cache.fs.cat_file(cache.path(b)))
    cache.fs.pipe_file(cache.path(b), png.encode(255 - pixels, text))  # pixels edited
    assert not cache.has(b)


def test_rendering_into_s3_gives_the_local_frames(s3: str, tiny, tmp_path: Path) -> None:
    renderer = Renderer(tiny, RenderSettings(steps=2, batch_size=4))
    emb = tiny.pipe.encode_prompt(["a red fox", "a lighthouse"], "cpu", 1, False)[0]
    jobs = [FrameJob(emb[i % 2].float(), latent_seed=i) for i in range(5)]
    remote, local = FrameCache(f"{s3}/render"), FrameCache(tmp_path / "frames")
    keys, rendered = render_missing(renderer, remote, jobs)
    assert rendered == 5
    assert render_missing(renderer, remote, jobs) == (keys, 0)  # all found, verified
    render_missing(renderer, local, jobs)
    for key in keys:
        assert cache_bytes(remote, key) == local.path(key).read_bytes()


def cache_bytes(cache: FrameCache, key: str) -> bytes:
    return bytes(cache.fs.cat_file(cache.path(key)))


def test_the_preflight_check_writes_to_the_url_or_says_why_not(s3: str) -> None:
    from otpc.preflight import url_writable_problem

    assert url_writable_problem("render.cache_dir", f"{s3}/checked") == []
    assert FrameCache(f"{s3}/checked").fs.find(f"{BUCKET}/checked") == []  # probe removed
    [problem] = url_writable_problem("render.cache_dir", "s3://no-such-bucket/frames")
    assert "render.cache_dir = 's3://no-such-bucket/frames': cannot write there" in problem
