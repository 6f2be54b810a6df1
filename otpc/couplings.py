"""Couplings between two point clouds A, B (n x d): which point of B each point of A moves to.

Every method is a function ``(a, b, rng_seed, options) -> Coupling`` registered in
``METHODS``; the pipeline's ``couple.methods`` accepts any registered name. Costs use the
squared Euclidean distance and uniform weights 1/n, as in ``docs/study.md``.
``couple`` couples one pair; ``couple_many`` couples thousands of pairs at once.

Methods that respect the prompts' token structure (``random_bos``, ``random_blocks``,
``ot_blocks``) need each prompt's token count (start and end tokens included): rows
``0 .. L-1`` of a prompt's embedding are its tokens (row 0 the start token, row L-1 the end
token), rows ``L .. n-1`` padding.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import os
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import ot
import torch
from scipy.optimize import linear_sum_assignment

from otpc.row_blocks import PairBlock, check_covers, clip_blocks, start_rows, token_groups
from otpc.seeds import derive_seed

PathKind = Literal["linear", "slerp", "barycentric"]


@dataclass(frozen=True)
class Coupling:
    """The result of coupling A to B.

    ``permutation[i]`` is the row of B that row i of A moves to (``None`` for entropic plans,
    which keep ``plan`` instead). ``cost`` is how far the path moves the rows: the mean
    squared distance (1/n) sum_i ||a_i - e_i||^2 from each row to where it ends,
    e_i = b_sigma(i), computed from the rows themselves (exactly 0 for a cloud matched to
    itself); for ``ot`` it is W2^2. For a plan, e_i = n (P B)_i: what the rendered path
    moves, not the plan's cost sum_ij P_ij ||a_i - b_j||^2.
    """

    method: str
    cost: float
    permutation: np.ndarray | None = None
    plan: np.ndarray | None = None
    path: PathKind = "linear"

    def target(self, b: np.ndarray) -> np.ndarray:
        """Where each row of A goes: B[sigma], or the barycentric image n * (P B)."""
        if self.permutation is not None:
            return b[self.permutation]
        assert self.plan is not None
        return self.plan.shape[0] * (self.plan @ b)


PairFn = Callable[[np.ndarray, np.ndarray, int, dict[str, Any]], Coupling]
BatchFn = Callable[[np.ndarray, np.ndarray, Sequence[int], dict[str, Any]], list[Coupling]]


@dataclass(frozen=True)
class Method:
    """A registered coupling method; ``batch`` couples a chunk of pairs (P, n, d) at once.
    ``needs_tokens``: it reads ``options["tokens"]``, the two prompts' token counts."""

    name: str
    fn: PairFn
    stochastic: bool = False
    doc: str = field(default="", compare=False)
    batch: BatchFn | None = None
    needs_tokens: bool = False


METHODS: dict[str, Method] = {}


def register(name: str, *, stochastic: bool = False, needs_tokens: bool = False) -> Callable:
    """Decorator: add a coupling function to ``METHODS`` under ``name``."""

    def wrap(fn: PairFn) -> PairFn:
        METHODS[name] = Method(
            name, fn, stochastic, (fn.__doc__ or "").strip(), needs_tokens=needs_tokens
        )
        return fn

    return wrap


def register_batch(name: str) -> Callable[[BatchFn], BatchFn]:
    """Decorator: give the registered method ``name`` a faster many-pairs implementation."""

    def wrap(fn: BatchFn) -> BatchFn:
        METHODS[name] = dataclasses.replace(METHODS[name], batch=fn)
        return fn

    return wrap


