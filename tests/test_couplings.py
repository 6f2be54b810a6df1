"""Properties of the couplings: optimality of ``ot``, equivariance, degenerate plans, errors,
and the batched ``couple_many``."""

from __future__ import annotations

import itertools
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import ot
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from otpc.couplings import (
    METHODS,
    cost_matrices,
    cost_matrix,
    couple,
    couple_many,
    permutation_cost,
    plan_to_permutation,
)

coords = st.floats(-10, 10, allow_nan=False, allow_infinity=False)


@st.composite
def cloud_pairs(draw: st.DrawFn, max_n: int = 6, max_d: int = 4) -> tuple[np.ndarray, np.ndarray]:
    """Two clouds of the same shape with arbitrary coordinates (ties and duplicates allowed)."""
    n = draw(st.integers(1, max_n))
    d = draw(st.integers(1, max_d))
    a = draw(arrays(np.float64, (n, d), elements=coords))
    b = draw(arrays(np.float64, (n, d), elements=coords))
    return a, b


def generic_pair(seed: int, n: int, d: int = 5) -> tuple[np.ndarray, np.ndarray]:
    """Continuous random clouds: their optimal permutation is unique almost surely."""
    rng = np.random.default_rng(seed)
    return rng.standard_normal((n, d)), rng.standard_normal((n, d)) + 0.5


def brute_force(a: np.ndarray, b: np.ndarray) -> float:
    """The least permutation cost, by trying every permutation."""
    return min(permutation_cost(a, b, np.array(p)) for p in itertools.permutations(range(len(a))))


def tol(*costs: float) -> float:
    return 1e-9 * max(1.0, *map(abs, costs))


def is_permutation(perm: np.ndarray, n: int) -> bool:
    return perm.shape == (n,) and sorted(perm.tolist()) == list(range(n))


@settings(max_examples=150, deadline=None)
@given(cloud_pairs())
def test_ot_matches_brute_force(pair: tuple[np.ndarray, np.ndarray]) -> None:
    a, b = pair
    c = couple(a, b, "ot")
    best = brute_force(a, b)
    assert is_permutation(c.permutation, len(a))
    assert abs(c.cost - best) <= tol(best)
    assert abs(permutation_cost(a, b, c.permutation) - best) <= tol(best)


@settings(max_examples=100, deadline=None)
@given(cloud_pairs(max_n=12, max_d=8), st.randoms(use_true_random=False))
def test_ot_never_costs_more_than_clip_or_random(pair: tuple[np.ndarray, np.ndarray], rnd) -> None:
    a, b = pair
    best = couple(a, b, "ot").cost
    clip = couple(a, b, "clip").cost
    assert clip == pytest.approx(permutation_cost(a, b, np.arange(len(a))))
    assert best <= clip + tol(clip)
    for _ in range(5):
        perm = np.array(rnd.sample(range(len(a)), len(a)))
        other = permutation_cost(a, b, perm)
        assert best <= other + tol(other)
    seeded = couple(a, b, "random", seed=rnd.randrange(2**32))
    assert best <= seeded.cost + tol(seeded.cost)


@settings(max_examples=60, deadline=None)
@given(cloud_pairs(max_n=8), st.data())
def test_ot_cost_is_invariant_to_row_order(pair: tuple[np.ndarray, np.ndarray], data) -> None:
    a, b = pair
    n = len(a)
    pi = np.array(data.draw(st.permutations(range(n))))
    rho = np.array(data.draw(st.permutations(range(n))))
    base = couple(a, b, "ot").cost
    assert couple(a[pi], b, "ot").cost == pytest.approx(base, rel=1e-9, abs=1e-9)
    assert couple(a, b[rho], "ot").cost == pytest.approx(base, rel=1e-9, abs=1e-9)


@settings(max_examples=60, deadline=None)
@given(st.integers(0, 2**32 - 1), st.integers(2, 20), st.data())
def test_ot_permutation_is_equivariant(seed: int, n: int, data) -> None:
    """Generic data: permuting A's rows by pi gives sigma o pi; B's by rho, rho^-1 o sigma."""
    a, b = generic_pair(seed, n)
    pi = np.array(data.draw(st.permutations(range(n))))
    rho = np.array(data.draw(st.permutations(range(n))))
    sigma = couple(a, b, "ot").permutation
    np.testing.assert_array_equal(couple(a[pi], b, "ot").permutation, sigma[pi])
    np.testing.assert_array_equal(couple(a, b[rho], "ot").permutation, np.argsort(rho)[sigma])


