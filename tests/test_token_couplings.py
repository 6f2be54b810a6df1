"""The couplings that respect the prompts' token structure, what ``token_structure`` reports,
and sinkhorn's cost: how far its path moves the rows."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from scipy.optimize import linear_sum_assignment

from otpc.couplings import cost_matrix, couple, couple_many
from otpc.paths import path_frames, t_grid
from otpc.row_blocks import clip_blocks, token_groups
from otpc.token_structure import token_structure

N = 12


def clouds(seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.standard_normal((N, 5)), rng.standard_normal((N, 5))


def token_blocks(tokens: tuple[int, int], n: int) -> list[np.ndarray]:
    """The groups structure-respecting couplings keep, for CLIP rows with these token counts."""
    return token_groups(clip_blocks(tokens, n))


def blocks_of(perm: np.ndarray, blocks: list[np.ndarray]) -> bool:
    """Each block is mapped onto itself."""
    return all(set(perm[rows].tolist()) == set(rows.tolist()) for rows in blocks)


@pytest.mark.parametrize("tokens", [(4, 4), (3, 7), (9, 2), (20, 5)])
def test_token_blocks_cover_the_rows_once(tokens: tuple[int, int]) -> None:
    blocks = token_blocks(tokens, N)
    rows = np.concatenate(blocks)
    np.testing.assert_array_equal(np.sort(rows), np.arange(N))
    assert blocks[0].tolist() == [0]
    m = min(max(tokens), N)
    assert blocks[1].tolist() == list(range(1, m))


@pytest.mark.parametrize("tokens", [(4, 4), (3, 7), (9, 2)])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_ot_blocks_is_optimal_inside_each_block(tokens: tuple[int, int], seed: int) -> None:
    a, b = clouds(seed)
    c = couple(a, b, "ot_blocks", tokens=tokens)
    blocks = token_blocks(tokens, N)
    assert blocks_of(c.permutation, blocks) and c.permutation[0] == 0
    m = cost_matrix(a, b)
    for rows in blocks:
        r, k = linear_sum_assignment(m[np.ix_(rows, rows)])
        best = m[np.ix_(rows, rows)][r, k].sum()
        assert m[rows, c.permutation[rows]].sum() == pytest.approx(best, rel=1e-12)
    # never cheaper than unrestricted OT, never dearer than the identity (which respects blocks)
    assert couple(a, b, "ot").cost <= c.cost + 1e-12 <= couple(a, b, "clip").cost + 1e-12


@pytest.mark.parametrize("seed", range(5))
def test_random_baselines_keep_their_blocks(seed: int) -> None:
    a, b = clouds(seed)
    tokens = (3 + seed, 6)
    bos = couple(a, b, "random_bos", seed=seed)
    assert bos.permutation[0] == 0 and sorted(bos.permutation) == list(range(N))
    assert bos.permutation[1:].tolist() != list(range(1, N))  # a real reordering
    blocks = couple(a, b, "random_blocks", seed=seed, tokens=tokens)
    assert blocks_of(blocks.permutation, token_blocks(tokens, N))
    again = couple(a, b, "random_blocks", seed=seed, tokens=tokens)
    np.testing.assert_array_equal(blocks.permutation, again.permutation)


def test_methods_that_need_token_counts_say_so() -> None:
    a, b = clouds(0)
    for method in ("ot_blocks", "random_blocks"):
        with pytest.raises(ValueError, match=f"{method}.*token counts"):
            couple(a, b, method)
        with pytest.raises(ValueError, match=f"{method}.*token counts"):
            couple_many(a[None], b[None], method)
    with pytest.raises(ValueError, match="at least 2"):
        couple(a, b, "ot_blocks", tokens=(1, 5))


def test_token_structure_of_known_permutations() -> None:
    a, b = clouds(3)
    tokens = (4, 6)  # A: rows 0-3 tokens (3 its end); B: rows 0-5 (5 its end)
    identity = np.arange(N)
    s = token_structure(a, b, identity, clip_blocks(tokens, N))
    assert s["bos_fixed"] and not s["eos_to_eos"] and s["real_to_pad"] == 0
    per_row = np.sum((a - b) ** 2, axis=1)
    assert s["real_cost_share"] == pytest.approx(per_row[:4].sum() / per_row.sum())
    swapped = identity.copy()
    swapped[[0, 1]] = [1, 0]  # start token to a word; a word to the start token
    swapped[[2, 7]] = [7, 2]  # a word of A to padding of B
    swapped[[3, 5]] = [5, 3]  # A's end token to B's end token
    s = token_structure(a, b, swapped, clip_blocks(tokens, N))
    assert not s["bos_fixed"] and s["eos_to_eos"] and s["real_to_pad"] == 1
    # rows 0, 1, 2, 3 of A (its tokens) and 5, 7 (padding) go elsewhere than their own row
    assert s["rows_moved_tokens"] == 4 and s["rows_moved_padding"] == 2
    same = token_structure(a, b, identity, clip_blocks(tokens, N))
    assert same["rows_moved_tokens"] == same["rows_moved_padding"] == 0
    assert (
        token_structure(a, a, identity, clip_blocks(tokens, N))["real_cost_share"] is None
    )  # cost 0
    assert set(token_structure(a, b, None, clip_blocks(tokens, N)).values()) == {None}


def test_every_permutation_method_counts_tokens_sent_to_padding_the_same_way() -> None:
    """real_to_pad counts rows 1 .. L_A-1 of A whose partner is a padding row of B."""
    a, b = clouds(4)
    for method, tokens in itertools.product(("ot", "random", "ot_blocks"), [(5, 3), (3, 5)]):
        c = couple(a, b, method, seed=2, tokens=tokens)
        expected = sum(1 for i in range(1, tokens[0]) if c.permutation[i] >= tokens[1])
        assert (
            token_structure(a, b, c.permutation, clip_blocks(tokens, N))["real_to_pad"] == expected
        )
    blocks = couple(a, b, "ot_blocks", tokens=(5, 3))
    assert (
        token_structure(a, b, blocks.permutation, clip_blocks((5, 3), N))["real_to_pad"] == 2
    )  # 5 > 3: B pads


def test_sinkhorn_cost_is_how_far_its_path_moves() -> None:
    a, b = clouds(5)
    c = couple(a, b, "sinkhorn", sinkhorn_reg=0.5)
    path = path_frames(a, b, c, t_grid(3)).numpy()
    moved = np.mean(np.sum((path[-1] - path[0]) ** 2, axis=1))
    assert c.cost == pytest.approx(moved, rel=1e-12)
    assert c.cost < float(np.sum(c.plan * cost_matrix(a, b)))  # not the plan's cost
