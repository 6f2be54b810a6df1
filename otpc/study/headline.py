"""The study's headline: a dozen numbers from ``summary.json`` for DVC's tables.

``dvc exp show`` and ``dvc metrics show`` show every number of a metrics file as a column;
the full summary (hundreds of numbers) is a plain output, and this file is the metrics file:
mean ``ppl`` per method over all pairs, each comparison with OT (share of pairs where OT is
smoother, median log-ratio, Holm-adjusted p) and its trend with similarity (Spearman's rho).
"""

from __future__ import annotations

from typing import Any

from otpc.stats import ALL


def headline(summary: dict[str, Any]) -> dict[str, Any]:
    """The headline numbers of ``summary`` (a ``Summary``), nested for DVC's dotted names."""
    return {
        "pairs": summary["n_pairs"],
        "frames": summary["frames"],
        "ppl": {m: groups[ALL]["ppl_mean"] for m, groups in summary["methods"].items()},
        **{
            name: {
                "smoother": groups[ALL]["share_smoother"],
                "log_ratio": groups[ALL]["median_log_ratio"],
                "holm_p": groups[ALL]["holm_p"],
                "trend_rho": summary["trend"][name]["rho"],
            }
            for name, groups in summary["paired"].items()
            if ALL in groups
        },
    }
