"""SD3- and FLUX.1-shaped models (tiny, random weights) through otpc's model families: rows
and pooled vectors as each pipeline encodes them, frames equal to the diffusers pipeline's
(fp32, CPU), and the study's premise on their transformers (float64): they see the text rows
as a set, and every coupling's path ends on the same image."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from diffusers import (
    FluxPipeline,
    FluxTransformer2DModel,
    SD3Transformer2DModel,
    StableDiffusion3Pipeline,
)

from otpc.couplings import couple
from otpc.embeddings import encode
from otpc.families import Conditioning, family_for
from otpc.families.flux import FluxFamily, pack
from otpc.families.sd3 import SD3Family
from otpc.families.unet import UNetFamily
from otpc.models import LoadedModel, ModelSpec, load_pipeline
from otpc.params import Params, RenderParams, RenderSettings
from otpc.paths import path_frames, t_grid
from otpc.preflight import model_problems
from otpc.render import Renderer

pytestmark = pytest.mark.usefixtures("one_thread")

PROMPTS = ["a small red circle in the top left corner", "two dogs asleep on a sofa"]
KINDS = ("tiny-sd3", "tiny-flux")
SIZE = {"height": 32, "width": 32}  # FLUX's pipeline default is 128 latent cells a side


@pytest.fixture(scope="module", params=KINDS)
def model32(request: pytest.FixtureRequest) -> LoadedModel:
    """Each model in float32 (as the pipeline runs by default on a CPU)."""
    return load_pipeline(ModelSpec(request.param, dtype="float32"))


@pytest.fixture(scope="module", params=KINDS)
def model64(request: pytest.FixtureRequest) -> LoadedModel:
    """Each model in float64 (otpc's CPU default), for exact comparisons."""
    model = load_pipeline(ModelSpec(request.param))
    assert model.resolved.dtype == torch.float64
    return model


def test_each_pipeline_has_its_family(tiny: LoadedModel) -> None:
    sd3 = load_pipeline(ModelSpec("tiny-sd3")).pipe
    flux = load_pipeline(ModelSpec("tiny-flux")).pipe
    assert isinstance(sd3, StableDiffusion3Pipeline)
    assert isinstance(sd3.transformer, SD3Transformer2DModel)
    assert isinstance(flux, FluxPipeline) and isinstance(flux.transformer, FluxTransformer2DModel)
    assert flux.transformer.config.guidance_embeds  # FLUX.1-dev-shaped
    assert isinstance(family_for(sd3), SD3Family)
    assert isinstance(family_for(flux), FluxFamily)
    assert isinstance(family_for(tiny.pipe), UNetFamily)


@torch.no_grad()
def test_sd3_rows_are_clip_then_t5() -> None:
    """77 CLIP rows (CLIP-L and CLIP-G penultimate layers side by side, zero-padded to T5's
    width) then T5's rows; pooled: both CLIPs' projections."""
    model = load_pipeline(ModelSpec("tiny-sd3", dtype="float32"))
    pipe = model.pipe
    emb = encode(model, PROMPTS[:1])[0]
    t5_rows = pipe.tokenizer_3.model_max_length
    assert emb.embeds.shape == (77 + t5_rows, pipe.text_encoder_3.config.d_model)
    clip, pooled = [], []
    for tok, enc in ((pipe.tokenizer, pipe.text_encoder), (pipe.tokenizer_2, pipe.text_encoder_2)):
        ids = tok(PROMPTS[0], padding="max_length", max_length=77, return_tensors="pt").input_ids
        out = enc(ids, output_hidden_states=True)
        clip.append(out.hidden_states[-2][0])
        pooled.append(out.text_embeds[0])
    clip_rows = torch.cat(clip, dim=-1)
    width = clip_rows.shape[1]
    torch.testing.assert_close(emb.embeds[:77, :width], clip_rows)
    assert torch.all(emb.embeds[:77, width:] == 0)
    ids = pipe.tokenizer_3(
        PROMPTS[0], padding="max_length", max_length=t5_rows, return_tensors="pt"
    ).input_ids
    torch.testing.assert_close(emb.embeds[77:], pipe.text_encoder_3(ids)[0][0])
    torch.testing.assert_close(emb.pooled, torch.cat(pooled))


@torch.no_grad()
def test_flux_rows_are_t5_and_pooled_is_clip() -> None:
    model = load_pipeline(ModelSpec("tiny-flux", dtype="float32"))
    pipe = model.pipe
    emb = encode(model, PROMPTS[:1])[0]
    rows = pipe.tokenizer_2.model_max_length
    ids = pipe.tokenizer_2(
        PROMPTS[0], padding="max_length", max_length=rows, return_tensors="pt"
    ).input_ids
    assert emb.n_tokens == int((ids[0] != pipe.tokenizer_2.pad_token_id).sum())
    torch.testing.assert_close(emb.embeds, pipe.text_encoder_2(ids)[0][0])
    clip_ids = pipe.tokenizer(
        PROMPTS[0], padding="max_length", max_length=77, return_tensors="pt"
    ).input_ids
    torch.testing.assert_close(emb.pooled, pipe.text_encoder(clip_ids).pooler_output[0])


@pytest.mark.parametrize("guidance", [4.0, 1.0])
def test_frames_equal_the_pipeline(model32: LoadedModel, guidance: float) -> None:
    """Same rows, pooled vectors and noise: the pipeline's pixels (uint8 rounding only).
    SD3: CFG against the empty prompt when guidance > 1; FLUX.1-dev: guidance embedded."""
    pipe = model32.pipe
    renderer = Renderer(model32, RenderSettings(steps=3, guidance=guidance, batch_size=4, **SIZE))
    embs = encode(model32, PROMPTS)
    rows = torch.stack([e.embeds for e in embs])
    pooled = torch.stack([e.pooled for e in embs])
    noise = torch.cat([renderer.initial_latents(seed) for seed in (5, 6)])
    ours = renderer.render_batch(rows, noise, pooled).astype(np.float64)
    extra = {}
    if isinstance(pipe, FluxPipeline):
        extra["latents"] = pack(noise)  # FluxPipeline takes its latents packed
    else:
        neg = renderer.negative
        extra = {
            "latents": noise,
            "negative_prompt_embeds": neg.rows.expand_as(rows),
            "negative_pooled_prompt_embeds": neg.pooled.expand_as(pooled),
        }
    reference = pipe(
        prompt_embeds=rows,
        pooled_prompt_embeds=pooled,
        num_inference_steps=3,
        guidance_scale=guidance,
        output_type="np",
        **SIZE,
        **extra,
    ).images
    assert ours.shape == (2, 32, 32, 3)
    assert np.abs(ours - reference.astype(np.float64) * 255).max() <= 0.51
    assert np.abs(ours[0] - ours[1]).max() > 10  # the prompts and noise matter


@torch.no_grad()
def test_transformer_output_is_invariant_to_row_permutation(model64: LoadedModel) -> None:
    """Permuting the text rows leaves the transformer's output equal to float64 rounding;
    replacing one row changes it clearly."""
    family = family_for(model64.pipe)
    transformer = family.denoiser
    gen = torch.Generator().manual_seed(1)
    emb = encode(model64, PROMPTS[:1])[0]
    rows = emb.embeds.double()[None].expand(2, -1, -1)
    cond_pooled = emb.pooled.double()[None].expand(2, -1)
    latents = torch.randn(2, *family.noise_shape(32, 32), generator=gen, dtype=torch.float64)
    scheduler = Renderer(model64, RenderSettings(steps=3, **SIZE)).scheduler()
    t = scheduler.timesteps[1]
    perm = torch.randperm(rows.shape[1], generator=gen)
    assert not torch.equal(perm, torch.arange(rows.shape[1]))

    def run(r: torch.Tensor) -> torch.Tensor:
        return family.predict(scheduler, latents, t, Conditioning(r, cond_pooled), 3.5)

    out = run(rows)
    other = rows.clone()
    other[:, 1] = other[:, 2]  # not a permutation: one real token's row replaced
    scale = out.abs().max().item()
    assert isinstance(transformer, (SD3Transformer2DModel, FluxTransformer2DModel))
    assert (run(rows[:, perm]) - out).abs().max().item() < 1e-12 * scale
    assert (run(other) - out).abs().max().item() > 1e-6 * scale


def test_every_coupling_ends_on_the_same_image(model64: LoadedModel) -> None:
    ea, eb = encode(model64, PROMPTS)
    a, b = ea.embeds.double(), eb.embeds.double()
    renderer = Renderer(model64, RenderSettings(steps=3, guidance=4.0, batch_size=8, **SIZE))
    ts = t_grid(2)
    ends = [b]
    n = a.shape[0]
    for method, seed in (("clip", 0), ("ot", 0), ("random", 1), ("random", 2)):
        c = couple(a, b, method, seed=seed)
        if method == "random":
            assert not np.array_equal(c.permutation, np.arange(n))
        frames = path_frames(a, b, c, ts)
        torch.testing.assert_close(frames[0], a, rtol=0, atol=0)
        ends.append(frames[-1])
    latents = renderer.initial_latents(11).expand(len(ends), -1, -1, -1)
    pooled = eb.pooled[None].expand(len(ends), -1)
    images = renderer.render_batch(torch.stack(ends), latents, pooled)
    for image in images[1:]:
        np.testing.assert_array_equal(image, images[0])
    other = renderer.render_batch(a[None], latents[:1], ea.pooled[None])
    assert np.abs(other[0].astype(int) - images[0]).max() > 10


def test_unset_render_settings_come_from_the_preset_then_the_pipeline(toy: LoadedModel) -> None:
    """Steps, guidance and size left unset: the preset's recommendation, else the family's
    pipeline defaults; what is set wins (guidance 0 included), and keys the frames."""
    flux = Renderer(load_pipeline(ModelSpec("tiny-flux")), RenderSettings())
    assert (flux.steps, flux.guidance, flux.height, flux.width) == (28, 3.5, 32, 32)
    sd3 = Renderer(load_pipeline(ModelSpec("tiny-sd3")), RenderSettings())
    assert (sd3.steps, sd3.guidance, sd3.height) == (28, 7.0, 32)
    unset = Renderer(toy, RenderSettings())
    assert (unset.steps, unset.guidance) == (6, 1.0)  # the toy preset's
    same = Renderer(toy, RenderSettings(steps=6, guidance=1.0))
    assert unset.context == same.context  # the same frames, however they were asked for
    zero = Renderer(toy, RenderSettings(guidance=0.0))
    assert zero.guidance == 0.0 and zero.context != unset.context


@pytest.mark.parametrize(("name", "multiple"), [("tiny-flux", 8), ("tiny-sd3", 8), ("tiny", 4)])
def test_check_refuses_sizes_the_family_cannot_render(name: str, multiple: int) -> None:
    """``otpc check`` reads the family's rule from config files: FLUX packs latents 2 x 2,
    SD3 cuts them into 2 x 2 patches, a U-Net takes any latent size."""
    params = Params(model=ModelSpec(name), render=RenderParams(height=36, width=multiple * 5))
    problems = model_problems(params)
    if 36 % multiple:
        assert problems == [
            f"  render.height = 36: must be a multiple of {multiple}, what the VAE's downsampling "
            f"and the denoiser's patches of model {name!r} need"
        ]
    else:
        assert problems == []


def test_freeing_the_text_encoders_changes_no_frame() -> None:
    """Rendering needs only the denoiser and VAE: frames after freeing equal those before."""
    model = load_pipeline(ModelSpec("tiny-flux"))
    renderer = Renderer(model, RenderSettings(steps=2, batch_size=2))
    emb = encode(model, PROMPTS[:1])[0]
    noise = renderer.initial_latents(3)
    before = renderer.render_batch(emb.embeds[None], noise, emb.pooled[None])
    renderer.free_text_encoders()
    assert model.pipe.text_encoder is None and model.pipe.text_encoder_2 is None
    after = renderer.render_batch(emb.embeds[None], noise, emb.pooled[None])
    np.testing.assert_array_equal(before, after)
