"""What a coupling does with the prompts' token structure.

Rows ``0 .. L-1`` of a prompt's embedding (L = its token count, at most n) are its tokens:
row 0 the start token (the same for every prompt), row L-1 the end token; rows L .. n-1 are
padding. Of the 77 rows of a CxC caption, 62-67 are padding, so "OT is smoother" may mean
"OT re-aligns padding" as much as "OT matches meaning"; these numbers tell them apart.
"""

from __future__ import annotations

from typing import TypedDict

import numpy as np


class TokenStructure(TypedDict):
    """Per coupling (None for an entropic plan, which has no permutation)."""

    bos_fixed: bool | None  # the start token goes to the start token
    eos_to_eos: bool | None  # A's end token goes to B's end token
    real_to_pad: int | None  # real-token rows of A (start token excluded) sent to padding of B
    real_cost_share: float | None  # share of the cost in A's real-token rows (None: cost 0)


def token_structure(
    a: np.ndarray, b: np.ndarray, perm: np.ndarray | None, tokens: tuple[int, int]
) -> TokenStructure:
    """The token structure of the coupling ``perm`` of A (n x d) to B, whose prompts have
    ``tokens`` = (L_A, L_B) tokens."""
    if perm is None:
        return {"bos_fixed": None, "eos_to_eos": None, "real_to_pad": None, "real_cost_share": None}
    n = a.shape[0]
    la, lb = (min(int(t), n) for t in tokens)
    diff = np.asarray(a, np.float64) - np.asarray(b, np.float64)[perm]
    per_row = np.sum(diff * diff, axis=1)
    total = float(per_row.sum())
    return {
        "bos_fixed": bool(perm[0] == 0),
        "eos_to_eos": bool(perm[la - 1] == lb - 1),
        "real_to_pad": int(np.count_nonzero(perm[1:la] >= lb)),
        "real_cost_share": float(per_row[:la].sum() / total) if total > 0 else None,
    }