def cost_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Squared Euclidean distances ||a_i - b_j||^2 in float64."""
    return ot.dist(np.asarray(a, np.float64), np.asarray(b, np.float64), metric="sqeuclidean")


def cost_matrices(a: np.ndarray | torch.Tensor, b: np.ndarray | torch.Tensor) -> np.ndarray:
    """Batched squared Euclidean distances (P, n, n) in float64 for clouds a, b (P, n, d).

    ||a_i||^2 + ||b_j||^2 - 2 <a_i, b_j>, the formula of ``cost_matrix``, with one batched
    matrix product instead of P small ones.
    """
    at = torch.as_tensor(a).to(torch.float64)
    bt = torch.as_tensor(b).to(torch.float64)
    sq_a = torch.linalg.vector_norm(at, dim=-1).square_()
    sq_b = torch.linalg.vector_norm(bt, dim=-1).square_()
    m = torch.baddbmm(sq_a[:, :, None] + sq_b[:, None, :], at, bt.transpose(1, 2), alpha=-2)
    return m.clamp_min_(0).numpy()


def displacement(a: np.ndarray, target: np.ndarray) -> float:
    """(1/n) sum_i ||a_i - target_i||^2, from the row differences (no Gram formula, so
    identical rows cost exactly 0)."""
    diff = np.asarray(a, np.float64) - np.asarray(target, np.float64)
    return float(np.mean(np.sum(diff * diff, axis=1)))


def permutation_cost(a: np.ndarray, b: np.ndarray, perm: np.ndarray) -> float:
    """Mean squared distance between a_i and b_perm(i)."""
    return displacement(a, np.asarray(b)[perm])


def _as_array(x: Any, name: str, ndim: int) -> np.ndarray:
    """``x`` (array or tensor) as a numpy array of ``ndim`` dimensions: one cloud or a stack."""
    arr = x.detach().cpu().numpy() if hasattr(x, "detach") else np.asarray(x)
    if arr.ndim != ndim:
        what = "a 2-D point cloud (n x d)" if ndim == 2 else "a stack of point clouds (P x n x d)"
        raise ValueError(f"{name} must be {what}, got shape {arr.shape}")
    return arr


@register("clip")
def _identity(a: np.ndarray, b: np.ndarray, seed: int, options: dict[str, Any]) -> Coupling:
    """Identity: row i of A moves to row i of B (the usual row-by-row interpolation)."""
    perm = np.arange(a.shape[0])
    return Coupling("clip", permutation_cost(a, b, perm), perm)


@register("slerp")
def _slerp(a: np.ndarray, b: np.ndarray, seed: int, options: dict[str, Any]) -> Coupling:
    """Identity coupling, each row moved along a spherical arc (angle) with linear norm."""
    perm = np.arange(a.shape[0])
    return Coupling("slerp", permutation_cost(a, b, perm), perm, path="slerp")


@register("random", stochastic=True)
def _random(a: np.ndarray, b: np.ndarray, seed: int, options: dict[str, Any]) -> Coupling:
    """A uniformly random permutation drawn from ``seed``."""
    perm = np.random.default_rng(seed).permutation(a.shape[0])
    return Coupling("random", permutation_cost(a, b, perm), perm)


@register("ot")
def _exact_ot(a: np.ndarray, b: np.ndarray, seed: int, options: dict[str, Any]) -> Coupling:
    """Exact optimal transport (POT network simplex), returned as an optimal permutation."""
    return _ot_from_costs(cost_matrix(a, b), a, b, options)


@register_batch("ot")
def _exact_ot_many(
    a: np.ndarray, b: np.ndarray, seeds: Sequence[int], options: dict[str, Any]
) -> list[Coupling]:
    """``ot`` for a chunk of pairs: the cost matrices in one batched product, then ot.emd each."""
    return [_ot_from_costs(m, a[p], b[p], options) for p, m in enumerate(cost_matrices(a, b))]


def _ot_from_costs(
    m: np.ndarray, a: np.ndarray, b: np.ndarray, options: dict[str, Any]
) -> Coupling:
    """The ``ot`` coupling of A and B from their cost matrix ``m`` (n x n): ot.emd, then an
    optimal permutation, whose cost is computed from the matched rows.

    ``m`` comes from the Gram formula ||a||^2 + ||b||^2 - 2 <a, b>, which cancels inexactly
    (errors of order 1e-16 max(m)); it decides the matching, never the reported cost.
    """
    n = m.shape[0]
    w = np.full(n, 1.0 / n)
    plan, log = ot.emd(
        w,
        w,
        m,
        log=True,
        numItermax=options.get("max_iter", 1_000_000),
        center_dual=False,
        check_marginals=False,
    )
    if log.get("warning"):
        raise RuntimeError(f"ot.emd did not converge: {log['warning']}")
    perm = plan_to_permutation(plan, m)
    cost = permutation_cost(a, b, perm)
    if not math.isclose(
        cost, float(log["cost"]), rel_tol=1e-9, abs_tol=1e-9 * max(1.0, float(m.max(initial=0.0)))
    ):
        raise RuntimeError(
            f"extracted permutation costs {cost}, but ot.emd's optimum is {log['cost']}"
        )
    return Coupling("ot", cost, perm)


def plan_to_permutation(plan: np.ndarray, m: np.ndarray) -> np.ndarray:
    """An optimal permutation from an optimal uniform plan.

    A vertex solution of the simplex is a permutation matrix scaled by 1/n; we read it
    directly. A degenerate plan (mass split between rows) is never rounded: any permutation
    inside the plan's support is optimal (complementary slackness), so we solve the
    assignment problem restricted to that support.
    """
    n = plan.shape[0]
    support = plan > 1e-12 / n
    if np.count_nonzero(support) == n:  # n entries that reach all n columns: a permutation
        perm = np.argmax(support, axis=1)
        if len(np.unique(perm)) == n:
            return perm
    restricted = np.where(support, m, np.inf)
    rows, cols = linear_sum_assignment(restricted)
    perm = np.empty(n, dtype=np.int64)
    perm[rows] = cols
    return perm


@register("sinkhorn")
def _sinkhorn(a: np.ndarray, b: np.ndarray, seed: int, options: dict[str, Any]) -> Coupling:
    """Entropic OT (POT's log-stabilised Sinkhorn); a_i moves to its barycentric image n (P B)_i.

    An approximation of ``ot`` that is not a W2 geodesic. ``reg`` is relative to the mean
    of the cost matrix, so one value suits embeddings of any scale.
    """
    n = a.shape[0]
    m = cost_matrix(a, b)
    scale = float(m.mean()) or 1.0
    reg = float(options.get("sinkhorn_reg", 0.05))
    w = np.full(n, 1.0 / n)
    plan = ot.sinkhorn(
        w, w, m / scale, reg, method="sinkhorn_stabilized", numItermax=100_000, stopThr=1e-9
    )
    return Coupling("sinkhorn", displacement(a, n * (plan @ b)), plan=plan, path="barycentric")


def _structure(options: dict[str, Any], name: str, n: int) -> list[PairBlock]:
    """The pair's row blocks from ``options`` (``structure``, or CLIP's ``tokens``); a block
    with a start token needs at least 2 tokens (start and end)."""
    if "structure" in options:
        blocks = list(options["structure"])
    elif "tokens" in options:
        blocks = clip_blocks(options["tokens"], n)
    else:
        raise ValueError(f"coupling method {name!r} needs the prompts' token counts (tokens=)")
    check_covers(blocks, n)
    for x in blocks:
        if x.start_token and min(x.tokens_a, x.tokens_b) < 2:
            raise ValueError(
                f"token counts must be at least 2 (start and end), got {x.tokens_a}, {x.tokens_b}"
            )
    return blocks


def _within(blocks: list[np.ndarray], n: int, block_perm: Callable) -> np.ndarray:
    """A permutation that maps each block onto itself, by ``block_perm(rows) -> rows``."""
    perm = np.empty(n, dtype=np.int64)
    for rows in blocks:
        perm[rows] = block_perm(rows)
    return perm


@register("random_bos", stochastic=True)
def _random_bos(a: np.ndarray, b: np.ndarray, seed: int, options: dict[str, Any]) -> Coupling:
    """Start tokens to start tokens (row 0 for CLIP rows), every other row uniformly at random."""
    n = a.shape[0]
    rng = np.random.default_rng(seed)
    fixed = start_rows(options["structure"]) if "structure" in options else [0]
    rest = np.setdiff1d(np.arange(n), fixed)
    perm = _within([np.array([r]) for r in fixed] + [rest], n, rng.permutation)
    return Coupling("random_bos", permutation_cost(a, b, perm), perm)


@register("random_blocks", stochastic=True, needs_tokens=True)
def _random_blocks(a: np.ndarray, b: np.ndarray, seed: int, options: dict[str, Any]) -> Coupling:
    """Start tokens fixed; tokens to tokens and padding to padding, each group at random.

    Groups: ``otpc.row_blocks.token_groups``, within each encoder's rows."""
    n = a.shape[0]
    rng = np.random.default_rng(seed)
    groups = token_groups(_structure(options, "random_blocks", n))
    perm = _within(groups, n, rng.permutation)
    return Coupling("random_blocks", permutation_cost(a, b, perm), perm)


