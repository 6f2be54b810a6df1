"""Step 6: per method x group statistics, paired comparisons, figures, and the summary."""

from __future__ import annotations

from pathlib import Path
from typing import Any, TypedDict

import numpy as np
import polars as pl

from otpc import png
from otpc.atomic import write_json, write_with
from otpc.figures import RANDOM_NOTE, ppl_cost_figure, strips_figure
from otpc.pairs import group_labels
from otpc.params import Params
from otpc.stats import ALL, method_group_table, paired, per_pair
from otpc.study.layout import FIG_PPL, FIG_STRIPS, GROUP_CSV, SUMMARY
from otpc.tables import PAIRS, SCORES

RANDOM_WEIGHTS = "images come from a model with random weights"


class Provenance(TypedDict):
    """What the numbers were made with, stated wherever results appear."""

    random_weights: bool
    lpips: str
    notes: list[str]


class Summary(Provenance):
    """``summary.json``: provenance, then per method x group and paired statistics."""

    study: str
    n_pairs: int
    methods: dict[str, dict[str, dict[str, Any]]]
    paired: dict[str, dict[str, dict[str, float]]]


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
    return {"random_weights": random_weights, "lpips": metric, "notes": notes}


def aggregate(
    scores_path: Path, pairs_path: Path, render_dir: Path, params: Params, metrics_dir: Path
) -> Summary:
    """Write summary.json, the plot CSV and both figures into ``metrics_dir``."""
    scores = SCORES.read(scores_path)
    groups = group_labels(params.data.bins)
    agg = params.aggregate
    per = per_pair(scores)
    table = method_group_table(per, groups, agg.confidence, agg.bootstrap, agg.seed)
    methods = per["method"].unique(maintain_order=True).to_list()
    comparisons = {
        f"ot_vs_{other}": paired(per, "ot", other, groups)
        for other in methods
        if "ot" in methods and other != "ot"
    }
    prov = provenance(scores)
    summary: Summary = {
        "study": params.study,
        **prov,
        "n_pairs": per["pair_id"].n_unique(),
        "methods": {
            m: {
                r["group"]: {k: v for k, v in r.items() if k not in ("method", "group")}
                for r in table.filter(pl.col("method") == m).iter_rows(named=True)
            }
            for m in methods
        },
        "paired": comparisons,
    }
    note = "\n".join(
        ([RANDOM_NOTE] if prov["random_weights"] else [])
        + [n for n in prov["notes"] if n != RANDOM_WEIGHTS]
    )
    by_group = table.filter(pl.col("group") != ALL)
    write_json(metrics_dir / SUMMARY, summary)
    write_with(
        metrics_dir / GROUP_CSV,
        by_group.with_columns(
            pl.concat_str("method", "group", separator=" ").alias("series")
        ).write_csv,
    )
    ppl_cost_figure(by_group, groups, metrics_dir / FIG_PPL, note)
    strips_figure(
        _example_strips(scores, pairs_path, render_dir, groups, agg.strip_pairs),
        metrics_dir / FIG_STRIPS,
        note,
    )
    return summary


def _example_strips(
    scores: pl.DataFrame, pairs_path: Path, render_dir: Path, groups: list[str], n: int
) -> list[tuple[str, str, dict[str, np.ndarray]]]:
    """Up to ``n`` pairs spread over the groups; for each, replicate 0 of every method."""
    pairs = PAIRS.read(pairs_path)
    present = [g for g in groups if g in set(pairs["group"].to_list())]
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
