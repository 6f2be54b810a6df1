"""How many pairs the powered study needs: the pre-registered tests' power, simulated from a
pilot run's pairs (the demo).

For each candidate size n (pairs per group), ``simulations`` studies are drawn: n pairs per
group, with replacement, from the pilot's analysed pairs of that group (each pair with all
its methods' measures, so the pairs' own spread and the methods' correlation are kept);
each simulated study runs the pre-registered analysis (``otpc.study.prereg``) as the
powered study will, and the power of a test is the share of studies in which it rejects
after Holm's adjustment. This treats the pilot's pairs as the population, so it says what
the powered study detects *if the effects are the pilot's*.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import polars as pl
from tqdm.auto import tqdm

from otpc.params import AggregateParams
from otpc.study.prereg import preregistered

KINDS = (("superiority", "superiority_holm_p"), ("equivalence", "tost_holm_p"))


def _resample(
    pilot: dict[str, list[pl.DataFrame]], n: int, rng: np.random.Generator
) -> pl.DataFrame:
    """``n`` pairs per group drawn with replacement from ``pilot`` (group -> each pair's
    rows, one per method), each draw under a new pair id."""
    return pl.concat(
        [
            rows[i].with_columns(pl.lit(f"{group}-{j}").alias("pair_id"))
            for group, rows in pilot.items()
            for j, i in enumerate(rng.integers(len(rows), size=n))
        ]
    )


def power(
    per: pl.DataFrame,
    groups: list[str],
    agg: AggregateParams,
    sizes: list[int],
    simulations: int,
    seed: int,
) -> dict[str, Any]:
    """Per size (pairs per group): the share of simulated studies in which each
    pre-registered test rejects (superiority, equivalence, trend), from the pilot's per-pair
    table ``per`` (``otpc.stats.per_pair``)."""
    pilot = {
        g: per.filter(pl.col("group") == g).sort("pair_id").partition_by("pair_id")
        for g in groups
        if not per.filter(pl.col("group") == g).is_empty()
    }
    out: dict[str, Any] = {}
    for n in sizes:
        rng = np.random.default_rng([seed, n])
        hits: dict[str, int] = {}
        for _ in tqdm(range(simulations), desc=f"power n={n}", unit="study"):
            prereg = preregistered(_resample(pilot, n, rng), list(pilot), agg)
            for name, t in prereg["tests"].items():
                for kind, key in KINDS:
                    hits[f"{name}/{kind}"] = hits.get(f"{name}/{kind}", 0) + (t[key] < agg.alpha)
            for name, t in prereg["trend"].items():
                hits[name] = hits.get(name, 0) + (t["holm_p"] < agg.alpha)
        out[f"n={n}"] = {
            "pairs_per_group": n,
            "pairs": n * len(pilot),
            "power": {k: v / simulations for k, v in hits.items()},
        }
    return out
