"""The pre-registered tests against their definitions: direct sums of binomial terms, and
enumerations of every sign vector and every relabelling written out here."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
from scipy import stats

from otpc.exact import (
    bca_ci,
    jonckheere,
    jonckheere_p,
    median_ci,
    sign_test_p,
    signed_rank_p,
    theil_sen,
    tost_median,
)


def binom_tail(k: int, n: int) -> float:
    """P(Bin(n, 1/2) >= k), summed term by term."""
    return sum(math.comb(n, i) for i in range(k, n + 1)) / 2**n


def test_sign_test_and_tost_against_a_direct_computation() -> None:
    x = np.array([-0.03, -0.004, -0.001, 0.0, 0.002, 0.003, 0.005, 0.02, 0.012, -0.002])
    margin = 0.01
    # above -margin: 9 of 10; below +margin: 8 of 10 (0.02, 0.012 are not); none on a bound
    assert sign_test_p(x, -margin, "greater") == pytest.approx(binom_tail(9, 10))
    assert sign_test_p(x, margin, "less") == pytest.approx(binom_tail(8, 10))
    tost = tost_median(x, margin)
    assert tost["p"] == pytest.approx(max(binom_tail(9, 10), binom_tail(8, 10)))
    assert tost["p"] == max(tost["p_lower"], tost["p_upper"]) and tost["n"] == 10
    # values on the null carry no sign: n shrinks
    assert sign_test_p(np.array([0.0, 0.0, 1.0]), 0.0, "greater") == pytest.approx(0.5)
    assert sign_test_p(np.array([0.0]), 0.0, "less") == 1.0
    with pytest.raises(ValueError, match="positive"):
        tost_median(x, 0.0)


def test_tost_tells_equivalence_from_a_shifted_median() -> None:
    near = np.linspace(-0.002, 0.002, 30)
    assert tost_median(near, 0.01)["p"] < 1e-6
    shifted = near + 0.02
    assert tost_median(shifted, 0.01)["p"] == 1.0


@pytest.mark.parametrize("n", [5, 6, 12, 41])
def test_median_interval_is_the_narrowest_order_statistics_with_the_coverage(n: int) -> None:
    x = np.arange(n, dtype=float)[::-1] * 1.5  # order statistics x_(i) = 1.5 (i - 1)
    low, high, coverage = median_ci(x, 0.95)

    def cover(k: int) -> float:  # P(x_(k) <= median <= x_(n+1-k)), exactly
        return 1 - 2 * sum(math.comb(n, i) for i in range(k)) / 2**n

    feasible = [k for k in range(1, n // 2 + 1) if cover(k) >= 0.95]
    if not feasible:
        assert math.isnan(low) and math.isnan(high) and coverage == pytest.approx(cover(1))
        return
    best = max(feasible)
    assert (low, high) == (1.5 * (best - 1), 1.5 * (n - best))
    assert coverage == pytest.approx(cover(best)) and coverage >= 0.95
    assert cover(best + 1) < 0.95


def brute_signed_rank(x: np.ndarray) -> float:
    """Two-sided p of the signed-rank statistic over every sign vector."""
    x = x[x != 0]
    ranks = stats.rankdata(np.abs(x))
    centre = ranks.sum() / 2
    t = ranks[x > 0].sum()
    flips = [
        abs(sum(r for r, s in zip(ranks, signs, strict=True) if s > 0) - centre)
        for signs in itertools.product((-1, 1), repeat=len(x))
    ]
    return float(np.mean([f >= abs(t - centre) - 1e-12 for f in flips]))


def test_signed_rank_exact_p_is_the_enumeration() -> None:
    x = np.array([0.3, -0.1, 0.2, 0.2, -0.4, 0.5, 0.0, 0.25, 0.6])  # a tie and a zero
    p, method = signed_rank_p(x, 100, 0)
    assert method == "exact" and p == pytest.approx(brute_signed_rank(x))
    clean = np.array([1.1, -0.2, 2.3, 0.7, 1.9, -0.5, 0.9, 3.1])
    p, _ = signed_rank_p(clean, 100, 0)
    assert p == pytest.approx(stats.wilcoxon(clean, method="exact").pvalue)
    assert signed_rank_p(np.zeros(4), 100, 0)[1] == "undefined"


def test_signed_rank_resampling_is_seeded_and_near_the_enumeration() -> None:
    x = np.array([0.3, -0.1, 0.2, 0.15, -0.4, 0.5, 0.35, 0.25, 0.6, -0.05, 0.45])
    exact = brute_signed_rank(x)
    p, method = signed_rank_p(x, 20_000, 7, max_exact=2**10)
    assert method == "permutation (20000 resamples)"
    assert signed_rank_p(x, 20_000, 7, max_exact=2**10) == (p, method)
    assert abs(p - exact) < 0.02  # a fixed seed: this draw, not chance, is checked


def brute_j(groups: list[list[float]]) -> float:
    return sum(
        (x < y) + 0.5 * (x == y)
        for i, j in itertools.combinations(range(len(groups)), 2)
        for x in groups[i]
        for y in groups[j]
    )


def relabellings(values: list[float], sizes: tuple[int, ...]) -> list[float]:
    """J of every distinct assignment of ``values`` to groups of ``sizes``."""
    js = []
    for labels in set(itertools.permutations(np.repeat(np.arange(len(sizes)), sizes))):
        groups = [
            [v for v, g in zip(values, labels, strict=True) if g == k] for k in range(len(sizes))
        ]
        js.append(brute_j(groups))
    return js


def split(values: list[float], sizes: tuple[int, ...]) -> list[list[float]]:
    out, start = [], 0
    for size in sizes:
        out.append(values[start : start + size])
        start += size
    return out


CASES = [
    ([1, 2, 2, 3, 5, 5, 5], (2, 3, 2)),
    ([0.5, 1, 2, 3, 4, 6], (2, 2, 2)),
    ([1, 1, 2, 2, 2], (3, 2)),
]


@pytest.mark.parametrize(("values", "sizes"), CASES)
def test_jonckheere_moments_are_those_of_every_relabelling(
    values: list[float], sizes: tuple[int, ...]
) -> None:
    """Under no trend every assignment of the values to groups of these sizes is equally
    likely: the formula's mean and tie-corrected variance equal the exact ones."""
    js = relabellings(values, sizes)
    observed = split(values, sizes)
    z, p = jonckheere([np.array(g) for g in observed])
    mean, sd = float(np.mean(js)), float(np.std(js))
    assert z == pytest.approx((brute_j(observed) - mean) / sd, rel=1e-12)
    assert p == pytest.approx(2 * stats.norm.sf(abs(z)), rel=1e-12)


