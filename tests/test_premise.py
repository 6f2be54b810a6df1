"""The study's premise, on real diffusers modules: the U-Net sees the prompt embedding only
as a set of rows, so permuting the 77 rows changes nothing, and every coupling's path ends
on the same image."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from diffusers import UNet2DConditionModel
from diffusers.models.attention_processor import (
    AttnProcessor,
    AttnProcessor2_0,
    FusedAttnProcessor2_0,
)
from scipy.optimize import linear_sum_assignment

from otpc.couplings import couple
from otpc.embeddings import encode
from otpc.models import LoadedModel
from otpc.params import RenderSettings
from otpc.paths import path_frames, t_grid
from otpc.quiet import quiet_libraries
from otpc.render import Renderer
from otpc.tiny import tiny_model_dir
from otpc.toy import MODEL_DIR

pytestmark = pytest.mark.usefixtures("one_thread")

# SD-1.x, SD-2 and SDXL-shaped U-Nets with random weights, and the trained toy model's
KINDS = ("tiny", "tiny-sd2", "tiny-sdxl", "toy")
PROCESSORS = ("AttnProcessor2_0", "AttnProcessor", "fused")


@pytest.fixture(scope="module")
def unets() -> dict[str, UNet2DConditionModel]:
    """The models' U-Nets in float64, loaded once from their folders."""
    with quiet_libraries():
        unets = {
            kind: UNet2DConditionModel.from_pretrained(
                MODEL_DIR if kind == "toy" else tiny_model_dir(kind=kind), subfolder="unet"
            )
            .to(torch.float64)
            .eval()
            for kind in KINDS
        }
    for unet in unets.values():  # diffusers' default, the one the first case tests
        assert {type(p) for p in unet.attn_processors.values()} == {AttnProcessor2_0}
    return unets


def with_processor(unet: UNet2DConditionModel, processor: str) -> UNet2DConditionModel:
    """A copy of ``unet`` whose attention runs through ``processor``: diffusers' default SDPA
    one, the classic (explicit softmax) one, or SDPA with fused projections (QKV for
    self-attention, KV for cross-attention), as the renderer runs on CUDA."""
    unet = copy.deepcopy(unet)
    if processor == "fused":
        unet.fuse_qkv_projections()
        assert all(isinstance(p, FusedAttnProcessor2_0) for p in unet.attn_processors.values())
        fused = [name for name, _ in unet.named_modules() if name.endswith(".attn2.to_kv")]
        assert fused  # the cross-attention, where the rows enter, runs fused
    else:
        unet.set_attn_processor(
            {"AttnProcessor2_0": AttnProcessor2_0, "AttnProcessor": AttnProcessor}[processor]()
        )
    return unet