@register("ot_blocks", needs_tokens=True)
def _ot_blocks(a: np.ndarray, b: np.ndarray, seed: int, options: dict[str, Any]) -> Coupling:
    """Start tokens fixed; exact OT inside the token group and inside the padding group.

    Groups: ``otpc.row_blocks.token_groups``, within each encoder's rows. OT that may not
    trade meaning for padding."""
    n = a.shape[0]
    m = cost_matrix(a, b)

    def best(rows: np.ndarray) -> np.ndarray:
        _, cols = linear_sum_assignment(m[np.ix_(rows, rows)])
        return rows[cols]

    perm = _within(token_groups(_structure(options, "ot_blocks", n)), n, best)
    return Coupling("ot_blocks", permutation_cost(a, b, perm), perm)


def _method(name: str) -> Method:
    if name not in METHODS:
        raise KeyError(f"unknown coupling method {name!r}; known: {sorted(METHODS)}")
    return METHODS[name]


def couple(
    a: Any,
    b: Any,
    method: str,
    *,
    seed: int = 0,
    tokens: tuple[int, int] | None = None,
    structure: Sequence[PairBlock] | None = None,
    per_block: bool = False,
    **options: Any,
) -> Coupling:
    """Couple point cloud ``a`` to ``b`` with a registered ``method``.

    The prompts' token structure, for the methods that read it: ``structure``, the pair's
    row blocks (``otpc.row_blocks``), or for CLIP rows just ``tokens``, the two prompts'
    token counts. ``per_block``: couple each block's rows separately (``couple_many``)."""
    a_arr, b_arr = _as_array(a, "A", 2), _as_array(b, "B", 2)
    if a_arr.shape != b_arr.shape:
        raise ValueError(f"A and B must have the same shape, got {a_arr.shape} and {b_arr.shape}")
    if tokens is not None and structure is not None:
        raise ValueError("give the token structure once: tokens= (CLIP rows) or structure=")
    if tokens is not None:
        structure = clip_blocks(tokens, a_arr.shape[0])
    if per_block:
        pair = None if structure is None else [structure]
        return couple_many(
            a_arr[None],
            b_arr[None],
            method,
            [seed],
            structure=pair,
            per_block=True,
            workers=1,
            **options,
        )[0]
    extra = {} if structure is None else {"structure": list(structure)}
    return _method(method).fn(a_arr, b_arr, seed, {**options, **extra})


