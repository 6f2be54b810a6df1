"""SDXL-shaped models: two text encoders whose rows are concatenated, a pooled vector that
moves linearly with t, and otpc's renderer against StableDiffusionXLPipeline (fp32, CPU)."""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import torch
from diffusers import StableDiffusionXLPipeline
from transformers import CLIPTextModelWithProjection

from otpc import embeddings
from otpc.couplings import couple
from otpc.frame_cache import FrameCache
from otpc.models import LoadedModel, ModelSpec, load_pipeline
from otpc.params import CoupleParams, RenderParams, RenderSettings
from otpc.paths import path_frames, t_grid
from otpc.render import FrameJob, Renderer, render_missing
from otpc.study.couple import couple_pairs
from otpc.study.embed import embed
from otpc.study.render import render_study
from otpc.tables import PAIRS

PROMPTS = ["a red double decker bus on a city street", "two dogs asleep on a sofa"]
SETTINGS = RenderSettings(steps=3, guidance=5.0, batch_size=8)


@pytest.fixture(scope="module")
def xl_model() -> LoadedModel:
    """The tiny SDXL-shaped model, loaded through otpc's loading path."""
    return load_pipeline(ModelSpec("tiny-sdxl"))


@pytest.fixture(scope="module")
def xl(xl_model: LoadedModel):
    """Its diffusers pipeline."""
    return xl_model.pipe


@pytest.fixture(scope="module")
def pair(xl_model: LoadedModel) -> list[embeddings.PromptEmbedding]:
    return embeddings.encode(xl_model, PROMPTS)


def test_loads_as_an_sdxl_pipeline(xl, xl_model: LoadedModel) -> None:
    assert isinstance(xl, StableDiffusionXLPipeline)
    assert isinstance(xl.text_encoder_2, CLIPTextModelWithProjection)
    assert xl.unet.config.addition_embed_type == "text_time"
    assert xl_model.resolved.random_weights


@torch.no_grad()
def test_rows_are_both_encoders_side_by_side(xl, pair) -> None:
    """77 rows of 32 + 64 columns: each encoder's penultimate layer; pooled: the projection."""
    emb = pair[0]
    assert emb.embeds.shape == (77, 96) and emb.pooled.shape == (32,)
    parts = []
    for tok, enc in ((xl.tokenizer, xl.text_encoder), (xl.tokenizer_2, xl.text_encoder_2)):
        ids = tok(
            PROMPTS[0], padding="max_length", max_length=77, truncation=True, return_tensors="pt"
        ).input_ids
        out = enc(ids, output_hidden_states=True)
        parts.append(out.hidden_states[-2][0])
    torch.testing.assert_close(emb.embeds, torch.cat(parts, dim=-1).float())  # stored as float32
    torch.testing.assert_close(emb.pooled, out.text_embeds[0].float())


def test_pooled_vector_is_saved_with_the_rows(tmp_path: Path, pair) -> None:
    embeddings.save(tmp_path, pair[1])
    back = embeddings.load(tmp_path, pair[1].key)
    assert torch.equal(back.embeds, pair[1].embeds) and torch.equal(back.pooled, pair[1].pooled)


@torch.no_grad()
def test_unet_is_row_invariant(xl, pair) -> None:
    unet = copy.deepcopy(xl.unet).double()
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(2, 4, 16, 16, generator=gen, dtype=torch.float64)
    rows = torch.stack([e.embeds for e in pair]).double()
    added = {
        "text_embeds": torch.stack([e.pooled for e in pair]).double(),
        "time_ids": torch.tensor([[64.0, 64, 0, 0, 64, 64]] * 2, dtype=torch.float64),
    }

    def run(cond: torch.Tensor) -> torch.Tensor:
        return unet(x, 500, encoder_hidden_states=cond, added_cond_kwargs=added).sample

    base = run(rows)
    perm = torch.randperm(77, generator=gen)
    assert (run(rows[:, perm]) - base).abs().max() < 1e-10
    changed = rows.clone()
    changed[:, 3] = rows[:, 3].flip(-1)  # one row's entries reordered: not a row permutation
    assert (run(changed) - base).abs().max() > 1e-4


