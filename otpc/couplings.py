"""Couplings between two point clouds A, B (n x d): which point of B each point of A moves to.

Every method is a function ``(a, b, rng_seed, options) -> Coupling`` registered in
``METHODS``; the pipeline's ``couple.methods`` accepts any registered name. Costs use the
squared Euclidean distance and uniform weights 1/n, as in ``shared/docs/study.md``.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import ot
from scipy.optimize import linear_sum_assignment

PathKind = Literal["linear", "slerp", "barycentric"]


@dataclass(frozen=True)
class Coupling:
    """The result of coupling A to B.

    ``permutation[i]`` is the row of B that row i of A moves to (``None`` for entropic plans,
    which keep ``plan`` instead). ``cost`` is the mean squared distance of matched rows
    (for a plan: sum_ij P_ij ||a_i - b_j||^2). ``w2`` is the exact W2^2 for ``ot``.
    """

    method: str
    cost: float
    permutation: np.ndarray | None = None
    plan: np.ndarray | None = None
    w2: float | None = None
    path: PathKind = "linear"

    def target(self, b: np.ndarray) -> np.ndarray:
        """Where each row of A goes: B[sigma], or the barycentric image n * (P B)."""
        if self.permutation is not None:
            return b[self.permutation]
        assert self.plan is not None
        return self.plan.shape[0] * (self.plan @ b)


@dataclass(frozen=True)
class Method:
    """A registered coupling method."""

    name: str
    fn: Callable[[np.ndarray, np.ndarray, int, dict[str, Any]], Coupling]
    stochastic: bool = False
    doc: str = field(default="", compare=False)


METHODS: dict[str, Method] = {}


def register(name: str, *, stochastic: bool = False) -> Callable:
    """Decorator: add a coupling function to ``METHODS`` under ``name``."""

    def wrap(fn: Callable[[np.ndarray, np.ndarray, int, dict[str, Any]], Coupling]) -> Callable:
        METHODS[name] = Method(name, fn, stochastic, (fn.__doc__ or "").strip())
        return fn

    return wrap


def cost_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Squared Euclidean distances ||a_i - b_j||^2 in float64."""
    return ot.dist(np.asarray(a, np.float64), np.asarray(b, np.float64), metric="sqeuclidean")


def permutation_cost(a: np.ndarray, b: np.ndarray, perm: np.ndarray) -> float:
    """Mean squared distance between a_i and b_perm(i)."""
    diff = np.asarray(a, np.float64) - np.asarray(b, np.float64)[perm]
    return float(np.mean(np.sum(diff * diff, axis=1)))


def _as_cloud(x: Any, name: str) -> np.ndarray:
    arr = x.detach().cpu().numpy() if hasattr(x, "detach") else np.asarray(x)
    if arr.ndim != 2:
        raise ValueError(f"{name} must be a 2-D point cloud (n x d), got shape {arr.shape}")
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
    n = a.shape[0]
    m = cost_matrix(a, b)
    w = np.full(n, 1.0 / n)
    plan, log = ot.emd(w, w, m, log=True, numItermax=options.get("max_iter", 1_000_000))
    if log.get("warning"):
        raise RuntimeError(f"ot.emd did not converge: {log['warning']}")
    w2 = float(log["cost"])
    perm = plan_to_permutation(plan, m)
    cost = float(m[np.arange(n), perm].mean())
    if not np.isclose(cost, w2, rtol=1e-9, atol=1e-9 * max(1.0, abs(w2))):
        raise RuntimeError(f"extracted permutation costs {cost}, but W2^2 is {w2}")
    return Coupling("ot", cost, perm, w2=w2)


def plan_to_permutation(plan: np.ndarray, m: np.ndarray) -> np.ndarray:
    """An optimal permutation from an optimal uniform plan.

    A vertex solution of the simplex is a permutation matrix scaled by 1/n; we read it
    directly. A degenerate plan (mass split between rows) is never rounded: any permutation
    inside the plan's support is optimal (complementary slackness), so we solve the
    assignment problem restricted to that support.
    """
    n = plan.shape[0]
    support = plan > 1e-12 / n
    if np.all(support.sum(axis=1) == 1) and np.all(support.sum(axis=0) == 1):
        return np.argmax(support, axis=1)
    restricted = np.where(support, m, np.inf)
    rows, cols = linear_sum_assignment(restricted)
    perm = np.empty(n, dtype=np.int64)
    perm[rows] = cols
    return perm


@register("sinkhorn")
def _sinkhorn(a: np.ndarray, b: np.ndarray, seed: int, options: dict[str, Any]) -> Coupling:
    """Entropic OT (POT Sinkhorn); each a_i moves to its barycentric image n (P B)_i.

    An approximation of ``ot`` that is not a W2 geodesic. ``reg`` is relative to the mean
    of the cost matrix, so one value suits embeddings of any scale.
    """
    n = a.shape[0]
    m = cost_matrix(a, b)
    scale = float(m.mean()) or 1.0
    reg = float(options.get("sinkhorn_reg", 0.05))
    w = np.full(n, 1.0 / n)
    plan = ot.sinkhorn(w, w, m / scale, reg, method="sinkhorn_log", numItermax=100_000,
                       stopThr=1e-9)
    return Coupling("sinkhorn", float(np.sum(plan * m)), plan=plan, path="barycentric")


def derive_seed(*parts: object) -> int:
    """A 63-bit seed from ``parts`` (stable across runs, platforms and orderings)."""
    digest = hashlib.sha256("/".join(map(str, parts)).encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1


def couple(a: Any, b: Any, method: str, *, seed: int = 0, **options: Any) -> Coupling:
    """Couple point cloud ``a`` to ``b`` with a registered ``method``."""
    if method not in METHODS:
        raise KeyError(f"unknown coupling method {method!r}; known: {sorted(METHODS)}")
    a_arr, b_arr = _as_cloud(a, "A"), _as_cloud(b, "B")
    if a_arr.shape != b_arr.shape:
        raise ValueError(f"A and B must have the same shape, got {a_arr.shape} and {b_arr.shape}")
    return METHODS[method].fn(a_arr, b_arr, seed, options)
