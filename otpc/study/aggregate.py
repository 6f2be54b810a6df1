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
from otpc.figures import (
    RANDOM_NOTE,
    effect_trend_figure,
    ppl_cost_figure,
    strips_figure,
    truth_figure,
)
from otpc.pairs import group_labels
from otpc.params import PRIMARY, AggregateParams, Params
from otpc.stats import (
    ALL,
    MEASURES,
    below_the_line,
    log_ratios,
    method_group_table,
    paired,
    per_pair,
)
from otpc.study.headline import headline
from otpc.study.layout import (
    FIG_PPL,
    FIG_STRIPS,
    FIG_TREND,
    FIG_TRUTH,
    GROUP_CSV,
    HEADLINE,
    INDEX,
    SUMMARY,
)
from otpc.study.prereg import REFERENCE, preregistered, verdicts
from otpc.tables import COUPLINGS, FRAMES, PAIRS, SCORES

RANDOM_WEIGHTS = "images come from a model with random weights"
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
    paired: dict[str, dict[str, dict[str, float | str]]]
    preregistered: dict[str, Any]
    below_cost_line: dict[str, dict[str, float | str]]
    composition: dict[str, dict[str, float | None]]
    tokens: dict[str, dict[str, float | None]]


class Summary(Provenance, Analysis):
    """``summary.json``: provenance, the pairs, the analysis of all pairs, and per stratum."""

    study: str
    pairs: dict[str, Any]
    not_compared: dict[str, str]
    truth: dict[str, Any]
    robustness: dict[str, dict[str, str]]
    k_scaling: dict[str, dict[str, dict[str, float]]]
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
    other method per group (descriptive), the pre-registered tests (``otpc.study.prereg``),
    where ``REFERENCE`` lies against the line of smoothness on coupling cost, the pairs'
    composition and the couplings' token structure."""
    ids = scores["pair_id"].unique()
    pairs = pairs.filter(pl.col("pair_id").is_in(ids.to_list()))
    couplings = couplings.filter(pl.col("pair_id").is_in(ids.to_list()))
    per = per_pair(scores)
    conf, boot, seed = agg.confidence, agg.bootstrap, agg.seed
    table = method_group_table(per, groups, conf, boot, seed)
    methods = per["method"].unique(maintain_order=True).to_list()
    others = [m for m in methods if m != REFERENCE] if REFERENCE in methods else []
    return {
        "n_pairs": per["pair_id"].n_unique(),
        "methods": {
            m: {
                r["group"]: {k: v for k, v in r.items() if k not in ("method", "group")}
                for r in table.filter(pl.col("method") == m).iter_rows(named=True)
            }
            for m in methods
        },
        "paired": {
            f"{REFERENCE}_vs_{o}": paired(per, REFERENCE, o, groups, conf, agg.permutations, seed)
            for o in others
        },
        "preregistered": preregistered(per, groups, agg),
        "below_cost_line": (
            below_the_line(scores, REFERENCE, groups, agg.permutations, seed) if others else {}
        ),
        "composition": composition(pairs, couplings, groups),
        "tokens": token_summary(couplings),
    }


