"""Rows from several text encoders: each embedding records which encoder each row comes from
and which rows are tokens; ``couple.blocks: per_encoder`` couples each encoder's rows on
their own; the structure-respecting couplings and token-structure numbers read the blocks."""

from __future__ import annotations

import numpy as np
import pytest

from otpc.couplings import couple, couple_many
from otpc.embeddings import encode
from otpc.models import ModelSpec, load_pipeline
from otpc.row_blocks import pair_blocks, token_groups
from otpc.token_structure import token_structure

PROMPTS = ["a small red circle in the top left corner", "two dogs asleep on a big sofa"]


@pytest.fixture(scope="module")
def sd3_pair():
    """Two prompts embedded by the tiny SD3-shaped model: 77 CLIP rows, then 32 T5 rows."""
    model = load_pipeline(ModelSpec("tiny-sd3"))
    return encode(model, PROMPTS), model.pipe


def test_each_row_says_its_encoder_and_whether_it_is_a_token(sd3_pair) -> None:
    (ea, _), pipe = sd3_pair
    clip, t5 = ea.blocks
    assert (clip.encoder, clip.start, clip.rows, clip.start_token) == ("clip-l+clip-g", 0, 77, True)
    assert (t5.encoder, t5.start, t5.rows, t5.start_token) == ("t5", 77, 32, False)
    assert clip.tokens == len(pipe.tokenizer(PROMPTS[0]).input_ids) == ea.n_tokens
    assert t5.tokens == len(pipe.tokenizer_3(PROMPTS[0]).input_ids)
    assert ea.embeds.shape[0] == clip.rows + t5.rows
    assert t5.tokens < t5.rows  # the rest of T5's rows are padding


def test_per_encoder_keeps_every_row_in_its_encoders_block(sd3_pair) -> None:
    (ea, eb), _ = sd3_pair
    a, b = ea.embeds.double().numpy(), eb.embeds.double().numpy()
    blocks = pair_blocks(ea.blocks, eb.blocks)
    joint = couple(a, b, "ot", structure=blocks)
    apart = couple(a, b, "ot", structure=blocks, per_block=True)
    clip_rows, t5_rows = np.arange(77), np.arange(77, a.shape[0])
    assert set(apart.permutation[clip_rows]) == set(clip_rows)
    assert set(apart.permutation[t5_rows]) == set(t5_rows)
    alone = [couple(a[r], b[r], "ot") for r in (clip_rows, t5_rows)]
    expected = (alone[0].cost * 77 + alone[1].cost * len(t5_rows)) / a.shape[0]
    assert apart.cost == pytest.approx(expected, rel=1e-12)
    assert joint.cost <= apart.cost + 1e-12  # a constraint never lowers the optimum
    for method, seed in (("random", 3), ("clip", 0)):
        c = couple(a, b, method, seed=seed, structure=blocks, per_block=True)
        assert set(c.permutation[t5_rows]) == set(t5_rows)


def test_per_encoder_sinkhorn_is_block_diagonal_with_each_blocks_share(sd3_pair) -> None:
    (ea, eb), _ = sd3_pair
    a, b = ea.embeds.double().numpy(), eb.embeds.double().numpy()
    c = couple(a, b, "sinkhorn", structure=pair_blocks(ea.blocks, eb.blocks), per_block=True)
    n = a.shape[0]
    assert c.permutation is None and c.plan.shape == (n, n)
    assert np.all(c.plan[:77, 77:] == 0) and np.all(c.plan[77:, :77] == 0)
    # each block's plan carries the mass of its rows
    assert c.plan[:77, :77].sum() == pytest.approx(77 / n, rel=1e-9)
    assert c.plan[77:, 77:].sum() == pytest.approx((n - 77) / n, rel=1e-9)


@pytest.mark.parametrize("method", ["clip", "ot", "random", "ot_blocks"])
def test_with_one_encoder_per_encoder_is_the_joint_coupling(method: str) -> None:
    model = load_pipeline(ModelSpec("tiny-flux"))
    ea, eb = encode(model, PROMPTS)
    a, b = ea.embeds.double().numpy(), eb.embeds.double().numpy()
    blocks = pair_blocks(ea.blocks, eb.blocks)
    assert [x.encoder for x in blocks] == ["t5"] and not blocks[0].start_token
    joint = couple_many(a[None], b[None], method, [7], structure=[blocks])[0]
    apart = couple_many(a[None], b[None], method, [7], structure=[blocks], per_block=True)[0]
    np.testing.assert_array_equal(joint.permutation, apart.permutation)
    assert joint.cost == apart.cost


def test_structure_respecting_couplings_stay_inside_each_encoder(sd3_pair) -> None:
    """ot_blocks and random_blocks: CLIP's start token fixed, tokens to tokens and padding
    to padding in each encoder's rows; T5 has no start token to fix."""
    (ea, eb), _ = sd3_pair
    a, b = ea.embeds.double().numpy(), eb.embeds.double().numpy()
    blocks = pair_blocks(ea.blocks, eb.blocks)
    groups = token_groups(blocks)
    assert groups[0].tolist() == [0]
    t5 = blocks[1]
    assert groups[3][0] == 77 and len(groups[3]) == max(t5.tokens_a, t5.tokens_b)
    for method in ("ot_blocks", "random_blocks", "random_bos"):
        c = couple(a, b, method, seed=1, structure=blocks)
        assert c.permutation[0] == 0
        if method != "random_bos":
            for rows in groups:
                assert set(c.permutation[rows]) == set(rows), method
    perm = couple(a, b, "ot_blocks", structure=blocks).permutation
    s = token_structure(a, b, perm, blocks)
    clip, t5 = blocks
    words_a = [*range(1, clip.tokens_a), *range(77, 77 + t5.tokens_a)]
    real_b = {*range(clip.tokens_b), *range(77, 77 + t5.tokens_b)}
    assert s["bos_fixed"] is True
    assert s["real_to_pad"] == sum(perm[r] not in real_b for r in words_a)
    # A's words beyond B's count must land on B's padding, in each encoder
    assert s["real_to_pad"] >= sum(max(0, x.tokens_a - x.tokens_b) for x in blocks)
    ends_match = perm[clip.tokens_a - 1] == clip.tokens_b - 1 and (
        perm[76 + t5.tokens_a] == 76 + t5.tokens_b
    )
    assert s["eos_to_eos"] == ends_match


def test_token_numbers_without_a_start_token() -> None:
    model = load_pipeline(ModelSpec("tiny-flux"))
    ea, eb = encode(model, PROMPTS)
    a, b = ea.embeds.double().numpy(), eb.embeds.double().numpy()
    blocks = pair_blocks(ea.blocks, eb.blocks)
    s = token_structure(a, b, couple(a, b, "clip").permutation, blocks)
    assert s["bos_fixed"] is None  # T5's rows have no start token
    assert s["eos_to_eos"] == (ea.blocks[0].tokens == eb.blocks[0].tokens)
