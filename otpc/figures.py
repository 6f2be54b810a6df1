"""The study's figures: PPL and coupling cost by method and group (paper Fig. 3), OT's
per-pair advantage against similarity, what the paths show against their PPL (toy world),
and image strips of a few pairs, one row per method (paper Fig. 2)."""

from __future__ import annotations

import io
import textwrap
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import polars as pl

from otpc.exact import theil_sen
from otpc.images import save_png
from otpc.png import decode

RANDOM_NOTE = "random weights: images and numbers demonstrate the pipeline, not the paper's claim"


def _save(fig: plt.Figure, path: Path, dpi: int = 110) -> None:
    """Rasterise ``fig`` and write it with otpc's PNG writer (same bytes on every machine)."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight")
    plt.close(fig)
    save_png(path, decode(buf.getvalue())[0])


def ppl_cost_figure(
    table: pl.DataFrame, groups: Sequence[str], path: Path, note: str, similarity: str
) -> None:
    """Two panels: mean PPL (left) and mean coupling cost (right) per group (``similarity``
    says what the groups' score is), by method, with BCa bootstrap CIs as error bars."""
    methods = table["method"].unique(maintain_order=True).to_list()
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.4), layout="constrained")
    x = np.arange(len(groups))
    width = 0.8 / max(1, len(methods))
    for ax, metric, label in (
        (axes[0], "ppl", "perceptual path length (LPIPS, sum)"),
        (axes[1], "cost", "coupling cost (mean squared distance)"),
    ):
        for j, method in enumerate(methods):
            sel = table.filter(pl.col("method") == method)
            by_group = dict(zip(sel["group"].to_list(), sel.iter_rows(named=True), strict=True))
            means = np.array(
                [by_group[g][f"{metric}_mean"] if g in by_group else np.nan for g in groups]
            )
            lo = np.array(
                [by_group[g][f"{metric}_ci_low"] if g in by_group else np.nan for g in groups]
            )
            hi = np.array(
                [by_group[g][f"{metric}_ci_high"] if g in by_group else np.nan for g in groups]
            )
            err = np.vstack([np.nan_to_num(means - lo), np.nan_to_num(hi - means)])
            ax.bar(
                x + (j - (len(methods) - 1) / 2) * width,
                means,
                width,
                yerr=err,
                capsize=2,
                label=method,
            )
        ax.set_xticks(x, groups)
        ax.set_xlabel(similarity)
        ax.set_ylabel(label)
    axes[0].legend(title="coupling")
    fig.suptitle(
        "Path smoothness and coupling cost by similarity" + (f"\n{note}" if note else ""),
        fontsize=10,
    )
    _save(fig, path)


