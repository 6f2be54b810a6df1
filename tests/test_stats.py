"""The study's statistics against their definitions: exact enumeration, the procedures they
shorten, and data whose answer is known by construction."""

from __future__ import annotations

import itertools
import math

import numpy as np
import polars as pl
import pytest
from scipy import stats

from otpc.stats import (
    bootstrap_ci,
    displacement_residuals,
    holm,
    jonckheere,
    log_ratios,
    paired,
    spearman,
    trend,
    wilson_ci,
)


def brute_j(groups: list[list[float]]) -> float:
    return sum(
        (x < y) + 0.5 * (x == y)
        for i, j in itertools.combinations(range(len(groups)), 2)
        for x in groups[i]
        for y in groups[j]
    )


@pytest.mark.parametrize(
    ("values", "sizes"),
    [
        ([1, 2, 2, 3, 5, 5, 5], (2, 3, 2)),
        ([0.5, 1, 2, 3, 4, 6], (2, 2, 2)),
        ([1, 1, 2, 2, 2], (3, 2)),
    ],
)
def test_jonckheere_moments_are_those_of_every_relabelling(
    values: list[float], sizes: tuple[int, ...]
) -> None:
    """Under no trend every assignment of the values to groups of these sizes is equally
    likely: the formula's mean and tie-corrected variance equal the exact ones."""
    js = []
    for labels in set(itertools.permutations(np.repeat(np.arange(len(sizes)), sizes))):
        groups = [
            [v for v, g in zip(values, labels, strict=True) if g == k] for k in range(len(sizes))
        ]
        js.append(brute_j(groups))
    observed = []
    start = 0
    for size in sizes:
        observed.append(values[start : start + size])
        start += size
    z, p = jonckheere([np.array(g) for g in observed])
    mean, sd = float(np.mean(js)), float(np.std(js))
    assert z == pytest.approx((brute_j(observed) - mean) / sd, rel=1e-12)
    assert p == pytest.approx(2 * stats.norm.sf(abs(z)), rel=1e-12)


def test_jonckheere_sign_follows_the_trend() -> None:
    rng = np.random.default_rng(0)
    rising = [rng.normal(k, 1.0, 30) for k in range(4)]
    z, p = jonckheere(rising)
    assert z > 0 and p < 1e-6
    z_down, _ = jonckheere(rising[::-1])
    assert z_down == pytest.approx(-z)
    assert all(math.isnan(v) for v in jonckheere([np.ones(3), np.ones(4)]))  # no variation
    assert all(math.isnan(v) for v in jonckheere([np.arange(4.0), np.array([])]))


def step_down(p: list[float], alpha: float) -> set[int]:
    """Holm's procedure: reject the smallest p while p_(j) <= alpha / (m - j + 1)."""
    order = np.argsort(p, kind="stable")
    rejected: set[int] = set()
    for j, idx in enumerate(order):
        if p[idx] > alpha / (len(p) - j):
            break
        rejected.add(int(idx))
    return rejected


@pytest.mark.parametrize("seed", range(6))
def test_holm_adjusted_p_rejects_what_holms_procedure_rejects(seed: int) -> None:
    rng = np.random.default_rng(seed)
    p = (rng.uniform(0, 0.2, 7) ** 2).tolist()
    adjusted = holm(p)
    for alpha in np.linspace(0.001, 0.3, 60):
        assert {i for i, a in enumerate(adjusted) if a <= alpha} == step_down(p, alpha)
    assert all(a >= q for a, q in zip(adjusted, p, strict=True)) and max(adjusted) <= 1
    with_nan = holm([0.01, float("nan"), 0.02])
    assert math.isnan(with_nan[1]) and with_nan[0] == pytest.approx(0.02)


