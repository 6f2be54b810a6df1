"""Where a prompt's rows come from: runs of rows ("blocks"), each from one text encoder, its
first rows the prompt's tokens and the rest padding.

SD 1.x/2.x: one block of 77 CLIP rows, row 0 the start token. SDXL: the same 77 rows, two
CLIPs side by side in each. SD3: 77 CLIP rows, then T5's rows (no start token). FLUX.1: T5's
rows only. A block's ``tokens`` counts the prompt's tokens in it (start and end tokens
included, at most its rows): rows ``start .. start + tokens - 1`` are real, the rest padding.

The coupling methods that respect token structure, the per-encoder coupling
(``couple.blocks: per_encoder``) and the token-structure numbers of the couplings table all
read a pair's blocks (``PairBlock``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class RowBlock:
    """One encoder's rows of one prompt's embedding."""

    encoder: str
    start: int
    rows: int
    tokens: int
    start_token: bool  # its first row is a start token, the same for every prompt

    def __post_init__(self) -> None:
        if not 0 <= self.tokens <= self.rows or self.start < 0:
            raise ValueError(f"bad row block {self}")


@dataclass(frozen=True)
class PairBlock:
    """One encoder's rows in both prompts of a pair (the same rows, their own token counts)."""

    encoder: str
    start: int
    rows: int
    tokens_a: int
    tokens_b: int
    start_token: bool

    @property
    def stop(self) -> int:
        return self.start + self.rows


def pair_blocks(a: Sequence[RowBlock], b: Sequence[RowBlock]) -> list[PairBlock]:
    """The blocks of a pair; ``ValueError`` if the two prompts' rows are laid out differently
    (embedded by different models)."""
    layout_a = [(x.encoder, x.start, x.rows, x.start_token) for x in a]
    layout_b = [(x.encoder, x.start, x.rows, x.start_token) for x in b]
    if layout_a != layout_b:
        raise ValueError(f"the prompts' rows differ in layout: {layout_a} and {layout_b}")
    return [
        PairBlock(x.encoder, x.start, x.rows, x.tokens, y.tokens, x.start_token)
        for x, y in zip(a, b, strict=True)
    ]


def clip_blocks(tokens: tuple[int, int], n: int) -> list[PairBlock]:
    """The blocks of a pair of CLIP embeddings of ``n`` rows whose prompts have ``tokens``
    tokens (start and end included): one block, row 0 the start token."""
    la, lb = (min(int(t), n) for t in tokens)
    return [PairBlock("clip", 0, n, la, lb, True)]


def check_covers(blocks: Sequence[PairBlock], n: int) -> None:
    """``ValueError`` unless ``blocks`` tile rows 0 .. n-1 in order."""
    edges = [(x.start, x.stop) for x in blocks]
    if not edges or edges[0][0] != 0 or edges[-1][1] != n:
        raise ValueError(f"row blocks {edges} do not cover the {n} rows")
    if any(prev[1] != nxt[0] for prev, nxt in zip(edges, edges[1:], strict=False)):
        raise ValueError(f"row blocks {edges} are not contiguous")


def start_rows(blocks: Sequence[PairBlock]) -> list[int]:
    """The start-token rows (the first row of each block that has one)."""
    return [x.start for x in blocks if x.start_token]


def token_groups(blocks: Sequence[PairBlock]) -> list[np.ndarray]:
    """The rows that structure-respecting couplings map among themselves, the same on both
    sides, per block: its start token; its real block (the longer prompt's tokens after the
    start token, m = max(L_A, L_B) rows: the shorter prompt's first padding rows join it, so
    that each group is square and the coupling stays a permutation); its padding."""
    groups = []
    for x in blocks:
        first = x.start + (1 if x.start_token else 0)
        m = x.start + max(x.tokens_a, x.tokens_b, 1 if x.start_token else 0)
        parts = [np.arange(x.start, first), np.arange(first, m), np.arange(m, x.stop)]
        groups += [g for g in parts if len(g)]
    return groups


def real_rows(blocks: Sequence[PairBlock], side: str) -> np.ndarray:
    """Rows holding prompt ``side``'s ("a" or "b") tokens, start tokens included."""
    return np.concatenate(
        [np.arange(x.start, x.start + getattr(x, f"tokens_{side}")) for x in blocks]
    ).astype(np.int64)


def end_rows(blocks: Sequence[PairBlock], side: str) -> list[int]:
    """Each block's end-token row of prompt ``side`` (blocks without tokens have none)."""
    counts = [(x.start, getattr(x, f"tokens_{side}")) for x in blocks]
    return [start + count - 1 for start, count in counts if count > 0]


def label(blocks: Sequence[RowBlock]) -> str:
    """The blocks in words, e.g. ``clip 9/77, t5 12/256`` (tokens / rows of each encoder)."""
    return ", ".join(f"{x.encoder} {x.tokens}/{x.rows}" for x in blocks)
