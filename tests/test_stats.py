"""The study's statistics against their definitions: exact enumeration, the procedures they
shorten, and data whose answer is known by construction."""

from __future__ import annotations

import math

import numpy as np
import polars as pl
import pytest
from scipy import stats

from otpc.stats import displacement_residuals, holm, log_ratios, paired, wilson_ci


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


def test_tied_pairs_are_neither_smoother_nor_rougher() -> None:
    """Where OT is the identity its path is clip's: r = 0. Such pairs stay in n, count as
    not smoother and are reported as tied; they carry no sign, so the signed-rank test (exact
    here) sees the other four."""
    rows = []
    for i, ratio in enumerate([1.0, 1.0, 1.0, 0.5, 0.6, 0.7, 0.8]):
        rows += [(f"p{i}", "[0,1)", "ot", 0, ratio, 1.0), (f"p{i}", "[0,1)", "clip", 0, 1.0, 1.0)]
    out = paired(scores_table(rows), "ot", "clip", ["[0,1)"], 0.95, 200, 0)["all"]
    assert out["n"] == 7 and out["share_tied"] == pytest.approx(3 / 7)
    assert out["share_smoother"] == pytest.approx(4 / 7)
    r = np.log([0.5, 0.6, 0.7, 0.8])
    assert out["wilcoxon_p"] == pytest.approx(stats.wilcoxon(r, method="exact").pvalue)
    assert out["wilcoxon_method"] == "exact"


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