@pytest.mark.parametrize(("k", "n"), [(0, 10), (3, 10), (10, 10), (57, 200), (1, 1)])
def test_wilson_interval_is_where_the_score_test_is_at_its_critical_value(k: int, n: int) -> None:
    """The Wilson interval is {p0 : |k/n - p0| <= z sqrt(p0 (1 - p0) / n)}: its ends solve
    the equality (an end at 0 or 1 may be the boundary)."""
    z = stats.norm.ppf(0.975)
    lo, hi = wilson_ci(k, n, 0.95)
    assert 0 <= lo <= k / n <= hi <= 1
    for end in (lo, hi):
        if 0 < end < 1:
            assert abs(k / n - end) == pytest.approx(z * math.sqrt(end * (1 - end) / n), rel=1e-9)
    assert all(math.isnan(v) for v in wilson_ci(0, 0, 0.95))


def test_spearman_with_a_pair_bootstrap_interval() -> None:
    rng = np.random.default_rng(1)
    x = rng.uniform(0, 5, 60)
    y = -x + rng.normal(0, 1.0, 60)
    out = spearman(x, y, 0.95, 1000, seed=0)
    rho, p = stats.spearmanr(x, y)
    assert out["rho"] == pytest.approx(rho) and out["rho_p"] == pytest.approx(p)
    assert -1 <= out["rho_ci_low"] < out["rho"] < out["rho_ci_high"] < 0
    assert spearman(x, y, 0.95, 1000, seed=0) == out  # seeded
    perfect = spearman(x, 2 * x, 0.95, 500, seed=0)
    assert perfect["rho"] == pytest.approx(1.0) and perfect["rho_ci_low"] == pytest.approx(1.0)
    assert math.isnan(spearman(x[:2], y[:2], 0.95, 500, 0)["rho"])


def test_bootstrap_ci_of_the_median_contains_it() -> None:
    x = np.random.default_rng(2).standard_normal(80)
    lo, hi = bootstrap_ci(x, 0.9, 1000, 0, statistic=np.median)
    assert lo < float(np.median(x)) < hi
    assert bootstrap_ci(x, 0.9, 1000, 0, statistic=np.median) == (lo, hi)


def scores_table(rows: list[tuple[str, str, str, int, float, float]]) -> pl.DataFrame:
    return pl.DataFrame(
        rows, schema=["pair_id", "group", "method", "replicate", "ppl", "cost"], orient="row"
    ).with_columns(pl.lit(1.0).alias("score"))


def test_log_ratios_and_paired_comparison() -> None:
    """ot is half as long as clip on three pairs and twice as long on one; a pair whose ot
    path does not change has no ratio."""
    rows = [
        ("p1", "[0,1)", "ot", 0, 1.0, 1.0),
        ("p1", "[0,1)", "clip", 0, 2.0, 1.0),
        ("p2", "[0,1)", "ot", 0, 2.0, 1.0),
        ("p2", "[0,1)", "clip", 0, 4.0, 1.0),
        ("p3", "[1,2]", "ot", 0, 3.0, 1.0),
        ("p3", "[1,2]", "clip", 0, 6.0, 1.0),
        ("p4", "[1,2]", "ot", 0, 8.0, 1.0),
        ("p4", "[1,2]", "clip", 0, 4.0, 1.0),
        ("p5", "[1,2]", "ot", 0, 0.0, 0.0),
        ("p5", "[1,2]", "clip", 0, 4.0, 1.0),
    ]
    pairs = scores_table(rows)
    r = log_ratios(pairs, "ot", "clip")
    assert r["pair_id"].to_list() == ["p1", "p2", "p3", "p4", "p5"]
    assert r["r"].to_list()[4] is None  # ot's path does not change: no ratio
    np.testing.assert_allclose(r["r"].to_numpy()[:4], np.log([0.5, 0.5, 0.5, 2.0]))
    out = paired(pairs, "ot", "clip", ["[0,1)", "[1,2]"], 0.95, 200, 0)
    assert out["all"]["n"] == 4 and out["all"]["n_undefined"] == 1
    assert out["all"]["share_smoother"] == 0.75 and out["all"]["share_tied"] == 0
    assert out["all"]["median_log_ratio"] == pytest.approx(math.log(0.5))
    assert out["[0,1)"]["share_smoother"] == 1.0 and out["[1,2]"]["n_undefined"] == 1
    low, high = sorted(out[g]["wilcoxon_p"] for g in ("[0,1)", "[1,2]"))
    adjusted = sorted(out[g]["holm_p"] for g in ("[0,1)", "[1,2]"))
    assert adjusted == pytest.approx([min(1, 2 * low), max(min(1, 2 * low), high)])