def _per_block(
    a: np.ndarray,
    b: np.ndarray,
    method: str,
    seeds: list[int],
    structure: Sequence[Sequence[PairBlock]],
    workers: int | None,
    chunk_size: int,
    options: dict[str, Any],
) -> list[Coupling]:
    """``couple_many(..., per_block=True)``: each block's rows coupled alone, then joined."""
    layout = [(x.encoder, x.start, x.rows) for x in structure[0]]
    if any([(x.encoder, x.start, x.rows) for x in s] != layout for s in structure):
        raise ValueError("per-block coupling needs the same row blocks in every pair")
    for blocks in structure:
        check_covers(blocks, a.shape[1])
    parts = []
    for k, (encoder, start, rows) in enumerate(layout):
        local = [
            [dataclasses.replace(s[k], start=0)] for s in structure
        ]  # the block alone, its rows renumbered from 0
        block_seeds = seeds if k == 0 else [derive_seed(s, "block", encoder) for s in seeds]
        parts.append(
            couple_many(
                a[:, start : start + rows],
                b[:, start : start + rows],
                method,
                block_seeds,
                structure=local,
                workers=workers,
                chunk_size=chunk_size,
                **options,
            )
        )
    return [join_blocks([part[p] for part in parts]) for p in range(a.shape[0])]


def join_blocks(parts: Sequence[Coupling]) -> Coupling:
    """One coupling of all rows from couplings of consecutive blocks of rows."""
    sizes = [_rows(c) for c in parts]
    n = sum(sizes)
    cost = sum(c.cost * k for c, k in zip(parts, sizes, strict=True)) / n
    first = parts[0]
    offsets = np.cumsum([0, *sizes[:-1]])
    if all(c.permutation is not None for c in parts):
        perm = np.concatenate(
            [np.asarray(c.permutation) + o for c, o in zip(parts, offsets, strict=True)]
        )
        return Coupling(first.method, cost, perm, path=first.path)
    plan = np.zeros((n, n))
    for c, o, k in zip(parts, offsets, sizes, strict=True):
        block = c.plan if c.plan is not None else np.eye(k)[np.asarray(c.permutation)] / k
        plan[o : o + k, o : o + k] = block * (k / n)
    return Coupling(first.method, cost, plan=plan, path=first.path)


