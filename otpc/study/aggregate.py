"""Step 6: per method x group statistics, paired comparisons and their trend with similarity,
the coupling-cost check, token structure, the pairs' composition, figures, and the summary.

Definitions: ``docs/study.md``. Only paths that end on B's image (permutation couplings) are
compared; an entropic plan's path (``sinkhorn``) ends at n(PB), so its PPL measures a
different, shorter path: it is described, never compared.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, TypedDict

import numpy as np
import polars as pl

from otpc import png
from otpc.atomic import write_json, write_with
from otpc.errors import InputError
from otpc.figures import RANDOM_NOTE, effect_trend_figure, ppl_cost_figure, strips_figure
from otpc.pairs import group_labels
from otpc.params import AggregateParams, Params
from otpc.stats import (
    ALL,
    below_the_line,
    holm,
    log_ratios,
    method_group_table,
    paired,
    per_pair,
    trend,
)
from otpc.study.headline import headline
from otpc.study.layout import FIG_PPL, FIG_STRIPS, FIG_TREND, GROUP_CSV, HEADLINE, SUMMARY
from otpc.tables import COUPLINGS, PAIRS, SCORES

RANDOM_WEIGHTS = "images come from a model with random weights"
REFERENCE = "ot"  # the method every other one is compared with
NOT_COMPARED = "its path ends at n(PB), not on B's image: described, not compared"


class Provenance(TypedDict):
    """What the numbers were made with, stated wherever results appear."""

    model: str
    random_weights: bool
    lpips: str
    frames: int  # K: `ppl` compares only runs with the same K
    notes: list[str]


class Analysis(TypedDict):
    """Every statistic of one set of pairs (all of them, or one stratum)."""

    n_pairs: int
    methods: dict[str, dict[str, dict[str, Any]]]
    paired: dict[str, dict[str, dict[str, float]]]
    trend: dict[str, dict[str, float]]
    below_cost_line: dict[str, dict[str, float]]
    composition: dict[str, dict[str, float | None]]
    tokens: dict[str, dict[str, float | None]]


class Summary(Provenance, Analysis):
    """``summary.json``: provenance, the pairs, the analysis of all pairs, and per stratum."""

    study: str
    pairs: dict[str, Any]
    not_compared: dict[str, str]
    strata: dict[str, Analysis]


def provenance(scores: pl.DataFrame) -> Provenance:
    """The model and metric behind ``scores``, with a note for each caveat."""
    random_weights = bool(scores["random_weights"].any())
    metric = scores["metric"][0]
    notes = []
    if random_weights:
        notes.append(RANDOM_WEIGHTS)
    if metric.endswith("untrained"):
        notes.append(
            "LPIPS has an untrained backbone (score.backbone: untrained): its distances mean little"
        )
    frames = int(scores["frames"].to_numpy().max())
    return {
        "model": scores["model"][0],
        "random_weights": random_weights,
        "lpips": metric,
        "frames": frames,
        "notes": notes,
    }


def analyse(
    scores: pl.DataFrame,
    pairs: pl.DataFrame,
    couplings: pl.DataFrame,
    groups: list[str],
    agg: AggregateParams,
) -> Analysis:
    """For the pairs in ``scores``: per method x group summaries, ``REFERENCE`` against every
    other method (per group, Holm-adjusted within each comparison; ``all`` Holm-adjusted
    across comparisons), the trend of each comparison with similarity, where ``REFERENCE``
    lies against the line of smoothness on coupling cost, the pairs' composition and the
    couplings' token structure."""
    ids = scores["pair_id"].unique()
    pairs = pairs.filter(pl.col("pair_id").is_in(ids.to_list()))
    couplings = couplings.filter(pl.col("pair_id").is_in(ids.to_list()))
    per = per_pair(scores)
    conf, boot, seed = agg.confidence, agg.bootstrap, agg.seed
    table = method_group_table(per, groups, conf, boot, seed)
    methods = per["method"].unique(maintain_order=True).to_list()
    others = [m for m in methods if m != REFERENCE] if REFERENCE in methods else []
    comparisons = {
        f"{REFERENCE}_vs_{o}": paired(per, REFERENCE, o, groups, conf, boot, seed) for o in others
    }
    overall = [c for c in comparisons if ALL in comparisons[c]]
    for name, p in zip(
        overall, holm([comparisons[c][ALL]["wilcoxon_p"] for c in overall]), strict=True
    ):
        comparisons[name][ALL]["holm_p"] = p
    return {
        "n_pairs": per["pair_id"].n_unique(),
        "methods": {
            m: {
                r["group"]: {k: v for k, v in r.items() if k not in ("method", "group")}
                for r in table.filter(pl.col("method") == m).iter_rows(named=True)
            }
            for m in methods
        },
        "paired": comparisons,
        "trend": {
            f"{REFERENCE}_vs_{o}": trend(per, REFERENCE, o, groups, conf, boot, seed)
            for o in others
        },
        "below_cost_line": below_the_line(scores, REFERENCE, groups) if others else {},
        "composition": composition(pairs, couplings, groups),
        "tokens": token_summary(couplings),
    }


