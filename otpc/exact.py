"""Exact and permutation tests and intervals for the pre-registered analysis: plain functions
over arrays, the math in each docstring.

Where the null distribution can be enumerated it is (method ``exact``); otherwise it is
sampled with a seeded generator (method ``permutation (B resamples)``, p = (1 + #{as or
more extreme}) / (1 + B), never 0), so the same data give the same p on every machine.
"""

from __future__ import annotations

import itertools
import math
import warnings
from collections.abc import Callable, Sequence
from typing import Literal

import numpy as np
from scipy import stats

EXACT = "exact"
UNDEFINED = "undefined"
TOLERANCE = 1e-9  # relative: statistics this close to the observed one count as as extreme


def resampled(n_resamples: int) -> str:
    """The method name of a Monte Carlo permutation test."""
    return f"permutation ({n_resamples} resamples)"


def _binom_sf(k: int, n: int) -> float:
    """P(Bin(n, 1/2) >= k)."""
    return float(stats.binom.sf(k - 1, n, 0.5))


def sign_test_p(x: np.ndarray, null: float, alternative: Literal["greater", "less"]) -> float:
    """Exact one-sided sign test of the median against ``null``. With n = #{x != null} and
    k = #{x > null}: ``greater`` (median > null) p = P(Bin(n, 1/2) >= k), ``less``
    (median < null) p = P(Bin(n, 1/2) <= k); 1 when n = 0."""
    x = np.asarray(x, dtype=np.float64)
    n = int(np.count_nonzero(x != null))
    k = int(np.count_nonzero(x > null))
    if n == 0:
        return 1.0
    return _binom_sf(k, n) if alternative == "greater" else _binom_sf(n - k, n)


def tost_median(x: np.ndarray, margin: float) -> dict[str, float | int | str]:
    """Two one-sided tests that the median of ``x`` lies in (-margin, margin): H0 median <=
    -margin is tested by ``sign_test_p(x, -margin, "greater")``, H0 median >= margin by
    ``sign_test_p(x, margin, "less")``; equivalence is shown at level alpha when both
    reject, i.e. when p = max(p_lower, p_upper) < alpha."""
    if not margin > 0:
        raise ValueError(f"the equivalence margin must be positive, got {margin}")
    lower = sign_test_p(x, -margin, "greater")
    upper = sign_test_p(x, margin, "less")
    return {
        "p": max(lower, upper),
        "p_lower": lower,
        "p_upper": upper,
        "n": len(x),
        "margin": margin,
        "method": "exact sign tests",
    }