def _rows(c: Coupling) -> int:
    return len(c.permutation) if c.permutation is not None else len(np.asarray(c.plan))


@contextlib.contextmanager
def _torch_threads(n: int) -> Iterator[None]:
    """Run with ``n`` torch intra-op threads, restoring the previous count after."""
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def couple_many(
    a: Any,
    b: Any,
    method: str,
    seeds: Sequence[int] | None = None,
    *,
    tokens: Sequence[tuple[int, int]] | None = None,
    structure: Sequence[Sequence[PairBlock]] | None = None,
    per_block: bool = False,
    workers: int | None = None,
    chunk_size: int = 8,
    **options: Any,
) -> list[Coupling]:
    """Couple ``a[p]`` to ``b[p]`` for each of P pairs (a, b: P x n x d).

    ``seeds[p]`` seeds pair p (default 0); ``structure[p]`` is its row blocks, or for CLIP
    rows ``tokens[p]`` its prompts' token counts (for the methods that read them).

    ``per_block`` couples each block's rows on their own (the same blocks for every pair:
    one model) and joins the parts: a permutation that keeps every row in its encoder's
    block, or a block-diagonal plan with each block's mass in proportion to its rows; the
    cost is the row-weighted mean of the blocks' costs. Block k > 0 draws from a seed derived
    from the pair's and the encoder's name. With one block it is the joint coupling.

    Chunks of
    ``chunk_size`` pairs run on ``workers`` threads (default ``os.cpu_count()``): the
    matrix products and POT's network simplex release the GIL. Torch is held to one
    intra-op thread during the call, so that idle-spinning torch threads do not take the
    cores from the solver threads.
    """
    meth = _method(method)
    a_arr, b_arr = _as_array(a, "A", 3), _as_array(b, "B", 3)
    if a_arr.shape != b_arr.shape:
        raise ValueError(f"A and B must have the same shape, got {a_arr.shape} and {b_arr.shape}")
    pairs, n = a_arr.shape[0], a_arr.shape[1]
    seed_list = [0] * pairs if seeds is None else [int(s) for s in seeds]
    if len(seed_list) != pairs:
        raise ValueError(f"got {len(seed_list)} seeds for {pairs} pairs")
    if tokens is not None and structure is not None:
        raise ValueError("give the token structure once: tokens= (CLIP rows) or structure=")
    if tokens is not None:
        if len(tokens) != pairs:
            raise ValueError(f"got {len(tokens)} token counts for {pairs} pairs")
        structure = [clip_blocks(t, n) for t in tokens]
    if structure is not None and len(structure) != pairs:
        raise ValueError(f"got {len(structure)} row structures for {pairs} pairs")
    if (meth.needs_tokens or per_block) and structure is None:
        raise ValueError(f"coupling method {method!r} needs the prompts' token counts (tokens=)")
    if per_block and structure is not None:
        return _per_block(a_arr, b_arr, method, seed_list, structure, workers, chunk_size, options)

    def opts(p: int) -> dict[str, Any]:
        return options if structure is None else {**options, "structure": structure[p]}

    if chunk_size < 1:
        raise ValueError(f"chunk_size must be at least 1, got {chunk_size}")
    workers = (os.cpu_count() or 1) if workers is None else workers
    if workers < 1:
        raise ValueError(f"workers must be at least 1, got {workers}")

    def run(start: int) -> list[Coupling]:
        stop = start + chunk_size
        if meth.batch is not None:
            return meth.batch(a_arr[start:stop], b_arr[start:stop], seed_list[start:stop], options)
        return [
            meth.fn(a_arr[p], b_arr[p], seed_list[p], opts(p))
            for p in range(start, min(stop, pairs))
        ]

    starts = range(0, pairs, chunk_size)
    with _torch_threads(1):
        if workers == 1 or len(starts) <= 1:
            return [c for start in starts for c in run(start)]
        with ThreadPoolExecutor(min(workers, len(starts))) as pool:
            return [c for chunk in pool.map(run, starts) for c in chunk]
