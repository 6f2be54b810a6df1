"""Summaries of path lengths and coupling costs: bootstrap CIs and paired comparisons."""

from __future__ import annotations

import warnings

import numpy as np
import polars as pl
from scipy import stats

ALL = "all"


def bootstrap_ci(
    x: np.ndarray, confidence: float, n_resamples: int, seed: int
) -> tuple[float, float]:
    """Percentile bootstrap CI of the mean; NaN for fewer than two values."""
    x = np.asarray(x, dtype=np.float64)
    if len(x) < 2:
        return float("nan"), float("nan")
    if np.all(x == x[0]):
        return float(x[0]), float(x[0])
    res = stats.bootstrap(
        (x,),
        np.mean,
        confidence_level=confidence,
        n_resamples=n_resamples,
        method="percentile",
        rng=np.random.default_rng(seed),
    )
    return float(res.confidence_interval.low), float(res.confidence_interval.high)


def per_pair(scores: pl.DataFrame) -> pl.DataFrame:
    """One row per pair x method: replicates (random) averaged."""
    return scores.group_by("pair_id", "group", "method", maintain_order=True).agg(
        pl.col("ppl").mean(),
        pl.col("ppl_norm").mean(),
        pl.col("cost").mean(),
        pl.len().alias("replicates"),
    )


def describe(
    x: np.ndarray, confidence: float, n_resamples: int, seed: int, prefix: str
) -> dict[str, float]:
    lo, hi = bootstrap_ci(x, confidence, n_resamples, seed)
    return {
        f"{prefix}_mean": float(np.mean(x)),
        f"{prefix}_median": float(np.median(x)),
        f"{prefix}_ci_low": lo,
        f"{prefix}_ci_high": hi,
    }


def method_group_table(
    pairs: pl.DataFrame, groups: list[str], confidence: float, n_resamples: int, seed: int
) -> pl.DataFrame:
    """Per method x group (and ``all``): n, mean, median and CI of ppl and of cost."""
    rows = []
    for method in pairs["method"].unique(maintain_order=True).to_list():
        for group in [*groups, ALL]:
            sel = pairs.filter(pl.col("method") == method)
            if group != ALL:
                sel = sel.filter(pl.col("group") == group)
            if sel.is_empty():
                continue
            row: dict[str, object] = {"method": method, "group": group, "n": len(sel)}
            row |= describe(sel["ppl"].to_numpy(), confidence, n_resamples, seed, "ppl")
            row |= describe(sel["ppl_norm"].to_numpy(), confidence, n_resamples, seed, "ppl_norm")
            row |= describe(sel["cost"].to_numpy(), confidence, n_resamples, seed, "cost")
            rows.append(row)
    return pl.DataFrame(rows)


def paired(
    pairs: pl.DataFrame, method: str, other: str, groups: list[str]
) -> dict[str, dict[str, float]]:
    """``method`` against ``other`` on the same pairs, per group and overall.

    ``share_smoother``: share of pairs where ``method``'s ppl is lower; ``wilcoxon_p``:
    two-sided Wilcoxon signed-rank p-value of the paired differences (NaN if undefined).
    """
    wide = (
        pairs.filter(pl.col("method").is_in([method, other]))
        .pivot(on="method", index=["pair_id", "group"], values="ppl")
        .drop_nulls()
    )
    out = {}
    for group in [*groups, ALL]:
        sel = wide if group == ALL else wide.filter(pl.col("group") == group)
        if sel.is_empty():
            continue
        a, b = sel[method].to_numpy(), sel[other].to_numpy()
        out[group] = {
            "n": len(sel),
            "share_smoother": float(np.mean(a < b)),
            "mean_difference": float(np.mean(a - b)),
            "wilcoxon_p": _wilcoxon(a - b),
        }
    return out


def _wilcoxon(diff: np.ndarray) -> float:
    if len(diff) < 2 or np.all(diff == 0):
        return float("nan")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return float(stats.wilcoxon(diff).pvalue)
