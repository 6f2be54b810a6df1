"""Step 6: per method x group statistics, paired comparisons, figures, and the summary."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl

from otpc.atomic import write_json, write_with
from otpc.figures import RANDOM_NOTE, ppl_cost_figure, strips_figure
from otpc import png
from otpc.pairs import group_labels
from otpc.params import Params
from otpc.stats import ALL, method_group_table, paired, per_pair

RANDOM_WEIGHTS = "images come from a model with random weights"
SUMMARY, TABLE_CSV, FIG_PPL, FIG_STRIPS = ("summary.json", "ppl_by_group.csv",
                                           "fig_ppl_cost.png", "fig_strips.png")


def provenance(scores: pl.DataFrame) -> dict[str, object]:
    """What the numbers were made with, stated wherever results appear."""
    random_weights = bool(scores["random_weights"].any())
    metric = scores["metric"][0]
    notes = []
    if random_weights:
        notes.append(RANDOM_WEIGHTS)
    if metric.endswith("untrained"):
        notes.append("LPIPS uses an untrained backbone (ImageNet weights not in the torch cache)")
    return {"random_weights": random_weights, "lpips": metric, "notes": notes}


def aggregate(scores_path: Path, pairs_path: Path, render_dir: Path, params: Params,
              metrics_dir: Path) -> dict[str, object]:
    """Write summary.json, the plot CSV and both figures into ``metrics_dir``."""
    scores = pl.read_parquet(scores_path)
    groups = group_labels(params.data.bins)
    agg = params.aggregate
    per = per_pair(scores)
    table = method_group_table(per, groups, agg.confidence, agg.bootstrap, agg.seed)
    methods = per["method"].unique(maintain_order=True).to_list()
    comparisons = {f"ot_vs_{other}": paired(per, "ot", other, groups)
                   for other in methods if "ot" in methods and other != "ot"}
    prov = provenance(scores)
    summary = {
        "study": params.study, **prov, "n_pairs": per["pair_id"].n_unique(),
        "methods": {m: {r["group"]: {k: v for k, v in r.items() if k not in ("method", "group")}
                        for r in table.filter(pl.col("method") == m).iter_rows(named=True)}
                    for m in methods},
        "paired": comparisons,
    }
    note = "\n".join(([RANDOM_NOTE] if prov["random_weights"] else [])
                     + [n for n in prov["notes"] if n != RANDOM_WEIGHTS])
    by_group = table.filter(pl.col("group") != ALL)
    write_json(metrics_dir / SUMMARY, summary)
    write_with(metrics_dir / TABLE_CSV, by_group.with_columns(
        pl.concat_str("method", "group", separator=" ").alias("series")).write_csv)
    ppl_cost_figure(by_group, groups, metrics_dir / FIG_PPL, note)
    strips_figure(_example_strips(scores, pairs_path, render_dir, groups, agg.strip_pairs),
                  metrics_dir / FIG_STRIPS, note)
    return summary


def _example_strips(scores: pl.DataFrame, pairs_path: Path, render_dir: Path,
                    groups: list[str], n: int) -> list[tuple[str, str, dict[str, np.ndarray]]]:
    """Up to ``n`` pairs spread over the groups; for each, replicate 0 of every method."""
    pairs = pl.read_parquet(pairs_path)
    present = [g for g in groups if g in set(pairs["group"].to_list())]
    chosen_groups = [present[int(i)] for i in np.unique(np.linspace(0, len(present) - 1, n).round())]
    rows = []
    for g in chosen_groups:
        pair = pairs.filter(pl.col("group") == g).sort("pair_id").row(0, named=True)
        paths = scores.filter((pl.col("pair_id") == pair["pair_id"]) & (pl.col("replicate") == 0))
        strips = {m: png.read(render_dir / "strips" / f"{pid}.png")
                  for m, pid in paths.select("method", "path_id").iter_rows()}
        rows.append((f"{pair['prompt_a']}  ->  {pair['prompt_b']}", g, strips))
    return rows