@settings(max_examples=15, deadline=None)
@given(st.integers(0, 2**32 - 1))
def test_sinkhorn_cost_approaches_w2(seed: int) -> None:
    """The entropic plan's cost <P, M> falls monotonically to W2^2 as reg shrinks, within the
    bound eps * log(n) (eps = reg * mean cost, ``reg`` being relative to the mean cost); the
    reported cost, how far the barycentric path moves, is at most <P, M> (Jensen)."""
    a, b = generic_pair(seed, 8, 3)
    n = len(a)
    w2 = couple(a, b, "ot").cost
    m = cost_matrix(a, b)
    eps_unit = m.mean()
    regs = (1.0, 0.3, 0.1, 0.05)
    plans = [couple(a, b, "sinkhorn", sinkhorn_reg=r) for r in regs]
    for c in plans:
        assert c.cost <= float(np.sum(c.plan * m)) * (1 + 1e-12)
    gaps = [float(np.sum(c.plan * m)) - w2 for c in plans]
    for reg, gap in zip(regs, gaps, strict=True):
        assert -1e-9 * w2 <= gap <= reg * eps_unit * np.log(n) + 1e-9 * w2, (reg, gaps)
    assert all(x > y for x, y in itertools.pairwise(gaps)), gaps


def test_degenerate_plan_mixing_two_optimal_permutations() -> None:
    """A (duplicated points) has two optimal couplings; the plan splitting mass between them
    is optimal but not a vertex, and must yield one of them, never a rounding of the plan."""
    a = np.array([[0.0, 0.0], [0.0, 0.0], [5.0, 1.0], [2.0, -3.0]])
    b = np.array([[1.0, 0.0], [0.0, 1.0], [5.0, 2.0], [2.0, -2.0]])
    n = len(a)
    best = brute_force(a, b)
    optimal = [
        np.array(p)
        for p in itertools.permutations(range(n))
        if abs(permutation_cost(a, b, np.array(p)) - best) <= tol(best)
    ]
    assert len(optimal) == 2
    plan = (np.eye(n)[optimal[0]] + np.eye(n)[optimal[1]]) / (2 * n)
    m = cost_matrix(a, b)
    assert np.sum(plan * m) == pytest.approx(best)
    perm = plan_to_permutation(plan, m)
    assert is_permutation(perm, n)
    assert any(np.array_equal(perm, p) for p in optimal)


def test_fully_tied_plan_gives_a_permutation() -> None:
    """Identical points: every coupling is optimal and the uniform plan 1/n^2 is optimal."""
    n = 7
    a = np.ones((n, 3))
    plan = np.full((n, n), 1.0 / n**2)
    perm = plan_to_permutation(plan, cost_matrix(a, a))
    assert is_permutation(perm, n)
    c = couple(a, a, "ot")
    assert is_permutation(c.permutation, n) and c.cost == 0.0


@settings(max_examples=40, deadline=None)
@given(st.integers(1, 4), st.integers(1, 3), st.integers(0, 2**32 - 1))
def test_ot_with_many_duplicates(k: int, d: int, seed: int) -> None:
    """Clouds made of k distinct points repeated: many optimal permutations, all fine."""
    rng = np.random.default_rng(seed)
    a = rng.integers(-2, 3, (k, d)).astype(float)[rng.integers(0, k, 6)]
    b = rng.integers(-2, 3, (k, d)).astype(float)[rng.integers(0, k, 6)]
    c = couple(a, b, "ot")
    assert is_permutation(c.permutation, 6)
    assert c.cost == pytest.approx(brute_force(a, b), abs=1e-9)


def test_random_is_seeded() -> None:
    a, b = generic_pair(0, 30)
    first = couple(a, b, "random", seed=3).permutation
    np.testing.assert_array_equal(first, couple(a, b, "random", seed=3).permutation)
    assert not np.array_equal(first, couple(a, b, "random", seed=4).permutation)


