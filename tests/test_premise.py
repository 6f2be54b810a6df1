"""The study's premise, on real diffusers modules: the U-Net sees the prompt embedding only
as a set of rows, so permuting the 77 rows changes nothing, and every coupling's path ends
on the same image."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from diffusers import UNet2DConditionModel
from diffusers.models.attention_processor import AttnProcessor, AttnProcessor2_0

from otpc.couplings import couple
from otpc.embeddings import encode
from otpc.params import RenderSettings
from otpc.paths import path_frames, t_grid
from otpc.render import Renderer


@pytest.fixture(scope="module")
def unet64(tiny) -> UNet2DConditionModel:
    """The tiny model's SD-1.x-shaped U-Net (random weights), a copy in float64."""
    return copy.deepcopy(tiny.pipe.unet).to(torch.float64).eval()


@pytest.mark.parametrize("processor", [AttnProcessor2_0, AttnProcessor])
def test_unet_output_is_invariant_to_row_permutation(
    unet64: UNet2DConditionModel, processor: type
) -> None:
    unet64.set_attn_processor(processor())
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(2, 4, 8, 8, generator=gen, dtype=torch.float64)
    width = unet64.config.cross_attention_dim
    text = torch.randn(2, 77, width, generator=gen, dtype=torch.float64)
    perm = torch.randperm(77, generator=gen)
    t = torch.tensor([500, 20])
    with torch.no_grad():
        out = unet64(x, t, encoder_hidden_states=text).sample
        permuted = unet64(x, t, encoder_hidden_states=text[:, perm]).sample
        other = text.clone()
        other[:, 5] = other[:, 6]  # not a permutation: one row replaced
        changed = unet64(x, t, encoder_hidden_states=other).sample
    assert (out - permuted).abs().max().item() < 1e-12 * out.abs().max().item()
    assert (out - changed).abs().max().item() > 1e-4 * out.abs().max().item()


@pytest.fixture(scope="module")
def renderer64(tiny) -> Renderer:
    """The tiny model's renderer, in float64 on the CPU, so pixels are exact to compare."""
    assert tiny.resolved.dtype == torch.float64
    return Renderer(tiny, RenderSettings(steps=4, guidance=7.5, batch_size=8))


def test_pipeline_image_is_invariant_to_row_permutation(tiny, renderer64: Renderer) -> None:
    ea, eb = encode(tiny, ["a red fox in the snow", "a lighthouse at dusk"])
    perm = torch.randperm(77, generator=torch.Generator().manual_seed(2))
    latents = renderer64.initial_latents(7).expand(3, -1, -1, -1)
    images = renderer64.render_batch(torch.stack([ea.embeds, ea.embeds[perm], eb.embeds]), latents)
    np.testing.assert_array_equal(images[0], images[1])
    assert np.abs(images[0].astype(int) - images[2]).max() > 10  # the prompt does matter


def test_every_coupling_ends_on_the_same_image(tiny, renderer64: Renderer) -> None:
    ea, eb = encode(tiny, ["a bowl of ripe peaches", "two cats asleep on a sofa"])
    a, b = ea.embeds.double(), eb.embeds.double()
    ts = t_grid(2)
    ends = [b]
    for method, seed in (("clip", 0), ("ot", 0), ("random", 1), ("random", 2)):
        c = couple(a, b, method, seed=seed)
        if method == "random":
            assert not np.array_equal(c.permutation, np.arange(77))  # a real reordering
        frames = path_frames(a, b, c, ts)
        torch.testing.assert_close(frames[0], a, rtol=0, atol=0)
        ends.append(frames[-1])
    latents = renderer64.initial_latents(11).expand(len(ends), -1, -1, -1)
    images = renderer64.render_batch(torch.stack(ends), latents)
    for image in images[1:]:
        np.testing.assert_array_equal(image, images[0])