def effect_trend_figure(
    ratios: dict[str, pl.DataFrame],
    trends: dict[str, dict[str, Any]],
    groups: Sequence[str],
    path: Path,
    note: str,
    confidence: float,
) -> None:
    """One panel per comparison: each pair's log-ratio r = log(ppl_ot / ppl_other) against its
    similarity score, the median of each group and the Theil-Sen line (robust to outliers)
    with its slope's interval; the pre-registered comparison's panel also gives its
    Jonckheere-Terpstra p (Holm-adjusted), the others are descriptive."""
    names = list(ratios) or ["(no comparison)"]
    cols = min(3, len(names))
    rows = -(-len(names) // cols)
    fig, axes = plt.subplots(
        rows, cols, figsize=(5.2 * cols, 4.0 * rows + 0.6), squeeze=False, layout="constrained"
    )
    for ax in axes.flat[len(names) :]:
        ax.set_visible(False)
    for ax, name in zip(axes.flat, names, strict=False):
        df = ratios.get(name)
        ax.axhline(0.0, color="0.5", linewidth=0.8, linestyle="--")
        ax.set_xlabel("similarity score of the pair")
        ax.set_ylabel(f"log(ppl {name.replace('_vs_', ' / ppl ')})  (< 0: ot smoother)")
        df = None if df is None else df.drop_nulls("r")
        if df is None or df.is_empty():
            ax.set_title(f"{name}: no pairs", fontsize=9)
            continue
        x, y = df["score"].to_numpy(), df["r"].to_numpy()
        ax.scatter(x, y, s=12, alpha=0.5, label="pairs")
        medians = [
            (float(np.median(sel["score"].to_numpy())), float(np.median(sel["r"].to_numpy())))
            for g in groups
            if not (sel := df.filter(pl.col("group") == g)).is_empty()
        ]
        ax.plot(*zip(*medians, strict=True), "o-", color="C3", label="group median")
        line = theil_sen(x, y, confidence)
        title = f"{name}: n {len(y)}"
        if line["slope"] == line["slope"]:  # defined
            xs = np.array([x.min(), x.max()])
            ax.plot(xs, line["intercept"] + line["slope"] * xs, color="C2", label="Theil-Sen")
            title += (
                f", slope {line['slope']:.3g} [{line['slope_ci_low']:.3g}, "
                f"{line['slope_ci_high']:.3g}]"
            )
        trend = trends.get(f"trend/{name}/ppl")
        title += f"\npre-registered JT p (Holm) {trend['holm_p']:.3g}" if trend else "\ndescriptive"
        ax.set_title(title, fontsize=9)
        ax.legend(fontsize=7)
    fig.suptitle(
        "Does OT's advantage change with similarity?" + (f"\n{note}" if note else ""),
        fontsize=10,
    )
    _save(fig, path)


def truth_figure(truth: dict[str, Any], path: Path, note: str) -> None:
    """What the paths show (toy world): per method, the share of paths with a detour frame
    (an interior frame showing an attribute of neither end), with extra attribute changes,
    and not monotone; and how often ``ppl`` picks the same winner as the frames."""
    fig, ax = plt.subplots(figsize=(7.5, 4.0), layout="constrained")
    if not truth:
        ax.text(0.5, 0.5, "no ground truth: only the toy world has a detector", ha="center")
        ax.set_axis_off()
    else:
        methods = list(truth["by_method"])
        shares = {
            "a detour frame": [truth["by_method"][m]["detour_share"] for m in methods],
            "extra changes": [truth["by_method"][m]["extra_share"] for m in methods],
            "not monotone": [1 - truth["by_method"][m]["monotone_share"] for m in methods],
        }
        x = np.arange(len(methods))
        for j, (label, values) in enumerate(shares.items()):
            ax.bar(x + (j - 1) * 0.27, values, 0.27, label=label)
        ax.set_xticks(x, methods)
        ax.set_ylim(0, 1)
        ax.set_ylabel("share of paths")
        ax.legend(fontsize=8)
        agree = "; ".join(
            f"{name}: ppl picks the frames' winner in {a['same_winner_share']:.0%} of "
            f"{a['pairs_decided']:.0f} decided pairs"
            for name, a in truth["agreement"].items()
        )
        ax.set_title(textwrap.fill(agree, 100), fontsize=8)
    fig.suptitle(
        "What the paths show, read back by the toy detector" + (f"\n{note}" if note else ""),
        fontsize=10,
    )
    _save(fig, path)


def strips_figure(
    rows: Sequence[tuple[str, str, dict[str, np.ndarray]]], path: Path, note: str = ""
) -> None:
    """For each (title, group, {method: strip image}), one block of rows, one per method."""
    n_rows = sum(len(strips) for _, _, strips in rows)
    height, width = next(iter(rows[0][2].values())).shape[:2]
    dpi, max_width_in, label_in = 100, 16.0, 1.2
    # small frames (the toy model's 32 px) shown enlarged by an integer factor, pixels kept
    scale = min(float(max(1, 96 // height)), (max_width_in - label_in) * dpi / width)
    row_in = height * scale / dpi + 0.3
    fig, axes = plt.subplots(
        n_rows, 1, figsize=(width * scale / dpi + label_in, row_in * n_rows + 0.6), squeeze=False
    )
    i = 0
    for title, group, strips in rows:
        for j, (method, image) in enumerate(strips.items()):
            ax = axes[i, 0]
            ax.imshow(image, interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            ax.set_ylabel(method, rotation=0, ha="right", va="center", fontsize=8)
            if j == 0:
                ax.set_title(textwrap.shorten(f"{group}  {title}", 110), fontsize=8, loc="left")
            i += 1
    fig.suptitle(
        "Interpolation paths A -> B, one row per coupling" + (f"\n{note}" if note else ""),
        fontsize=10,
    )
    fig.tight_layout()
    _save(fig, path, dpi=dpi)