@pytest.mark.parametrize("processor", PROCESSORS)
@pytest.mark.parametrize("kind", KINDS)
def test_unet_output_is_invariant_to_row_permutation(
    unets: dict[str, UNet2DConditionModel], kind: str, processor: str
) -> None:
    """Permuting the 77 rows leaves the U-Net's output equal to float64 rounding (SDXL's
    pooled vector and size ids stay as they are); replacing one row changes it clearly."""
    unet = with_processor(unets[kind], processor)
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(2, 4, 16, 16, generator=gen, dtype=torch.float64)
    text = torch.randn(2, 77, unet.config.cross_attention_dim, generator=gen, dtype=torch.float64)
    added = None
    if unet.config.addition_embed_type == "text_time":
        pooled = (
            unet.config.projection_class_embeddings_input_dim
            - 6 * unet.config.addition_time_embed_dim
        )
        added = {
            "text_embeds": torch.randn(2, pooled, generator=gen, dtype=torch.float64),
            "time_ids": torch.tensor([[64.0, 64, 0, 0, 64, 64]] * 2, dtype=torch.float64),
        }
    perm = torch.randperm(77, generator=gen)
    assert not torch.equal(perm, torch.arange(77))
    t = torch.tensor([500, 20])

    def run(rows: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return unet(x, t, encoder_hidden_states=rows, added_cond_kwargs=added).sample

    out = run(text)
    other = text.clone()
    other[:, 5] = other[:, 6]  # not a permutation: one row replaced
    scale = out.abs().max().item()
    assert (run(text[:, perm]) - out).abs().max().item() < 1e-12 * scale
    assert (run(other) - out).abs().max().item() > 1e-4 * scale


# The tiny SD-1.x-shaped model (random weights) and the trained toy model, each with
# prompts of its own world.
PROMPTS = {
    "tiny": (
        ("a red fox in the snow", "a lighthouse at dusk"),
        ("a bowl of ripe peaches", "two cats asleep on a sofa"),
    ),
    "toy": (
        ("a small red tall bar on a black background", "a large blue square on a white background"),
        (
            "a medium green wide box on a gray background",
            "one small yellow square, black background",
        ),
    ),
}


@pytest.fixture(scope="module", params=list(PROMPTS))
def model64(request: pytest.FixtureRequest) -> tuple[LoadedModel, Renderer, str]:
    """A model with its renderer, in float64 on the CPU (pixels exact to compare), and its
    name."""
    model = request.getfixturevalue(request.param)
    assert model.resolved.dtype == torch.float64
    return (
        model,
        Renderer(model, RenderSettings(steps=4, guidance=7.5, batch_size=8)),
        request.param,
    )


def test_pipeline_image_is_invariant_to_row_permutation(model64) -> None:
    model, renderer64, name = model64
    ea, eb = encode(model, list(PROMPTS[name][0]))
    perm = torch.randperm(77, generator=torch.Generator().manual_seed(2))
    latents = renderer64.initial_latents(7).expand(3, -1, -1, -1)
    images = renderer64.render_batch(torch.stack([ea.embeds, ea.embeds[perm], eb.embeds]), latents)
    np.testing.assert_array_equal(images[0], images[1])
    assert np.abs(images[0].astype(int) - images[2]).max() > 10  # the prompt does matter


def test_every_coupling_ends_on_the_same_image(model64) -> None:
    model, renderer64, name = model64
    ea, eb = encode(model, list(PROMPTS[name][1]))
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


def clouds(kind: str, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Two seeded clouds of 77 rows x 32 columns, float64; ``kind``:

    - ``gaussian``: independent standard normal rows;
    - ``offset``: rows around a common far-off mean (like CLIP's rows): squared distances are
      small differences of large norms, where the Gram formula cancels;
    - ``ties``: each cloud built from 12 distinct rows, repeated (many optimal matchings,
      degenerate plans);
    - ``permuted``, ``permuted ties``: B is A with its rows shuffled (optimal cost 0).
    """
    rng = np.random.default_rng(seed)
    n, d = 77, 32
    if kind in ("ties", "permuted ties"):
        a = rng.standard_normal((12, d))[rng.integers(0, 12, n)]
        b = rng.standard_normal((12, d))[rng.integers(0, 12, n)]
    elif kind == "offset":
        mean = 30.0 * rng.standard_normal(d)
        a, b = mean + rng.standard_normal((n, d)), mean + rng.standard_normal((n, d))
    else:
        a, b = rng.standard_normal((n, d)), rng.standard_normal((n, d))
    if kind.startswith("permuted"):
        b = a[rng.permutation(n)]
    return a, b


CLOUDS = [
    (kind, seed)
    for kind in ("gaussian", "offset", "ties", "permuted", "permuted ties")
    for seed in (0, 1, 2)
]


@pytest.mark.parametrize("kind, seed", CLOUDS, ids=[f"{k}-{s}" for k, s in CLOUDS])
def test_ot_reaches_the_assignment_optimum_at_77_rows(kind: str, seed: int) -> None:
    """``couple(a, b, "ot")`` is a permutation whose mean squared distance is the optimum of
    the assignment problem (scipy's linear_sum_assignment on the cost matrix, computed from
    row differences), to 1e-9 relative; exactly 0 when B is A's rows shuffled."""
    a, b = clouds(kind, seed)
    c = couple(a, b, "ot")
    assert c.permutation is not None
    assert sorted(c.permutation.tolist()) == list(range(77))
    m = ((a[:, None, :] - b[None, :, :]) ** 2).sum(-1)
    rows, cols = linear_sum_assignment(m)
    optimum = float(m[rows, cols].mean())
    ours = float(((a - b[c.permutation]) ** 2).sum(-1).mean())
    assert c.cost == pytest.approx(ours, rel=1e-12, abs=0)  # the cost it reports is its own
    if kind.startswith("permuted"):
        assert optimum == 0.0 and c.cost == 0.0
        np.testing.assert_array_equal(b[c.permutation], a)
    else:
        assert optimum > 0
        assert abs(c.cost - optimum) <= 1e-9 * optimum, (c.cost, optimum)