def token_summary(couplings: pl.DataFrame) -> dict[str, dict[str, float | None]]:
    """Per method (permutations only): the share of couplings that fix the start token and
    match end to end, the mean number of token rows sent to padding, and the mean share of
    the cost in token rows."""
    out = {}
    perms = couplings.filter(pl.col("permutation").is_not_null())
    for (method,), sel in perms.group_by("method", maintain_order=True):
        out[str(method)] = {
            "bos_fixed_share": sel["bos_fixed"].mean(),
            "eos_to_eos_share": sel["eos_to_eos"].mean(),
            "real_to_pad_mean": sel["real_to_pad"].mean(),
            "real_cost_share_mean": sel["real_cost_share"].mean(),
        }
    return out  # type: ignore[return-value]


def composition(
    pairs: pl.DataFrame, couplings: pl.DataFrame, groups: list[str]
) -> dict[str, dict[str, float | None]]:
    """Per group and overall: pairs, the share drawn as different-image pairs (CxC's
    ``c2c_isim``; None for a CSV source), and the prompts' token counts."""
    tokens = couplings.unique("pair_id").select("pair_id", "tokens_a", "tokens_b")
    table = pairs.join(tokens, on="pair_id", how="inner")
    out: dict[str, dict[str, float | None]] = {}
    for group in [*groups, ALL]:
        sel = table if group == ALL else table.filter(pl.col("group") == group)
        if sel.is_empty():
            continue
        methods = sel["sampling_method"].drop_nulls()
        both = np.concatenate([sel["tokens_a"].to_numpy(), sel["tokens_b"].to_numpy()])
        out[group] = {
            "n": len(sel),
            "c2c_isim_share": (
                float(np.mean(methods.to_numpy() == "c2c_isim")) if len(methods) else None
            ),
            "tokens_mean": float(both.mean()),
            "tokens_min": float(both.min()),
            "tokens_max": float(both.max()),
        }
    return out


