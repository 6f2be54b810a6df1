"""What a coupling does with the prompts' token structure.

In each encoder's block of rows (``otpc.row_blocks``), the first L rows (L = the prompt's
token count there) are its tokens: for CLIP, row 0 the start token (the same for every
prompt), row L-1 the end token; the rest is padding. Of the 77 rows of a CxC caption, 62-67
are padding, so "OT is smoother" may mean "OT re-aligns padding" as much as "OT matches
meaning"; these numbers tell them apart.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TypedDict

import numpy as np

from otpc.row_blocks import PairBlock, real_rows, start_rows


class TokenStructure(TypedDict):
    """Per coupling (None for an entropic plan, which has no permutation)."""

    bos_fixed: bool | None  # start tokens go to start tokens (None: the rows have none)
    eos_to_eos: bool | None  # each of A's end tokens goes to B's end token of its encoder
    real_to_pad: int | None  # real-token rows of A (start tokens excluded) sent to padding of B
    real_cost_share: float | None  # share of the cost in A's real-token rows (None: cost 0)
    rows_moved_tokens: int | None  # A's token rows sent to another row of B than their own
    rows_moved_padding: int | None  # A's padding rows sent to another row of B than their own


def token_structure(
    a: np.ndarray, b: np.ndarray, perm: np.ndarray | None, blocks: Sequence[PairBlock]
) -> TokenStructure:
    """The token structure of the coupling ``perm`` of A (n x d) to B, whose rows are laid
    out in ``blocks`` (``otpc.row_blocks``; for CLIP rows, ``clip_blocks``)."""
    if perm is None:
        return {
            "bos_fixed": None,
            "eos_to_eos": None,
            "real_to_pad": None,
            "real_cost_share": None,
            "rows_moved_tokens": None,
            "rows_moved_padding": None,
        }
    starts = start_rows(blocks)
    real_a, real_b = real_rows(blocks, "a"), real_rows(blocks, "b")
    words_a = np.setdiff1d(real_a, starts)  # A's real rows, start tokens excluded
    ends = [
        (x.start + x.tokens_a - 1, x.start + x.tokens_b - 1)
        for x in blocks
        if x.tokens_a > 0 and x.tokens_b > 0
    ]
    diff = np.asarray(a, np.float64) - np.asarray(b, np.float64)[perm]
    per_row = np.sum(diff * diff, axis=1)
    total = float(per_row.sum())
    moved = perm != np.arange(len(perm))
    token = np.isin(np.arange(len(perm)), real_a)
    return {
        "bos_fixed": bool(all(perm[r] == r for r in starts)) if starts else None,
        "eos_to_eos": bool(all(perm[ea] == eb for ea, eb in ends)) if ends else None,
        "real_to_pad": int(np.count_nonzero(~np.isin(perm[words_a], real_b))),
        "real_cost_share": float(per_row[real_a].sum() / total) if total > 0 else None,
        "rows_moved_tokens": int(np.count_nonzero(moved & token)),
        "rows_moved_padding": int(np.count_nonzero(moved & ~token)),
    }