def median_ci(x: np.ndarray, confidence: float) -> tuple[float, float, float]:
    """The distribution-free interval of the median from order statistics: (x_(l),
    x_(n+1-l)) (1-based) with the largest l whose coverage 1 - 2 P(Bin(n, 1/2) <= l - 1) is
    at least ``confidence``; returns (low, high, coverage). When even (min, max) covers
    less (n too small), (nan, nan, that coverage); (nan, nan, nan) for no values."""
    x = np.sort(np.asarray(x, dtype=np.float64))
    n = len(x)
    if n == 0:
        return math.nan, math.nan, math.nan
    best = None
    for low in range(1, n // 2 + 1):
        coverage = 1.0 - 2.0 * float(stats.binom.cdf(low - 1, n, 0.5))
        if coverage < confidence:
            break
        best = (low, coverage)
    if best is None:
        return math.nan, math.nan, 1.0 - 2.0 * 0.5**n
    low, coverage = best
    return float(x[low - 1]), float(x[n - low]), coverage


def _signed_rank(signs: np.ndarray, ranks: np.ndarray) -> np.ndarray:
    """T = sum of the ranks whose sign is positive, for each row of ``signs`` (+-1)."""
    return (signs > 0) @ ranks


def signed_rank_p(
    x: np.ndarray, n_resamples: int, seed: int, max_exact: int = 2**16
) -> tuple[float, str]:
    """Two-sided Wilcoxon signed-rank test of ``x`` against 0 by sign flips. Zeros are
    dropped (they carry no sign); ties among |x| get their average rank. T = sum of the
    ranks of the positive values; under H0 every sign vector is equally likely, E T =
    sum(ranks) / 2, and p = P(|T* - E T| >= |T - E T|). Every sign vector is enumerated
    when 2^n <= ``max_exact`` (``exact``); else ``n_resamples`` seeded ones are drawn."""
    x = np.asarray(x, dtype=np.float64)
    x = x[x != 0]
    n = len(x)
    if n == 0:
        return math.nan, UNDEFINED
    ranks = stats.rankdata(np.abs(x))
    centre = ranks.sum() / 2
    observed = abs(_signed_rank(np.sign(x)[None], ranks)[0] - centre)
    slack = TOLERANCE * max(1.0, centre)
    if 2**n <= max_exact:
        signs = np.array(list(itertools.product((-1.0, 1.0), repeat=n)))
        extreme = np.abs(_signed_rank(signs, ranks) - centre) >= observed - slack
        return float(extreme.mean()), EXACT
    rng = np.random.default_rng(seed)
    count = 0
    for start in range(0, n_resamples, 1024):
        signs = rng.choice((-1.0, 1.0), size=(min(1024, n_resamples - start), n))
        count += int(np.sum(np.abs(_signed_rank(signs, ranks) - centre) >= observed - slack))
    return (1 + count) / (1 + n_resamples), resampled(n_resamples)


def jonckheere(samples: Sequence[np.ndarray]) -> tuple[float, float]:
    """Jonckheere-Terpstra test for a trend across ordered groups: (z, two-sided p).

    J = sum_{i<j} sum_{x in g_i, y in g_j} ([x < y] + [x = y] / 2), large when values grow
    with the group's order. Under no trend (labels exchangeable), with N values, group
    sizes n_i and tie sizes t_k (Hollander & Wolfe):
    E[J] = (N^2 - sum n_i^2) / 4, and
    Var[J] = (N(N-1)(2N+5) - sum n_i(n_i-1)(2n_i+5) - sum t_k(t_k-1)(2t_k+5)) / 72
           + sum n_i(n_i-1)(n_i-2) sum t_k(t_k-1)(t_k-2) / (36 N(N-1)(N-2))
           + sum n_i(n_i-1) sum t_k(t_k-1) / (8 N(N-1)).
    z = (J - E[J]) / sqrt(Var[J]); NaN when fewer than two groups have values or all
    values are equal.
    """
    groups = [np.asarray(g, dtype=np.float64) for g in samples if len(g)]
    if len(groups) < 2:
        return float("nan"), float("nan")
    j = 0.0
    for i, lower in enumerate(groups):
        ordered = np.sort(lower)
        for upper in groups[i + 1 :]:
            below = np.searchsorted(ordered, upper, side="left")
            not_above = np.searchsorted(ordered, upper, side="right")
            j += float(np.sum(below) + 0.5 * np.sum(not_above - below))
    n_i = np.array([len(g) for g in groups], dtype=np.float64)
    n = n_i.sum()
    _, ties = np.unique(np.concatenate(groups), return_counts=True)
    t = ties.astype(np.float64)
    mean = (n * n - np.sum(n_i * n_i)) / 4
    var = (
        n * (n - 1) * (2 * n + 5)
        - np.sum(n_i * (n_i - 1) * (2 * n_i + 5))
        - np.sum(t * (t - 1) * (2 * t + 5))
    ) / 72
    if n > 2:
        var += (
            np.sum(n_i * (n_i - 1) * (n_i - 2))
            * np.sum(t * (t - 1) * (t - 2))
            / (36 * n * (n - 1) * (n - 2))
        )
    var += np.sum(n_i * (n_i - 1)) * np.sum(t * (t - 1)) / (8 * n * (n - 1))
    if var <= 0:
        return float("nan"), float("nan")
    z = (j - mean) / math.sqrt(var)
    return float(z), float(2 * stats.norm.sf(abs(z)))


def _jt_statistic(below: np.ndarray, labels: np.ndarray, n_groups: int) -> np.ndarray:
    """J for each row of ``labels`` (group index per value): sum over group pairs g < h of
    sum_{i in g, j in h} C[i, j], with C[i, j] = [x_i < x_j] + [x_i = x_j] / 2."""
    onehot = (labels[..., None] == np.arange(n_groups)).astype(np.float64)  # (B, N, G)
    between = (onehot.transpose(0, 2, 1) @ below) @ onehot  # (B, G, G)
    return np.triu(between, k=1).sum(axis=(1, 2))


def _assignments(sizes: Sequence[int]) -> np.ndarray:
    """Every distinct assignment of N = sum(sizes) values to groups of ``sizes``, as rows of
    group indices."""
    rows: list[list[int]] = []

    def place(prefix: list[int], left: list[int]) -> None:
        if not any(left):
            rows.append(prefix)
            return
        for g, k in enumerate(left):
            if k:
                place([*prefix, g], [*left[:g], k - 1, *left[g + 1 :]])

    place([], list(sizes))
    return np.array(rows)


def jonckheere_p(
    samples: Sequence[np.ndarray], n_resamples: int, seed: int, max_exact: int = 20_000
) -> dict[str, float | str]:
    """Jonckheere-Terpstra test of a trend across ordered groups, by relabelling.
    J = sum_{i<j} sum_{x in g_i, y in g_j} ([x < y] + [x = y] / 2), E J = (N^2 - sum
    n_i^2) / 4 under exchangeable labels (group sizes fixed); two-sided p = P(|J* - E J| >=
    |J - E J|), over every distinct assignment when there are at most ``max_exact``
    (N! / prod n_i!, ``exact``), else over ``n_resamples`` seeded shuffles. ``z`` is the
    tie-corrected normal score (``jonckheere``), for the direction (z < 0: the
    values fall along the groups). Empty groups are skipped."""
    groups = [np.asarray(g, dtype=np.float64) for g in samples if len(g)]
    nan = math.nan
    if len(groups) < 2:
        return {"j": nan, "z": nan, "p": nan, "method": UNDEFINED}
    values = np.concatenate(groups)
    sizes = [len(g) for g in groups]
    labels = np.repeat(np.arange(len(groups)), sizes)
    below = (values[:, None] < values[None, :]) + 0.5 * (values[:, None] == values[None, :])
    j = float(_jt_statistic(below, labels[None], len(groups))[0])
    n = len(values)
    centre = (n * n - sum(s * s for s in sizes)) / 4
    slack = TOLERANCE * max(1.0, centre)
    z, _ = jonckheere(groups)
    count = math.factorial(n) // math.prod(math.factorial(s) for s in sizes)
    if count <= max_exact:
        stat = _jt_statistic(below, _assignments(sizes), len(groups))
        p = float(np.mean(np.abs(stat - centre) >= abs(j - centre) - slack))
        return {"j": j, "z": z, "p": p, "method": EXACT}
    rng = np.random.default_rng(seed)
    extreme = 0
    for start in range(0, n_resamples, 256):
        shuffled = rng.permuted(np.tile(labels, (min(256, n_resamples - start), 1)), axis=1)
        stat = _jt_statistic(below, shuffled, len(groups))
        extreme += int(np.sum(np.abs(stat - centre) >= abs(j - centre) - slack))
    return {
        "j": j,
        "z": z,
        "p": (1 + extreme) / (1 + n_resamples),
        "method": resampled(n_resamples),
    }


def theil_sen(x: np.ndarray, y: np.ndarray, confidence: float) -> dict[str, float]:
    """The Theil-Sen line of ``y`` on ``x``: slope = median of (y_j - y_i) / (x_j - x_i) over
    pairs with x_i != x_j, intercept = median(y - slope x), with Sen's interval for the
    slope at ``confidence``; NaN with fewer than two distinct x."""
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    if len(np.unique(x)) < 2:
        nan = math.nan
        return {"slope": nan, "intercept": nan, "slope_ci_low": nan, "slope_ci_high": nan}
    res = stats.theilslopes(y, x, alpha=confidence)
    return {
        "slope": float(res.slope),
        "intercept": float(res.intercept),
        "slope_ci_low": float(res.low_slope),
        "slope_ci_high": float(res.high_slope),
    }


def bca_ci(
    x: np.ndarray,
    statistic: Callable[..., np.ndarray],
    confidence: float,
    n_resamples: int,
    seed: int,
) -> tuple[float, float]:
    """The bias-corrected and accelerated bootstrap interval of ``statistic`` (Efron's BCa:
    percentile levels shifted by the bias z0 = Phi^-1(share of resamples below the
    estimate) and the jackknife acceleration); (x0, x0) when every value is x0, NaN for
    fewer than two values or where BCa is undefined."""
    x = np.asarray(x, dtype=np.float64)
    if len(x) < 2:
        return math.nan, math.nan
    if np.all(x == x[0]):
        return float(x[0]), float(x[0])
    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a degenerate resample: the interval says NaN
        res = stats.bootstrap(
            (x,),
            statistic,
            confidence_level=confidence,
            n_resamples=n_resamples,
            method="BCa",
            rng=np.random.default_rng(seed),
        )
    return float(res.confidence_interval.low), float(res.confidence_interval.high)
