"""otpc's renderer against diffusers' StableDiffusionPipeline, batching, and shared end frames."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl
import pytest
import torch

from otpc import embeddings
from otpc.embeddings import encode
from otpc.frame_cache import FrameCache
from otpc.models import ModelSpec, load_pipeline
from otpc.params import CoupleParams, RenderParams, RenderSettings
from otpc.paths import path_frames, t_grid
from otpc.render import FrameJob, Renderer, optimise_for_speed, render_frames, render_missing
from otpc.study.couple import couple_pairs, coupling_from_row
from otpc.study.embed import embed, load_index
from otpc.study.render import pair_jobs, plan_frames, render_study
from otpc.tables import PAIRS

STEPS = 3
PROMPTS = ["a red cat on a mat", "a blue dog in the park", "a city at night", "two apples"]


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def embeds(tiny) -> torch.Tensor:
    """Four prompt embeddings and two points between them: (6, 77, d)."""
    e = torch.stack([p.embeds for p in encode(tiny, PROMPTS)])
    return torch.cat([e, 0.5 * (e[:1] + e[1:2]), 0.25 * e[2:3] + 0.75 * e[3:4]])


def pipeline_images(
    pipe, renderer: Renderer, embeds: torch.Tensor, latents: torch.Tensor, guidance: float
) -> np.ndarray:
    """The same frames from diffusers' own pipeline (PIL output, as users get it)."""
    out = pipe(
        prompt_embeds=embeds,
        negative_prompt_embeds=renderer.negative.rows.expand_as(embeds),
        latents=latents.to(pipe.unet.dtype),
        num_inference_steps=STEPS,
        guidance_scale=guidance,
        height=renderer.height,
        width=renderer.width,
        output_type="pil",
    )
    return np.stack([np.asarray(image) for image in out.images])


@pytest.mark.parametrize("guidance", [7.5, 1.0, 0.0])
def test_frames_equal_the_pipeline(tiny, embeds, guidance):
    """Same embeddings, noise and scheduler: the pipeline's pixels exactly (CPU)."""
    renderer = Renderer(tiny, RenderSettings(steps=STEPS, guidance=guidance, batch_size=4))
    batch = embeds[[0, 1, 4]]
    latents = torch.cat([renderer.initial_latents(seed) for seed in (11, 12, 11)])
    ours = renderer.render_batch(batch, latents)
    theirs = pipeline_images(tiny.pipe, renderer, batch, latents, guidance)
    assert ours.shape == (3, renderer.height, renderer.width, 3) and ours.dtype == np.uint8
    np.testing.assert_array_equal(ours, theirs)
    assert ours.std() > 5  # real images, not a constant


def test_guidance_changes_the_image(tiny, embeds):
    """CFG is applied: guidance 7.5 and 1.0 (no CFG) give different frames."""
    jobs = [FrameJob(embeds[0], 3)]
    cfg, plain = (
        Renderer(tiny, RenderSettings(steps=STEPS, guidance=g)).render(jobs) for g in (7.5, 1.0)
    )
    assert np.abs(cfg.astype(int) - plain).mean() > 1


def assert_close_images(a: np.ndarray, b: np.ndarray) -> None:
    """Equal up to float rounding: no pixel off by more than 1, almost all identical."""
    diff = np.abs(a.astype(int) - b.astype(int))
    assert diff.max() <= 1, diff.max()
    assert (diff > 0).mean() < 0.01, (diff > 0).mean()


def test_batching_does_not_change_frames(tiny, embeds, tmp_path):
    """A frame's pixels do not depend on the batch size or on its batch-mates (on the CPU,
    in float64, batch composition changes nothing that survives rounding to uint8)."""
    jobs = [FrameJob(embeds[i], seed) for i, seed in enumerate([5, 5, 6, 7, 5, 6])]
    images = {}
    for size in (6, 4, 1):
        renderer = Renderer(tiny, RenderSettings(steps=STEPS, batch_size=size))
        cache = FrameCache(tmp_path / f"bs{size}")
        keys, rendered = render_missing(renderer, cache, jobs)
        assert rendered == len(jobs)
        images[size] = np.stack([cache.get(k) for k in keys])
    np.testing.assert_array_equal(images[6], images[4])
    np.testing.assert_array_equal(images[6], images[1])
    # The same frame next to different companions.
    renderer = Renderer(tiny, RenderSettings(steps=STEPS))
    with_first = renderer.render([jobs[2], jobs[0], jobs[1]])[0]
    with_last = renderer.render([jobs[5], jobs[4], jobs[2]])[2]
    np.testing.assert_array_equal(with_first, with_last)
    np.testing.assert_array_equal(with_first, images[6][2])


