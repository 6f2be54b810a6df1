"""The study's figures: PPL and coupling cost by method and group (paper Fig. 3), and image
strips of a few pairs, one row per method (paper Fig. 2)."""

from __future__ import annotations

import io
import textwrap
from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import polars as pl

from otpc.images import save_png
from otpc.png import decode

RANDOM_NOTE = "random weights: images and numbers demonstrate the pipeline, not the paper's claim"


def _save(fig: plt.Figure, path: Path, dpi: int = 110) -> None:
    """Rasterise ``fig`` and write it with otpc's PNG writer (same bytes on every machine)."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight")
    plt.close(fig)
    save_png(path, decode(buf.getvalue())[0])


def ppl_cost_figure(table: pl.DataFrame, groups: Sequence[str], path: Path, note: str = "") -> None:
    """Two panels: mean PPL (left) and mean coupling cost (right) per group, by method,
    with bootstrap CIs as error bars."""
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
        ax.set_xlabel("CxC similarity group (agg_score)")
        ax.set_ylabel(label)
    axes[0].legend(title="coupling")
    fig.suptitle(
        "Path smoothness and coupling cost by similarity" + (f"\n{note}" if note else ""),
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
    scale = min(1.0, (max_width_in - label_in) * dpi / width)  # never upscale the frames
    row_in = height * scale / dpi + 0.3
    fig, axes = plt.subplots(
        n_rows, 1, figsize=(width * scale / dpi + label_in, row_in * n_rows + 0.6), squeeze=False
    )
    i = 0
    for title, group, strips in rows:
        for j, (method, image) in enumerate(strips.items()):
            ax = axes[i, 0]
            ax.imshow(image)
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