def token_summary(couplings: pl.DataFrame) -> dict[str, dict[str, float | None]]:
    """Per method (permutations only): the share of couplings that fix the start token and
    match end to end, the mean number of token rows sent to padding, the mean share of the
    cost in token rows, and the mean number of token and padding rows the coupling moves
    (sends to another row than their own)."""
    out = {}
    perms = couplings.filter(pl.col("permutation").is_not_null())
    for (method,), sel in perms.group_by("method", maintain_order=True):
        out[str(method)] = {
            "bos_fixed_share": sel["bos_fixed"].mean(),
            "eos_to_eos_share": sel["eos_to_eos"].mean(),
            "real_to_pad_mean": sel["real_to_pad"].mean(),
            "real_cost_share_mean": sel["real_cost_share"].mean(),
            "rows_moved_tokens_mean": sel["rows_moved_tokens"].mean(),
            "rows_moved_padding_mean": sel["rows_moved_padding"].mean(),
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


def select_pairs(
    scores: pl.DataFrame, n_per_group: int, agg: AggregateParams
) -> tuple[pl.DataFrame, dict[str, Any]]:
    """The pairs the analysis keeps, and the counts of what it left out: a pair is
    degenerate when its prompts embed identically, perceptually degenerate when its end
    frames are nearer than ``min_end_lpips``; with ``drop_degenerate``, both are left out
    and the next pairs of their group's draw (by rank) take their places. Each group keeps
    its first ``n_per_group`` pairs by rank."""
    ends = scores.filter(pl.col("path_kind") != "barycentric")
    pair_rows = (
        scores.group_by("pair_id", "group", "rank")
        .agg(pl.col("degenerate").any())
        .join(ends.group_by("pair_id").agg(pl.col("end_lpips").min()), on="pair_id", how="left")
        .with_columns(
            (pl.col("end_lpips") < agg.min_end_lpips).fill_null(False).alias("perceptual")
        )
    )
    usable = pair_rows.filter(~pl.col("degenerate") & ~pl.col("perceptual"))
    candidates = usable if agg.drop_degenerate else pair_rows
    kept = candidates.sort("rank").group_by("group", maintain_order=True).head(n_per_group)
    found = dict(kept.group_by("group").len().iter_rows())
    short = {
        str(g): n_per_group - found.get(g, 0)
        for g in pair_rows["group"].unique().sort()
        if found.get(g, 0) < n_per_group
    }
    counts = {
        "sampled": pair_rows.height,
        "degenerate": int(pair_rows["degenerate"].sum()),
        "perceptually_degenerate": int((pair_rows["perceptual"] & ~pair_rows["degenerate"]).sum()),
        "degenerate_dropped": agg.drop_degenerate,
        "min_end_lpips": agg.min_end_lpips,
        "per_group": n_per_group,
        "analysed": kept.height,
        "groups_short": short,
    }
    return scores.filter(pl.col("pair_id").is_in(kept["pair_id"].to_list())), counts


def k_scaling(scores: pl.DataFrame) -> dict[str, dict[str, dict[str, float]]]:
    """Per scored K (the primary scoring and variants that change only the frames), per
    method: the mean of each path measure. On a smooth path ``max_step`` shrinks as K grows
    and ``ppl_norm`` and ``length`` stay put; at a jump ``max_step`` stays."""
    out: dict[str, dict[str, dict[str, float]]] = {}
    for (frames,), sel in scores.group_by("frames", maintain_order=True):
        per = per_pair(sel)
        out[f"K={frames}"] = {
            str(m): {name: float(part[name].to_numpy().mean()) for name in MEASURES[:4]}
            for (m,), part in per.group_by("method", maintain_order=True)
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
    """Write summary.json, its headline, the CSV and the four figures into ``metrics_dir``."""
    agg = params.aggregate
    groups = group_labels(params.data.bins)
    pairs = PAIRS.read(pairs_path)
    couplings = COUPLINGS.read(couplings_path)
    every = SCORES.read(scores_path).join(
        pairs.select("pair_id", pl.col("sampling_method").alias("stratum")), on="pair_id"
    )
    scores = every.filter(pl.col("variant") == PRIMARY)
    scores, counts = select_pairs(scores, params.data.n_per_group, agg)
    kept = scores["pair_id"].unique().to_list()
    bary = scores.filter(pl.col("path_kind") == "barycentric")["method"].unique().sort().to_list()
    compared = scores.filter(pl.col("path_kind") != "barycentric")
    if compared.is_empty():
        raise InputError(
            f"{scores_path}: nothing to compare: of {counts['sampled']} pair(s), "
            f"{counts['degenerate']} are degenerate (prompts that tokenize identically) and "
            f"{counts['perceptually_degenerate']} perceptually degenerate (end frames nearer "
            f"than aggregate.min_end_lpips; aggregate.drop_degenerate), and methods {bary} "
            "have paths that do not end on B's image"
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
    variants = every.filter(
        (pl.col("variant") != PRIMARY)
        & pl.col("pair_id").is_in(kept)
        & (pl.col("path_kind") != "barycentric")
    )
    truth = ground_truth(compared, render_dir, params)
    summary: Summary = {
        "study": params.study,
        **prov,
        "pairs": counts,
        **analysis,
        "not_compared": dict.fromkeys(bary, NOT_COMPARED),
        "truth": truth,
        "robustness": robustness(analysis["preregistered"], variants, groups, agg),
        "k_scaling": k_scaling(
            pl.concat([compared, variants.filter(pl.col("variant").str.starts_with("frames="))])
        ),
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
        [f"model {prov['model']}, metric {prov['lpips']}, K = {prov['frames']}"]
        + ([RANDOM_NOTE] if prov["random_weights"] else [])
        + [n for n in prov["notes"] if n != RANDOM_WEIGHTS]
    )
    per = per_pair(compared)
    by_group = method_group_table(per, groups, agg.confidence, agg.bootstrap, agg.seed).filter(
        pl.col("group") != ALL
    )
    write_json(metrics_dir / SUMMARY, summary)
    write_json(metrics_dir / HEADLINE, headline(dict(summary)), sort_keys=False)
    write_with(
        metrics_dir / GROUP_CSV,
        by_group.with_columns(
            pl.concat_str("method", "group", separator=" ").alias("series")
        ).write_csv,
    )
    ppl_cost_figure(by_group, groups, metrics_dir / FIG_PPL, note, similarity_label(params))
    others = [m for m in per["method"].unique(maintain_order=True).to_list() if m != REFERENCE]
    effect_trend_figure(
        {f"{REFERENCE}_vs_{o}": log_ratios(per, REFERENCE, o) for o in others},
        analysis["preregistered"].get("trend", {}),
        groups,
        metrics_dir / FIG_TREND,
        note,
        agg.confidence,
    )
    truth_figure(truth, metrics_dir / FIG_TRUTH, note)
    rendered = FRAMES.read(render_dir / INDEX)["k"].n_unique()
    strips_figure(
        _example_strips(scores, pairs, render_dir, groups, agg.strip_pairs),
        metrics_dir / FIG_STRIPS,
        note + (f"\nevery rendered frame shown: {rendered}" if rendered != prov["frames"] else ""),
    )
    return summary


def similarity_label(params: Params) -> str:
    """The x axis of the per-group figure: what the groups' score is."""
    if params.data.source == "toy":
        return f"attributes shared, of {', '.join(params.data.toy_attributes)}"
    if params.data.source == "cxc":
        return "CxC similarity group (agg_score)"
    return f"similarity group ({params.data.score})"


def robustness(
    prereg: dict[str, Any], variants: pl.DataFrame, groups: list[str], agg: AggregateParams
) -> dict[str, dict[str, str]]:
    """Per pre-registered conclusion: its verdict under the primary scoring and under each
    robustness variant (the same pairs, re-scored), and whether it ``survives`` (the same
    verdict everywhere)."""
    table = {name: {PRIMARY: v} for name, v in verdicts(prereg).items()}
    for (variant,), sel in variants.group_by("variant", maintain_order=True):
        for name, v in verdicts(preregistered(per_pair(sel), groups, agg)).items():
            table.setdefault(name, {})[str(variant)] = v
    for row in table.values():
        row["survives"] = "yes" if len(set(row.values())) == 1 else "no"
    return table


def ground_truth(compared: pl.DataFrame, render_dir: Path, params: Params) -> dict[str, Any]:
    """On the toy world: what each path's scored frames show, read back by the toy
    detector (``otpc.toy.path_truth``), per method, and how well ``ppl`` agrees with it.
    Empty for other sources (no detector)."""
    if params.data.source != "toy":
        return {}
    from otpc.toy.detector import detect
    from otpc.toy.path_truth import detect_paths, truth_agreement, truth_by_method

    index = FRAMES.read(render_dir / INDEX).filter(
        pl.col("path_id").is_in(compared["path_id"].unique().to_list())
    )
    rendered = int(index["k"].to_numpy().max()) + 1
    frames = int(compared["frames"][0])
    stride = (rendered - 1) // (frames - 1)
    index = index.filter(pl.col("k") % stride == 0)
    truth = detect_paths(render_dir, index, detect, params.data.toy_attributes)
    paths = compared.select("path_id", "pair_id", "method", "replicate", "ppl").join(
        truth, on="path_id"
    )
    methods = [m for m in paths["method"].unique(maintain_order=True).to_list() if m != REFERENCE]
    return {
        "attributes": params.data.toy_attributes,
        "by_method": truth_by_method(paths),
        "agreement": {f"{REFERENCE}_vs_{m}": truth_agreement(paths, REFERENCE, m) for m in methods},
    }


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