def test_speed_options_keep_the_images(embeds):
    """Channels-last and fused QKV (what CUDA runs get) render the same frames."""
    plain = load_pipeline(ModelSpec("tiny"))
    plain_pipe = plain.pipe
    jobs = [FrameJob(embeds[i], 9) for i in (0, 3, 5)]
    settings = RenderSettings(steps=STEPS)
    before = Renderer(plain, settings).render(jobs)
    optimise_for_speed(plain_pipe.unet, plain_pipe.vae)
    for model in (plain_pipe.unet, plain_pipe.vae):
        assert {type(p).__name__ for p in model.attn_processors.values()} == {
            "FusedAttnProcessor2_0"
        }
    assert plain_pipe.unet.conv_in.weight.is_contiguous(memory_format=torch.channels_last)
    assert_close_images(before, Renderer(plain, settings).render(jobs))


@pytest.fixture(scope="module")
def study_inputs(tmp_path_factory) -> tuple[Path, Path, Path]:
    """Two real pairs, embedded and coupled by clip, ot, random (x2) and sinkhorn."""
    root = tmp_path_factory.mktemp("study")
    pairs = pl.DataFrame(
        {
            "pair_id": ["p0", "p1"],
            "prompt_a": PROMPTS[:2],
            "prompt_b": PROMPTS[2:],
            "score": [1.5, 4.5],
            "group": ["[1,2)", "[4,5]"],
            "sampling_method": [None, None],
            "rank": [0, 0],
        }
    )
    PAIRS.write(pairs, root / "pairs.parquet")
    embed(root / "pairs.parquet", ModelSpec("tiny"), root / "emb")
    couple_pairs(
        root / "pairs.parquet",
        root / "emb",
        CoupleParams(methods=["clip", "ot", "random", "sinkhorn"], random_replicates=2),
        root / "couplings.parquet",
    )
    return root / "pairs.parquet", root / "emb", root / "couplings.parquet"


def test_end_frames_are_planned_once_per_pair(study_inputs):
    """t=0 and t=1 are one job per pair, shared by every permutation path; others own theirs."""
    pairs_path, emb_dir, couplings_path = study_inputs
    pairs, couplings = pl.read_parquet(pairs_path), pl.read_parquet(couplings_path)
    frames = 4

    def seed_of(job: FrameJob) -> str:  # a "key" that shows the frame's noise seed
        return str(job.latent_seed)

    planned = plan_frames(pairs, couplings, emb_dir, frames, 0, seed_of)
    for pid in ("p0", "p1"):
        rows = couplings.filter(pl.col("pair_id") == pid)
        perm_paths = set(rows.filter(pl.col("permutation").is_not_null())["path_id"])
        assert len(perm_paths) == 4
        ends = [f for f in planned if f.pair_id == pid and set(f.path_ids) == perm_paths]
        assert sorted(f.k for f in ends) == [0, frames - 1]
        for path_id in perm_paths:  # every other frame of a permutation path: exactly once
            own = sorted(f.k for f in planned if f.path_ids == (path_id,))
            assert own == list(range(1, frames - 1))
        sinkhorn = rows.filter(pl.col("method") == "sinkhorn")["path_id"][0]
        assert sorted(f.k for f in planned if f.path_ids == (sinkhorn,)) == list(range(frames))
        assert len({f.key for f in planned if f.pair_id == pid}) == 1  # one noise seed
    # Without permutation couplings no end frame is shared, so none is planned apart.
    only_sinkhorn = couplings.filter(pl.col("method") == "sinkhorn")
    slots = plan_frames(pairs, only_sinkhorn, emb_dir, frames, 0, seed_of)
    assert sorted((s.pair_id, s.k) for s in slots) == [
        (pid, k) for pid in ("p0", "p1") for k in range(frames)
    ]