def aggregate(
    scores_path: Path,
    pairs_path: Path,
    couplings_path: Path,
    render_dir: Path,
    params: Params,
    metrics_dir: Path,
) -> Summary:
    """Write summary.json, its headline, the CSV and the three figures into ``metrics_dir``."""
    agg = params.aggregate
    groups = group_labels(params.data.bins)
    pairs = PAIRS.read(pairs_path)
    couplings = COUPLINGS.read(couplings_path)
    scores = SCORES.read(scores_path).join(
        pairs.select("pair_id", pl.col("sampling_method").alias("stratum")), on="pair_id"
    )
    degenerate = scores.filter(pl.col("degenerate"))["pair_id"].n_unique()
    if agg.drop_degenerate:
        scores = scores.filter(~pl.col("degenerate"))
    bary = scores.filter(pl.col("path_kind") == "barycentric")["method"].unique().sort().to_list()
    compared = scores.filter(pl.col("path_kind") != "barycentric")
    if compared.is_empty():
        raise InputError(
            f"{scores_path}: nothing to compare: of {pairs.height} pair(s), {degenerate} are "
            "degenerate (prompts that tokenize identically; aggregate.drop_degenerate), and "
            f"methods {bary} have paths that do not end on B's image"
        )
    if agg.stratify_by is not None and compared["stratum"].null_count():
        raise InputError(
            f"{pairs_path}: aggregate.stratify_by = {agg.stratify_by!r}, but its pairs have no "
            f"{agg.stratify_by} (only CxC pairs do)"
        )
    prov = provenance(scores)
    if REFERENCE not in compared["method"].unique().to_list():
        prov["notes"].append(f"couple.methods has no {REFERENCE!r}: nothing is compared")
    analysis = analyse(compared, pairs, couplings, groups, agg)
    strata: dict[str, Analysis] = {}
    if agg.stratify_by is not None:
        for (value,), sel in compared.group_by("stratum", maintain_order=True):
            strata[str(value)] = analyse(sel, pairs, couplings, groups, agg)
    summary: Summary = {
        "study": params.study,
        **prov,
        "pairs": {
            "sampled": pairs.height,
            "degenerate": degenerate,
            "degenerate_dropped": agg.drop_degenerate,
        },
        **analysis,
        "not_compared": dict.fromkeys(bary, NOT_COMPARED),
        "strata": strata,
    }
    if bary:  # described like the others, but in no comparison
        described = method_group_table(
            per_pair(scores.filter(pl.col("method").is_in(bary))),
            groups,
            agg.confidence,
            agg.bootstrap,
            agg.seed,
        )
        for m in bary:
            summary["methods"][m] = {
                r["group"]: {k: v for k, v in r.items() if k not in ("method", "group")}
                for r in described.filter(pl.col("method") == m).iter_rows(named=True)
            }
    note = "\n".join(
        [f"model {prov['model']}"]
        + ([RANDOM_NOTE] if prov["random_weights"] else [])
        + [n for n in prov["notes"] if n != RANDOM_WEIGHTS]
    )
    by_group = method_group_table(
        per_pair(compared), groups, agg.confidence, agg.bootstrap, agg.seed
    ).filter(pl.col("group") != ALL)
    write_json(metrics_dir / SUMMARY, summary)
    write_json(metrics_dir / HEADLINE, headline(dict(summary)), sort_keys=False)  # ppl first
    write_with(
        metrics_dir / GROUP_CSV,
        by_group.with_columns(
            pl.concat_str("method", "group", separator=" ").alias("series")
        ).write_csv,
    )
    ppl_cost_figure(by_group, groups, metrics_dir / FIG_PPL, note)
    per = per_pair(compared)
    effect_trend_figure(
        {
            name: log_ratios(per, REFERENCE, name.removeprefix(f"{REFERENCE}_vs_"))
            for name in analysis["trend"]
        },
        analysis["trend"],
        groups,
        metrics_dir / FIG_TREND,
        note,
    )
    strips_figure(
        _example_strips(scores, pairs, render_dir, groups, agg.strip_pairs),
        metrics_dir / FIG_STRIPS,
        note,
    )
    return summary


def _example_strips(
    scores: pl.DataFrame, pairs: pl.DataFrame, render_dir: Path, groups: list[str], n: int
) -> list[tuple[str, str, dict[str, np.ndarray]]]:
    """Up to ``n`` analysed pairs spread over the groups; for each, replicate 0 of every
    method."""
    pairs = pairs.filter(pl.col("pair_id").is_in(scores["pair_id"].unique().to_list()))
    present = [g for g in groups if g in set(pairs["group"].to_list())]
    if not present:
        return []
    chosen_groups = [
        present[int(i)] for i in np.unique(np.linspace(0, len(present) - 1, n).round())
    ]
    rows = []
    for g in chosen_groups:
        pair = pairs.filter(pl.col("group") == g).sort("pair_id").row(0, named=True)
        paths = scores.filter((pl.col("pair_id") == pair["pair_id"]) & (pl.col("replicate") == 0))
        strips = {
            m: png.read(render_dir / "strips" / f"{pid}.png")
            for m, pid in paths.select("method", "path_id").iter_rows()
        }
        rows.append((f"{pair['prompt_a']}  ->  {pair['prompt_b']}", g, strips))
    return rows