def test_renderer_matches_the_sdxl_pipeline(xl, xl_model: LoadedModel, pair) -> None:
    renderer = Renderer(xl_model, SETTINGS)
    latents = renderer.initial_latents(7)
    rows, pooled = pair[0].embeds[None], pair[0].pooled[None]
    ours = renderer.render_batch(rows, latents, pooled).astype(np.float64)

    def reference(**negative: torch.Tensor) -> np.ndarray:
        out = xl(
            prompt_embeds=rows,
            pooled_prompt_embeds=pooled,
            latents=latents.to(xl.unet.dtype),
            num_inference_steps=SETTINGS.steps,
            guidance_scale=SETTINGS.guidance,
            output_type="np",
            **negative,
        ).images
        return out.astype(np.float64) * 255

    assert np.abs(ours - reference()).max() <= 0.51  # uint8 rounding only
    # SDXL's unconditional branch is all zeros (force_zeros_for_empty_prompt), not the
    # embedding of "": rendering against the latter gives another image
    empty = embeddings.encode(xl_model, [""])[0]
    other = reference(
        negative_prompt_embeds=empty.embeds[None], negative_pooled_prompt_embeds=empty.pooled[None]
    )
    assert np.abs(ours - other).max() > 5


def test_a_permuted_path_renders_through_the_renderer(
    tmp_path: Path, xl_model: LoadedModel, pair
) -> None:
    a, b = pair
    c = couple(a.embeds.double().numpy(), b.embeds.double().numpy(), "random", seed=3)
    ts = t_grid(3)
    rows = path_frames(a.embeds.double(), b.embeds.double(), c, ts).float()
    t = torch.as_tensor(ts).unsqueeze(1)
    pooled = ((1 - t) * a.pooled.double() + t * b.pooled.double()).float()
    jobs = [FrameJob(rows[k], 11, pooled[k]) for k in range(len(ts))]
    jobs.append(FrameJob(b.embeds, 11, b.pooled))  # B itself, uncoupled
    renderer = Renderer(xl_model, SETTINGS)
    cache = FrameCache(tmp_path / "frames")
    keys, rendered = render_missing(renderer, cache, jobs)
    assert rendered == len(jobs) and len(set(keys)) == len(jobs)
    frames = [cache.get(k).astype(int) for k in keys]
    assert frames[0].shape == (64, 64, 3)
    assert np.abs(frames[-2] - frames[-1]).max() <= 1  # B[sigma] renders as B
    steps = [np.abs(frames[k + 1] - frames[k]).mean() for k in range(len(ts) - 1)]
    assert min(steps) > 0  # every step of the path moves the image
    assert render_missing(renderer, cache, jobs)[1] == 0


def test_study_stages_run_on_sdxl(tmp_path: Path, xl_model: LoadedModel) -> None:
    """embed -> couple -> render, as the DVC stages call them, with the pooled vector carried."""
    pairs = pl.DataFrame(
        {
            "pair_id": ["p1"],
            "prompt_a": [PROMPTS[0]],
            "prompt_b": [PROMPTS[1]],
            "score": [2.5],
            "group": ["[2,3)"],
            "sampling_method": ["c2c_cocaption"],
            "rank": [0],
        }
    )
    PAIRS.write(pairs, tmp_path / "pairs.parquet")
    spec = ModelSpec("tiny-sdxl")
    index = embed(tmp_path / "pairs.parquet", spec, tmp_path / "emb")
    assert index["model"][0] == xl_model.resolved.fingerprint
    stored = embeddings.load(tmp_path / "emb", index["key"][0])
    assert stored.pooled is not None and stored.pooled.shape == (32,)
    couple_pairs(
        tmp_path / "pairs.parquet",
        tmp_path / "emb",
        CoupleParams(methods=["clip", "random"], random_replicates=1),
        tmp_path / "couplings.parquet",
    )
    params = RenderParams(frames=3, steps=2, batch_size=8, cache_dir=str(tmp_path / "cache"))
    out, _ = render_study(
        tmp_path / "pairs.parquet",
        tmp_path / "emb",
        tmp_path / "couplings.parquet",
        spec,
        params,
        tmp_path / "render",
    )
    assert sorted(out["path_id"].unique()) == ["p1-clip-0", "p1-random-0"]
    ends = out.filter(pl.col("k").is_in([0, 2])).group_by("k").agg(pl.col("key").n_unique())
    assert ends["key"].to_list() == [1, 1]  # both methods share both end frames
    middles = out.filter(pl.col("k") == 1)["key"]
    assert middles.n_unique() == 2
    assert (tmp_path / "render" / "frames" / "p1-random-0" / "01.png").is_file()