def test_tied_pairs_are_neither_smoother_nor_dropped_from_the_test() -> None:
    """Where OT is the identity its path is clip's: r = 0. Such pairs stay in n, count as
    not smoother, are reported as tied, and stay in the signed-rank test."""
    rows = []
    for i, ratio in enumerate([1.0, 1.0, 1.0, 0.5, 0.6, 0.7, 0.8]):
        rows += [(f"p{i}", "[0,1)", "ot", 0, ratio, 1.0), (f"p{i}", "[0,1)", "clip", 0, 1.0, 1.0)]
    out = paired(scores_table(rows), "ot", "clip", ["[0,1)"], 0.95, 200, 0)["all"]
    assert out["n"] == 7 and out["share_tied"] == pytest.approx(3 / 7)
    assert out["share_smoother"] == pytest.approx(4 / 7)
    r = np.log([1.0, 1.0, 1.0, 0.5, 0.6, 0.7, 0.8])
    expected = stats.wilcoxon(r, zero_method="zsplit").pvalue
    assert out["wilcoxon_p"] == pytest.approx(expected)


def test_trend_sees_an_advantage_that_grows_with_similarity() -> None:
    """ot's ratio to random falls from 0.9 (score 0.5) to 0.3 (score 4.5): r falls with the
    score, so rho < 0 and the Jonckheere-Terpstra z < 0; reversed, both change sign."""
    groups = ["[0,1)", "[1,2)", "[2,3)", "[3,4)", "[4,5]"]
    rows = []
    for g, ratio in enumerate(np.linspace(0.9, 0.3, 5)):
        for j in range(4):
            pid, score = f"p{g}{j}", g + 0.2 * j + 0.1
            rows += [
                (pid, groups[g], "ot", 0, ratio * (1 + 0.01 * j), 1.0, score),
                (pid, groups[g], "random", 0, 1.0, 2.0, score),
            ]
    table = pl.DataFrame(
        rows,
        schema=["pair_id", "group", "method", "replicate", "ppl", "cost", "score"],
        orient="row",
    )
    falling = trend(table, "ot", "random", groups, 0.95, 500, 0)
    assert falling["n"] == 20 and falling["rho"] < -0.9 and falling["rho_ci_high"] < 0
    assert falling["jt_z"] < 0 and falling["jt_p"] < 1e-3
    rising = trend(table, "random", "ot", groups, 0.95, 500, 0)
    assert rising["rho"] == pytest.approx(-falling["rho"])
    assert rising["jt_z"] == pytest.approx(-falling["jt_z"])


def test_displacement_residual_is_the_distance_below_the_cost_line() -> None:
    """The other paths lie on log(ppl) = 0.5 + 2 cost; ot lies 0.3 below it."""
    rows = []
    for pair, alpha in (("p1", 0.5), ("p2", 0.5)):
        for rep, cost in enumerate((1.0, 1.5, 2.0)):
            rows.append((pair, "[0,1)", "random", rep, math.exp(alpha + 2 * cost), cost))
        rows.append((pair, "[0,1)", "clip", 0, math.exp(alpha + 2 * 1.2), 1.2))
        rows.append((pair, "[0,1)", "ot", 0, math.exp(alpha + 2 * 0.8 - 0.3), 0.8))
    # A second method whose path is OT's own (same cost, same ppl) must not pull the line.
    rows += [(r[0], r[1], "ot_blocks", 0, r[4], r[5]) for r in rows if r[2] == "ot"]
    res = displacement_residuals(scores_table(rows), "ot")
    np.testing.assert_allclose(res["residual"].to_numpy(), [-0.3, -0.3], atol=1e-9)
    np.testing.assert_allclose(res["slope"].to_numpy(), [2.0, 2.0], atol=1e-9)
    assert res["extrapolated"].to_list() == [True, True]  # 0.8 is below every fitted cost
    too_few = scores_table([r for r in rows if r[2] not in ("random",)])
    assert displacement_residuals(too_few, "ot").is_empty()