@pytest.mark.parametrize(("values", "sizes"), CASES)
def test_jonckheere_exact_p_is_the_enumeration(values: list[float], sizes: tuple[int, ...]) -> None:
    js = np.array(relabellings(values, sizes))
    observed = split(values, sizes)
    j = brute_j(observed)
    centre = float(np.mean(js))
    expected = float(np.mean(np.abs(js - centre) >= abs(j - centre) - 1e-12))
    out = jonckheere_p([np.array(g) for g in observed], 100, 0)
    assert out["method"] == "exact" and out["j"] == j
    assert out["p"] == pytest.approx(expected)


def test_jonckheere_resampling_is_seeded_and_follows_the_trend() -> None:
    rng = np.random.default_rng(0)
    rising = [rng.normal(k, 1.0, 12) for k in range(3)]
    out = jonckheere_p(rising, 2000, 5)
    assert out["method"] == "permutation (2000 resamples)" and out["z"] > 0
    assert out["p"] == pytest.approx(1 / 2001)  # nothing as extreme among the shuffles
    assert jonckheere_p(rising, 2000, 5) == out
    assert jonckheere_p(rising[::-1], 2000, 5)["z"] == pytest.approx(-out["z"])
    assert jonckheere_p([np.ones(3)], 100, 0)["method"] == "undefined"


def test_jonckheere_sign_follows_the_trend() -> None:
    rng = np.random.default_rng(0)
    rising = [rng.normal(k, 1.0, 30) for k in range(4)]
    z, p = jonckheere(rising)
    assert z > 0 and p < 1e-6
    z_down, _ = jonckheere(rising[::-1])
    assert z_down == pytest.approx(-z)
    assert all(math.isnan(v) for v in jonckheere([np.ones(3), np.ones(4)]))  # no variation
    assert all(math.isnan(v) for v in jonckheere([np.arange(4.0), np.array([])]))


def test_theil_sen_and_bca() -> None:
    x = np.array([0.0, 1.0, 2.0, 3.0, 4.0])
    line = theil_sen(x, 2.0 - 0.5 * x, 0.95)
    assert line["slope"] == pytest.approx(-0.5) and line["intercept"] == pytest.approx(2.0)
    assert math.isnan(theil_sen(np.ones(4), x[:4], 0.95)["slope"])
    sample = np.random.default_rng(3).exponential(1.0, 60)
    low, high = bca_ci(sample, np.mean, 0.95, 2000, 0)
    assert low < sample.mean() < high and bca_ci(sample, np.mean, 0.95, 2000, 0) == (low, high)
    assert bca_ci(np.full(5, 2.0), np.mean, 0.95, 200, 0) == (2.0, 2.0)