def test_end_frames_render_the_same_for_every_permutation(tiny, study_inputs):
    """Row invariance: the path's own t=0 and t=1 frames render like the shared A and B."""
    pairs_path, emb_dir, couplings_path = study_inputs
    pairs, couplings = pl.read_parquet(pairs_path), pl.read_parquet(couplings_path)
    index, first = load_index(emb_dir), pairs.row(0, named=True)
    ea, eb = (embeddings.load(emb_dir, index[first[col]]) for col in ("prompt_a", "prompt_b"))
    p0 = couplings.filter(pl.col("pair_id") == "p0")
    a_job, b_job = (job for paths, _, job in pair_jobs("p0", p0, ea, eb, 3, 0) if len(paths) > 1)
    ends = []
    for row in couplings.filter(pl.col("pair_id") == "p0").iter_rows(named=True):
        coupling = coupling_from_row(row)
        if coupling.permutation is None:
            continue
        path = path_frames(
            a_job.embedding.double(), b_job.embedding.double(), coupling, t_grid(3)
        ).float()
        torch.testing.assert_close(path[0], a_job.embedding, rtol=0, atol=0)
        ends.append(path[-1])
    assert sum(not torch.equal(end, b_job.embedding) for end in ends) >= 2  # the random ones
    renderer = Renderer(tiny, RenderSettings(steps=STEPS))
    images = renderer.render([a_job, b_job] + [FrameJob(e, b_job.latent_seed) for e in ends])
    for image in images[2:]:
        assert_close_images(image, images[1])
    assert np.abs(images[0].astype(int) - images[1]).mean() > 1  # A and B do differ


def test_render_study_renders_each_end_frame_once(study_inputs, tmp_path):
    """The stage renders unique frames only and gives every path its shared end frames."""
    pairs_path, emb_dir, couplings_path = study_inputs
    params = RenderParams(frames=3, steps=2, batch_size=8, cache_dir=str(tmp_path / "cache"))
    index, rendered = render_study(
        pairs_path, emb_dir, couplings_path, ModelSpec("tiny"), params, tmp_path / "render"
    )
    # Per pair: A, B, the middle frame of each distinct permutation (ot may be the identity,
    # as clip is), sinkhorn's k=1 and k=2.
    couplings = pl.read_parquet(couplings_path).filter(pl.col("permutation").is_not_null())
    distinct = couplings.group_by("pair_id").agg(pl.col("permutation").n_unique())
    expected = sum(2 + n + 2 for n in distinct["permutation"])
    assert len(list((tmp_path / "cache").rglob("*.png"))) == expected
    assert rendered == expected
    assert index.height == 2 * 5 * 3
    perms = dict(distinct.iter_rows())
    for (pid, k), group in index.group_by("pair_id", "k"):
        n_keys = group["key"].n_unique()
        assert n_keys == (1 if k == 0 else 2 if k == 2 else perms[pid] + 1), (pid, k, n_keys)
    for row in index.iter_rows(named=True):
        assert (tmp_path / "render" / row["file"]).read_bytes() == FrameCache(
            tmp_path / "cache"
        ).path(row["key"]).read_bytes()


def test_frames_are_planned_lazily_batch_by_batch(tiny, embeds, tmp_path):
    """Rendering pulls jobs one batch at a time: never the whole study in memory."""
    made: list[int] = []
    seen: list[int] = []

    class Recording(Renderer):
        def render(self, jobs: list[FrameJob]) -> np.ndarray:
            seen.append(len(made))
            return super().render(jobs)

    def jobs():
        for i in range(10):
            made.append(i)
            yield f"{i:032d}", FrameJob(embeds[i % 6], i)

    renderer = Recording(tiny, RenderSettings(steps=1, batch_size=4))
    render_frames(renderer, FrameCache(tmp_path), jobs(), total=10)
    assert seen == [4, 8, 10]
    assert len(list(tmp_path.rglob("*.png"))) == 10
