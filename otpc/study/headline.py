"""The study's headline: the pre-registered numbers of ``summary.json``, for DVC's tables.

``dvc exp show`` and ``dvc metrics show`` show every number of a metrics file as a column;
the full summary (hundreds of numbers) is a plain output, and this file is the metrics file.
It holds the pre-registered analysis only (``otpc.study.prereg``), nothing chosen after the
results: per pre-registered comparison ``<other>`` (``vs_clip``, ``vs_clip_length`` for the
co-primary measure, ``vs_random``, ...):

- ``ratio``: exp(median r), the typical ratio of OT's path length to the other's, with
  ``low`` and ``high``, its exact interval;
- ``p``: the Holm-adjusted superiority p; ``equiv_p``: the Holm-adjusted TOST p (margin
  ``aggregate.margin``);

then ``trend_p`` (Holm-adjusted Jonckheere-Terpstra p of the primary comparison) and
``trend_slope`` (its Theil-Sen slope of r on the score), the pairs analysed and the frames
per path. Each to ``DIGITS`` significant digits. The MLflow run logs the same numbers under
the same dotted names.
"""

from __future__ import annotations

from typing import Any

DIGITS = 4  # significant digits: enough to tell methods apart, short enough for a table


def significant(value: float | None) -> float | None:
    """``value`` to ``DIGITS`` significant digits (None stays None)."""
    return None if value is None else float(f"{value:.{DIGITS}g}")


def _short(name: str, primary_measure: str) -> str:
    """``ot_vs_clip/ppl`` -> ``vs_clip``; ``ot_vs_clip/length`` -> ``vs_clip_length`` where
    ``ppl`` is the primary measure."""
    comparison, measure = name.split("/")
    short = "vs_" + comparison.split("_vs_", 1)[1]
    return short if measure == primary_measure else f"{short}_{measure}"


def headline(summary: dict[str, Any]) -> dict[str, Any]:
    """The pre-registered numbers of ``summary`` (a ``Summary``), nested for DVC's dotted
    names."""
    prereg = summary["preregistered"]
    out: dict[str, Any] = {}
    if prereg:
        measure = prereg["declared"]["primary"].split("/")[1]
        for name, t in prereg["tests"].items():
            out[_short(name, measure)] = {
                "ratio": significant(t["ratio"]),
                "low": significant(t["ratio_low"]),
                "high": significant(t["ratio_high"]),
                "p": significant(t["superiority_holm_p"]),
                "equiv_p": significant(t["tost_holm_p"]),
            }
        (trend,) = prereg["trend"].values()
        out["trend_p"] = significant(trend["holm_p"])
        out["trend_slope"] = significant(trend["slope"])
    return out | {"pairs": summary["n_pairs"], "frames": summary["frames"]}
