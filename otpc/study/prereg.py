"""The pre-registered analysis: the tests ``params.yaml`` declares before results exist, their
multiplicity adjustment, and the verdict each allows (docs/study.md, "Pre-registered
analysis").

Declared (``aggregate``): the primary comparison OT vs ``primary`` on ``measure`` at the
scored K; ``co_primary``, the same comparison on another measure, as its sensitivity twin;
every other comparison OT vs a method on ``measure``; one trend test (Jonckheere-Terpstra
of the primary comparison's log-ratios across the similarity groups). On the per-pair
log-ratio r = log(m_ot / m_other):

- superiority: two-sided Wilcoxon signed-rank test of r against 0 by sign flips (exact
  enumeration where 2^n is small, else ``permutations`` seeded resamples);
- equivalence: TOST of the median of r with the margin delta = log(1 + ``margin``), two
  exact one-sided sign tests;
- the median of r with its exact order-statistic interval, and exp of it: the typical
  ratio of path lengths;
- the trend: Jonckheere-Terpstra by permutation of the group labels, and the Theil-Sen
  slope of r on the pair's score.

Holm's adjustment runs over the superiority and trend tests together (one family) and over
the equivalence tests (another). A verdict reads only adjusted p-values at ``alpha``.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import polars as pl

from otpc.exact import jonckheere_p, median_ci, signed_rank_p, theil_sen, tost_median
from otpc.params import AggregateParams
from otpc.stats import holm, log_ratios

REFERENCE = "ot"  # the method every other one is compared with


def comparison_name(other: str, measure: str) -> str:
    """``ot_vs_clip/ppl``: a pre-registered comparison's name."""
    return f"{REFERENCE}_vs_{other}/{measure}"


def verdict(median: float, sup_p: float, tost_p: float, alpha: float, margin: float) -> str:
    """What a comparison allows one to say, from its adjusted p-values."""
    smoother = "OT smoother" if median < 0 else "OT rougher"
    if sup_p < alpha and tost_p < alpha:
        return f"{smoother}, by less than {margin:.0%}"
    if sup_p < alpha:
        return smoother
    if tost_p < alpha:
        return f"equivalent within {margin:.0%}"
    return "inconclusive"


def trend_verdict(z: float, p: float, alpha: float) -> str:
    """What the trend test allows one to say (z < 0: OT's advantage grows with similarity)."""
    if not p < alpha:
        return "no evidence of a trend"
    return (
        "OT's advantage grows with similarity"
        if z < 0
        else "OT's advantage shrinks with similarity"
    )


def compare(r: np.ndarray, agg: AggregateParams) -> dict[str, Any]:
    """The superiority and equivalence tests of one comparison's log-ratios ``r`` (before
    adjustment), the median with its exact interval, and the ratio it means."""
    delta = math.log1p(agg.margin)
    low, high, coverage = median_ci(r, agg.confidence)
    p, method = signed_rank_p(r, agg.permutations, agg.seed)
    tost = tost_median(r, delta)
    median = float(np.median(r)) if len(r) else math.nan
    return {
        "n": len(r),
        "median_log_ratio": median,
        "ci_low": low,
        "ci_high": high,
        "ci_coverage": coverage,
        "ratio": math.exp(median),
        "ratio_low": math.exp(low),
        "ratio_high": math.exp(high),
        "superiority_p": p,
        "superiority_method": method,
        "tost_p": tost["p"],
        "tost_method": tost["method"],
        "margin_log": delta,
    }


def trend_test(ratios: pl.DataFrame, groups: list[str], agg: AggregateParams) -> dict[str, Any]:
    """The Jonckheere-Terpstra test of r across the ordered groups, by permutation, and the
    Theil-Sen line of r on the pair's score."""
    jt = jonckheere_p(
        [ratios.filter(pl.col("group") == g)["r"].to_numpy() for g in groups],
        agg.permutations,
        agg.seed,
    )
    line = theil_sen(ratios["score"].to_numpy(), ratios["r"].to_numpy(), agg.confidence)
    return {
        "n": len(ratios),
        "jt_z": jt["z"],
        "p": jt["p"],
        "method": jt["method"],
        **line,
    }


def preregistered(per: pl.DataFrame, groups: list[str], agg: AggregateParams) -> dict[str, Any]:
    """Every pre-registered test on the per-pair table ``per`` (``otpc.stats.per_pair``),
    adjusted, with its verdict; and the declaration they answer."""
    methods = per["method"].unique(maintain_order=True).to_list()
    if REFERENCE not in methods or agg.primary not in methods:
        return {}
    others = [agg.primary] + [m for m in methods if m not in (REFERENCE, agg.primary)]
    wanted = [(agg.primary, agg.measure), (agg.primary, agg.co_primary)]
    wanted += [(m, agg.measure) for m in others[1:]]
    tests: dict[str, dict[str, Any]] = {}
    for other, measure in dict.fromkeys(wanted):
        ratios = log_ratios(per, REFERENCE, other, measure).drop_nulls("r")
        tests[comparison_name(other, measure)] = compare(ratios["r"].to_numpy(), agg)
    primary_ratios = log_ratios(per, REFERENCE, agg.primary, agg.measure).drop_nulls("r")
    trend_name = f"trend/{comparison_name(agg.primary, agg.measure)}"
    trend = trend_test(primary_ratios, groups, agg)
    names = list(tests)
    sup = holm([tests[n]["superiority_p"] for n in names] + [trend["p"]])
    tost = holm([tests[n]["tost_p"] for n in names])
    for name, p_sup, p_tost in zip(names, sup[: len(names)], tost, strict=True):
        test = tests[name]
        test["superiority_holm_p"], test["tost_holm_p"] = p_sup, p_tost
        test["verdict"] = verdict(test["median_log_ratio"], p_sup, p_tost, agg.alpha, agg.margin)
    trend["holm_p"] = sup[-1]
    trend["verdict"] = trend_verdict(trend["jt_z"], sup[-1], agg.alpha)
    return {
        "declared": {
            "primary": comparison_name(agg.primary, agg.measure),
            "co_primary": comparison_name(agg.primary, agg.co_primary),
            "margin": agg.margin,
            "alpha": agg.alpha,
            "superiority_family": [*names, trend_name],
            "equivalence_family": names,
        },
        "tests": tests,
        "trend": {trend_name: trend},
    }


def verdicts(prereg: dict[str, Any]) -> dict[str, str]:
    """Each pre-registered conclusion's verdict, by name."""
    if not prereg:
        return {}
    return {name: t["verdict"] for name, t in {**prereg["tests"], **prereg["trend"]}.items()}
