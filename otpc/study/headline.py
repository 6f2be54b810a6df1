"""The study's headline: a dozen numbers from ``summary.json`` for DVC's tables.

``dvc exp show`` and ``dvc metrics show`` show every number of a metrics file as a column;
the full summary (hundreds of numbers) is a plain output, and this file is the metrics file:
short names, so that ``dvc exp show`` stays narrow:

- ``ppl.<method>``: mean ``ppl`` of the method over all pairs;
- ``vs_<other>.share``: share of pairs where OT's path is smoother than ``<other>``'s;
- ``vs_<other>.p``: its Holm-adjusted p (Wilcoxon on the log-ratios);
- ``vs_<other>.rho``: the trend of the log-ratio with similarity (Spearman's rho);
- ``pairs`` compared and ``frames`` per path.

Each to ``DIGITS`` significant digits (``summary.json`` has them in full, with the median
log-ratio and every CI). The MLflow run logs the same numbers under the same dotted names.
"""

from __future__ import annotations

from typing import Any

from otpc.stats import ALL

DIGITS = 4  # significant digits: enough to tell methods apart, short enough for a table


def significant(value: float | None) -> float | None:
    """``value`` to ``DIGITS`` significant digits (None stays None)."""
    return None if value is None else float(f"{value:.{DIGITS}g}")


def headline(summary: dict[str, Any]) -> dict[str, Any]:
    """The headline numbers of ``summary`` (a ``Summary``), nested for DVC's dotted names:
    ``ppl`` per method first, then each comparison, then the counts."""
    return {
        "ppl": {
            m: significant(groups[ALL]["ppl_mean"]) for m, groups in summary["methods"].items()
        },
        **{
            f"vs_{name.split('_vs_', 1)[1]}": {
                "share": significant(groups[ALL]["share_smoother"]),
                "p": significant(groups[ALL]["holm_p"]),
                "rho": significant(summary["trend"][name]["rho"]),
            }
            for name, groups in summary["paired"].items()
            if ALL in groups
        },
        "pairs": summary["n_pairs"],
        "frames": summary["frames"],
    }
