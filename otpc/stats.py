"""The study's statistics: plain functions over arrays and tables, the math in each docstring.

Every interval is at ``confidence``; every resampling is seeded, so the same scores give the
same numbers. The comparison of two methods on the same pairs uses the per-pair log-ratio
r = log(ppl_method / ppl_other): scale-free (a pair of similar prompts has short paths under
every method; r compares them on one footing) and the same for ``ppl`` and ``ppl_norm``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import polars as pl
from scipy import stats

from otpc.exact import bca_ci, median_ci, signed_rank_p

ALL = "all"
# What is summarised per method x group: the path's smoothness (``otpc.perceptual.PathLength``)
# and how far the coupling moves the rows.
MEASURES = ("ppl", "ppl_norm", "length", "max_step", "cost")


def wilson_ci(successes: int, n: int, confidence: float) -> tuple[float, float]:
    """Wilson score interval of a proportion p = k/n:
    (p + z^2/2n +- z sqrt(p(1-p)/n + z^2/4n^2)) / (1 + z^2/n), z the normal quantile."""
    if n == 0:
        return float("nan"), float("nan")
    z = float(stats.norm.ppf(0.5 + confidence / 2))
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z / (1 + z * z / n) * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    lo = 0.0 if successes == 0 else max(0.0, centre - half)
    return lo, 1.0 if successes == n else min(1.0, centre + half)


def holm(p_values: Sequence[float]) -> list[float]:
    """Holm's step-down adjustment: with the m defined p-values sorted p_(1) <= ... <= p_(m),
    adj_(i) = max_{j <= i} min(1, (m - j + 1) p_(j)); NaN stays NaN (and does not count)."""
    p = np.asarray(p_values, dtype=np.float64)
    out = np.full(len(p), np.nan)
    defined = np.flatnonzero(~np.isnan(p))
    m = len(defined)
    order = defined[np.argsort(p[defined], kind="stable")]
    running = 0.0
    for i, idx in enumerate(order):
        running = max(running, min(1.0, (m - i) * p[idx]))
        out[idx] = running
    return out.tolist()


def per_pair(scores: pl.DataFrame) -> pl.DataFrame:
    """One row per pair x method: the ``MEASURES`` averaged over replicates (random)."""
    keys = [c for c in ("pair_id", "group", "score", "stratum") if c in scores.columns]
    return scores.group_by(*keys, "method", maintain_order=True).agg(
        *(pl.col(m).mean() for m in MEASURES), pl.len().alias("replicates")
    )


def describe(
    x: np.ndarray, confidence: float, n_resamples: int, seed: int, prefix: str
) -> dict[str, float]:
    """Mean, median and the BCa bootstrap interval of the mean of ``x``."""
    lo, hi = bca_ci(x, np.mean, confidence, n_resamples, seed)
    return {
        f"{prefix}_mean": float(np.mean(x)),
        f"{prefix}_median": float(np.median(x)),
        f"{prefix}_ci_low": lo,
        f"{prefix}_ci_high": hi,
    }


def _in_group(df: pl.DataFrame, group: str) -> pl.DataFrame:
    return df if group == ALL else df.filter(pl.col("group") == group)


def method_group_table(
    pairs: pl.DataFrame, groups: list[str], confidence: float, n_resamples: int, seed: int
) -> pl.DataFrame:
    """Per method x group (and ``all``): n, and mean, median and CI of each of ``MEASURES``."""
    rows = []
    for method in pairs["method"].unique(maintain_order=True).to_list():
        for group in [*groups, ALL]:
            sel = _in_group(pairs.filter(pl.col("method") == method), group)
            if sel.is_empty():
                continue
            row: dict[str, object] = {"method": method, "group": group, "n": len(sel)}
            for measure in MEASURES:
                row |= describe(sel[measure].to_numpy(), confidence, n_resamples, seed, measure)
            rows.append(row)
    return pl.DataFrame(rows)


def log_ratios(pairs: pl.DataFrame, method: str, other: str, measure: str = "ppl") -> pl.DataFrame:
    """Per pair present under both methods: r = log(m_method / m_other) of ``measure`` m,
    with the pair's group and score; r is null (undefined) where either is 0 (a path that
    does not change)."""
    schema = {"pair_id": pl.String, "group": pl.String, "score": pl.Float64, "r": pl.Float64}
    wide = (
        pairs.filter(pl.col("method").is_in([method, other]))
        .pivot(on="method", index=["pair_id", "group", "score"], values=measure)
        .drop_nulls()
    )
    if method not in wide.columns or other not in wide.columns:
        return pl.DataFrame(schema=schema)
    defined = (pl.col(method) > 0) & (pl.col(other) > 0)
    r = pl.when(defined).then((pl.col(method) / pl.col(other)).log()).otherwise(None)
    return wide.select("pair_id", "group", "score", r.alias("r"))


def paired(
    pairs: pl.DataFrame,
    method: str,
    other: str,
    groups: list[str],
    confidence: float,
    n_resamples: int,
    seed: int,
) -> dict[str, dict[str, float | str]]:
    """``method`` against ``other`` on the same pairs, per group and overall, from the
    log-ratios r (``log_ratios``) of the n pairs where r is defined (``n_undefined``: pairs
    where a path does not change):

    ``share_smoother`` = share of pairs with r < 0 (Wilson CI); ``share_tied`` = share with
    r = 0 (the same path, e.g. where OT is the identity); ``median_log_ratio`` and its exact
    order-statistic CI (exp of it: the typical ratio of path lengths); ``wilcoxon_p``:
    two-sided Wilcoxon signed-rank test of r against 0 by sign flips (zeros dropped; exact
    where 2^n is small, else ``n_resamples`` seeded resamples: ``wilcoxon_method``);
    ``holm_p``: Holm-adjusted over the groups (descriptive: the pre-registered tests are
    ``otpc.study.prereg``'s).
    """
    ratios = log_ratios(pairs, method, other)
    out: dict[str, dict[str, float | str]] = {}
    for group in [*groups, ALL]:
        sel = _in_group(ratios, group)
        r = sel["r"].drop_nulls().to_numpy()
        if len(r) == 0:
            continue
        smoother = int(np.sum(r < 0))
        share_lo, share_hi = wilson_ci(smoother, len(r), confidence)
        lo, hi, _ = median_ci(r, confidence)
        p, how = signed_rank_p(r, n_resamples, seed)
        out[group] = {
            "n": len(r),
            "n_undefined": sel["r"].null_count(),
            "share_smoother": smoother / len(r),
            "share_tied": float(np.mean(r == 0)),
            "share_ci_low": share_lo,
            "share_ci_high": share_hi,
            "median_log_ratio": float(np.median(r)),
            "log_ratio_ci_low": lo,
            "log_ratio_ci_high": hi,
            "wilcoxon_p": p,
            "wilcoxon_method": how,
        }
    in_groups = [g for g in groups if g in out]
    adjusted = holm([float(out[g]["wilcoxon_p"]) for g in in_groups])
    for group, p_adj in zip(in_groups, adjusted, strict=True):
        out[group]["holm_p"] = p_adj
    return out


def displacement_residuals(scores: pl.DataFrame, method: str) -> pl.DataFrame:
    """Is ``method`` smoother than its coupling cost predicts? Within each pair, the line
    log(ppl) = alpha + beta * cost is fitted by least squares to the pair's other paths
    (every other method and replicate, except paths identical to ``method``'s: same cost
    and same ppl, i.e. the same permutation, such as clip where OT is the identity); the
    residual of ``method``'s path is log(ppl_method) - (alpha + beta * cost_method), < 0
    where it lies below the line. ``extrapolated``: its cost lies outside the fitted costs.
    Pairs with fewer than three other paths, or one cost for all of them, have none."""
    rows = []
    usable = scores.filter(pl.col("ppl") > 0)
    for (pair_id,), paths in usable.group_by("pair_id", maintain_order=True):
        own = paths.filter(pl.col("method") == method)
        if own.is_empty():
            continue
        cost, ppl = own["cost"][0], own["ppl"][0]
        same = (pl.col("cost") == cost) & (pl.col("ppl") == ppl)
        rest = paths.filter((pl.col("method") != method) & ~same)
        if len(rest) < 3 or rest["cost"].n_unique() < 2:
            continue
        costs = rest["cost"].to_numpy()
        beta, alpha = np.polyfit(costs, np.log(rest["ppl"].to_numpy()), 1)
        rows.append(
            {
                "pair_id": pair_id,
                "group": own["group"][0],
                "residual": float(np.log(ppl) - (alpha + beta * cost)),
                "slope": float(beta),
                "extrapolated": bool(cost < costs.min() or cost > costs.max()),
            }
        )
    schema = {
        "pair_id": pl.String,
        "group": pl.String,
        "residual": pl.Float64,
        "slope": pl.Float64,
        "extrapolated": pl.Boolean,
    }
    return pl.DataFrame(rows, schema=schema)


def below_the_line(
    scores: pl.DataFrame, method: str, groups: list[str], n_resamples: int, seed: int
) -> dict[str, dict[str, float | str]]:
    """Per group and overall, from ``displacement_residuals``: n, the median residual, the
    share of pairs below the line, the median slope, the share where ``method``'s cost lies
    outside the fitted costs (the line extrapolated), and the Wilcoxon p of the residuals."""
    res = displacement_residuals(scores, method)
    out: dict[str, dict[str, float | str]] = {}
    for group in [*groups, ALL]:
        sel = _in_group(res, group)
        if sel.is_empty():
            continue
        r = sel["residual"].to_numpy()
        p, how = signed_rank_p(r, n_resamples, seed)
        out[group] = {
            "n": len(r),
            "median_residual": float(np.median(r)),
            "share_below": float(np.mean(r < 0)),
            "median_slope": float(np.median(sel["slope"].to_numpy())),
            "share_extrapolated": float(np.mean(sel["extrapolated"].to_numpy())),
            "wilcoxon_p": p,
            "wilcoxon_method": how,
        }
    return out