def test_errors_name_the_problem() -> None:
    a, b = generic_pair(0, 4)
    with pytest.raises(KeyError, match="'nope'"):
        couple(a, b, "nope")
    with pytest.raises(ValueError, match="same shape"):
        couple(a, b[:3], "ot")
    with pytest.raises(ValueError, match="2-D point cloud"):
        couple(a[0], b[0], "ot")
    with pytest.raises(KeyError, match="'nope'"):
        couple_many(a[None], b[None], "nope")
    with pytest.raises(ValueError, match="same shape"):
        couple_many(a[None], b[None, :3], "ot")
    with pytest.raises(ValueError, match="stack of point clouds"):
        couple_many(a, b, "ot")
    with pytest.raises(ValueError, match="2 seeds for 1 pairs"):
        couple_many(a[None], b[None], "random", seeds=[1, 2])
    with pytest.raises(ValueError, match="workers"):
        couple_many(a[None], b[None], "ot", workers=0)


def test_cost_matrices_match_pot() -> None:
    rng = np.random.default_rng(0)
    a, b = rng.standard_normal((5, 9, 16)), rng.standard_normal((5, 9, 16))
    batched = cost_matrices(torch.from_numpy(a).float(), b)
    assert batched.dtype == np.float64 and batched.shape == (5, 9, 9)
    for p in range(5):
        np.testing.assert_allclose(
            batched[p],
            ot.dist(a[p].astype(np.float32).astype(np.float64), b[p]),
            rtol=1e-12,
            atol=1e-12,
        )


@pytest.mark.parametrize("method", sorted(METHODS))
@pytest.mark.parametrize("workers", [1, 2])
def test_couple_many_equals_couple(method: str, workers: int) -> None:
    """Every pair of the batch gets the coupling ``couple`` gives it alone, whatever the
    threads, chunks and input type (float32 torch tensors here)."""
    gen = torch.Generator().manual_seed(7)
    a, b = torch.randn(13, 10, 6, generator=gen), torch.randn(13, 10, 6, generator=gen)
    seeds = list(range(100, 113))
    tokens = [(2 + p % 7, 2 + (3 * p) % 9) for p in range(13)]
    many = couple_many(
        a, b, method, seeds, tokens=tokens, workers=workers, chunk_size=4, sinkhorn_reg=0.1
    )
    assert len(many) == 13
    for p, c in enumerate(many):
        single = couple(
            a[p].double(), b[p].double(), method, seed=seeds[p], tokens=tokens[p], sinkhorn_reg=0.1
        )
        assert c.method == single.method and c.path == single.path
        assert c.cost == pytest.approx(single.cost, rel=1e-9)
        if single.permutation is None:
            np.testing.assert_allclose(c.plan, single.plan, rtol=1e-9, atol=1e-15)
        else:
            np.testing.assert_array_equal(c.permutation, single.permutation)
    if METHODS[method].stochastic:
        assert len({tuple(c.permutation) for c in many}) == 13


def test_couple_many_restores_torch_threads_and_handles_empty() -> None:
    before = torch.get_num_threads()
    assert couple_many(np.zeros((0, 4, 3)), np.zeros((0, 4, 3)), "ot") == []
    a, b = generic_pair(1, 5)
    couple_many(np.stack([a, b]), np.stack([b, a]), "ot", workers=2, chunk_size=1)
    assert torch.get_num_threads() == before


def test_benchmark_script_runs(tmp_path) -> None:
    """benchmarks/couple.py at a tiny size: it runs, checks itself against ``couple`` and
    reports its numbers."""
    script = Path(__file__).resolve().parents[1] / "benchmarks" / "couple.py"
    proc = subprocess.run(
        [
            sys.executable,
            str(script),
            "--pairs",
            "50",
            "--n",
            "12",
            "--dim",
            "32",
            "--block",
            "20",
            "--workers",
            "2",
            "--check",
            "5",
        ],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr
    assert "50 pairs of 12 x 32 clouds, 2 worker(s)" in proc.stdout
    assert re.search(r"coupling: [\d.]+ s total, \d+ pairs/s", proc.stdout)
    assert "checked 5 pair(s) against couple()" in proc.stdout
