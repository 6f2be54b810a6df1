"""What a path's frames show, read back by the toy detector: the ground truth LPIPS is
checked against (docs/study.md, "Ground truth of the metric").

Every attribute of the toy world is graded: its values lie on a scale (``SCALES``; the hues
on a circle), and ``d(u, v)`` is the number of scale steps between two values (the shorter
way round the circle); a frame where nothing is drawn (``None``) is as many steps from any
value as the scale has values, farther than any two values are apart, so that passing
through it is never a short cut. A path may pass through the
values between its ends: a tall bar becomes a wide one through the square. Per path, over the
counted attributes, with A = the first frame's values and B = the last's:

- ``detours``: interior frames showing a value of some attribute that is not between A's
  and B's (``d(A, v) + d(v, B) > d(A, B)``: a blue square between two red ones);
- ``changes``: scale steps between consecutive frames, summed; ``min_changes``: ``d(A, B)``
  summed over the attributes (the fewest any path has); ``extra_changes`` = the difference;
- ``monotone_share``: share of attributes whose steps add up to ``d(A, B)`` (they move from
  A's value to B's one way, never back); ``monotone``: all of them; ``clean``: no detour
  and no extra change.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from otpc import png
from otpc.toy import world

Detected = Mapping[str, Any]  # attribute -> value read back (None: nothing there)
TRUTH = {  # one row per path: the measures above
    "path_id": pl.String,
    "detours": pl.Int64,
    "changes": pl.Int64,
    "min_changes": pl.Int64,
    "extra_changes": pl.Int64,
    "monotone_share": pl.Float64,
    "monotone": pl.Boolean,
    "clean": pl.Boolean,
}


SCALES: dict[str, tuple[tuple[str, ...], bool]] = {  # attribute -> (values in order, circular)
    "shape": (world.SHAPES, False),  # by aspect ratio, tall to wide
    "colour": (tuple(world.COLOURS), True),  # by hue, round the wheel
    "size": (tuple(world.SIZES), False),
    "background": (tuple(world.BACKGROUNDS), False),  # dark to light
}


def steps(name: str, u: str | None, v: str | None) -> int:
    """``d(u, v)``: scale steps between two values of attribute ``name``."""
    if u == v:
        return 0
    values, circular = SCALES[name]
    if u is None or v is None:
        return len(values)
    gap = abs(values.index(u) - values.index(v))
    return min(gap, len(values) - gap) if circular else gap


def path_truth(frames: Sequence[Detected], attributes: Sequence[str]) -> dict[str, Any]:
    """The measures above for one path's detected attributes, frame by frame."""
    a, b = frames[0], frames[-1]
    ends = {name: steps(name, a[name], b[name]) for name in attributes}
    detours = sum(
        any(
            steps(name, a[name], f[name]) + steps(name, f[name], b[name]) > ends[name]
            for name in attributes
        )
        for f in frames[1:-1]
    )
    moved = {
        name: sum(steps(name, f[name], g[name]) for f, g in zip(frames, frames[1:], strict=False))
        for name in attributes
    }
    changes, least = sum(moved.values()), sum(ends.values())
    monotone = [moved[name] == ends[name] for name in attributes]
    return {
        "detours": detours,
        "changes": changes,
        "min_changes": least,
        "extra_changes": changes - least,
        "monotone_share": float(np.mean(monotone)),
        "monotone": all(monotone),
        "clean": detours == 0 and changes == least,
    }


def detect_paths(
    render_dir: Path,
    frames_index: pl.DataFrame,
    detect: Callable[[np.ndarray], Detected],
    attributes: Sequence[str],
) -> pl.DataFrame:
    """``path_truth`` of every path of the frames index (``path_id``, ``k``, ``file``
    relative to ``render_dir``): one row per path (``TRUTH``). A frame file shared by
    several paths (their end frames) is read and detected once."""
    seen: dict[str, Detected] = {}

    def detected(file: str) -> Detected:
        if file not in seen:
            seen[file] = detect(png.read(render_dir / file))
        return seen[file]

    rows = [
        {"path_id": path_id, **path_truth([detected(f) for f in group["file"]], attributes)}
        for (path_id,), group in frames_index.sort("path_id", "k").group_by(
            "path_id", maintain_order=True
        )
    ]
    return pl.DataFrame(rows, schema=TRUTH)


def _badness(paths: pl.DataFrame) -> pl.Expr:
    """How far a path is from the cleanest: detour frames plus extra changes."""
    return (pl.col("detours") + pl.col("extra_changes")).alias("badness")


def truth_by_method(paths: pl.DataFrame) -> dict[str, dict[str, float]]:
    """Per method, over its paths (``detect_paths``' columns and ``method``): n, the mean
    detours and extra changes, and the shares of paths with a detour, with extra changes,
    monotone and clean."""
    out = {}
    for (method,), sel in paths.group_by("method", maintain_order=True):
        detours, extra = sel["detours"].to_numpy(), sel["extra_changes"].to_numpy()
        out[str(method)] = {
            "n": float(len(sel)),
            "detours_mean": float(detours.mean()),
            "extra_changes_mean": float(extra.mean()),
            "detour_share": float(np.mean(detours > 0)),
            "extra_share": float(np.mean(extra > 0)),
            "monotone_share": float(sel["monotone"].to_numpy().mean()),
            "clean_share": float(sel["clean"].to_numpy().mean()),
        }
    return out


def truth_agreement(paths: pl.DataFrame, reference: str, other: str) -> dict[str, float]:
    """Does ``ppl`` see what the frames show? Over every path: Spearman's rank correlation
    of ``ppl`` with the badness (detours + extra changes; NaN if either is constant). Per
    pair, between ``reference`` and ``other`` (replicate 0 of each): of the pairs where
    their badness differs (``pairs_decided``), the share where the path with less badness
    also has the lower ``ppl`` (``same_winner_share``); ``pairs_tied``: equal badness."""
    from scipy import stats

    scored = paths.with_columns(_badness(paths))
    x, y = scored["ppl"].to_numpy(), scored["badness"].to_numpy()
    rho = float("nan")
    if len(x) > 2 and np.ptp(x) > 0 and np.ptp(y) > 0:
        rho = float(stats.spearmanr(x, y).statistic)
    wide = (
        scored.filter(pl.col("method").is_in([reference, other]) & (pl.col("replicate") == 0))
        .pivot(on="method", index="pair_id", values=["ppl", "badness"])
        .drop_nulls()
    )
    if wide.is_empty():
        decided = wide
    else:
        decided = wide.filter(pl.col(f"badness_{reference}") != pl.col(f"badness_{other}"))
    same = 0
    if not decided.is_empty():
        truth_says = decided[f"badness_{reference}"] < decided[f"badness_{other}"]
        ppl_says = decided[f"ppl_{reference}"] < decided[f"ppl_{other}"]
        same = int((truth_says == ppl_says).sum())
    return {
        "spearman_ppl_vs_truth": rho,
        "same_winner_share": same / len(decided) if len(decided) else float("nan"),
        "pairs_decided": float(len(decided)),
        "pairs_tied": float(len(wide) - len(decided)),
    }
