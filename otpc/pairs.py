"""Prompt pairs: read a source table, validate it, put pairs in similarity groups, sample.

The pairs table has one row per pair: ``pair_id, prompt_a, prompt_b, score, group``.
Pair ids come from the pair's content, so seeds derived from them do not depend on row order.
"""

from __future__ import annotations

import hashlib
import math
import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import polars as pl

from otpc.couplings import derive_seed
from otpc.errors import InputError

SAFE_ID = re.compile(r"[A-Za-z0-9._-]+")
PAIR_SCHEMA = {"pair_id": pl.String, "prompt_a": pl.String, "prompt_b": pl.String,
               "score": pl.Float64, "group": pl.String}


def pair_id_for(a: str, b: str) -> str:
    """A content-derived id for the pair (A, B)."""
    return "p" + hashlib.sha256(f"{a}\x00{b}".encode()).hexdigest()[:12]


def group_labels(bins: Sequence[float]) -> list[str]:
    """Labels of the bins [b0,b1) [b1,b2) ... [b_{m-1},b_m] (the last one closed)."""
    edges = list(bins)
    labels = [f"[{_fmt(lo)},{_fmt(hi)})" for lo, hi in zip(edges[:-2], edges[1:-1])]
    return labels + [f"[{_fmt(edges[-2])},{_fmt(edges[-1])}]"]


def _fmt(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else str(x)


def assign_group(score: float, bins: Sequence[float]) -> str | None:
    """The bin label of ``score``, or None outside [b0, bm]."""
    labels = group_labels(bins)
    if score == bins[-1]:
        return labels[-1]
    i = int(np.searchsorted(bins, score, side="right")) - 1
    return labels[i] if 0 <= i < len(labels) else None


def read_csv_pairs(path: Path, prompt_a: str, prompt_b: str, score: str,
                   id_column: str | None = None) -> pl.DataFrame:
    """Read and validate a CSV of prompt pairs; errors name the file, column and row."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError as err:
        raise InputError(f"{path}: file not found") from err
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as err:
        line = raw[:err.start].count(b"\n") + 1
        raise InputError(f"{path}: line {line} is not valid UTF-8 ({err.reason})") from err
    try:
        df = pl.read_csv(text.encode(), infer_schema=False)
    except pl.exceptions.PolarsError as err:
        raise InputError(f"{path}: not a readable CSV ({err})") from err
    wanted = [c for c in (prompt_a, prompt_b, score, id_column) if c]
    missing = [c for c in wanted if c not in df.columns]
    if missing:
        raise InputError(f"{path}: missing column(s) {missing}; columns are {df.columns}")
    rows = []
    for i, rec in enumerate(df.select(wanted).iter_rows(named=True)):
        line = i + 2  # 1-based, after the header
        a, b = rec[prompt_a], rec[prompt_b]
        for col, val in ((prompt_a, a), (prompt_b, b)):
            if val is None or not val.strip():
                raise InputError(f"{path}: line {line}: column {col!r} is an empty prompt")
        try:
            s = float(rec[score])
        except (TypeError, ValueError):
            raise InputError(f"{path}: line {line}: column {score!r} is not a number: "
                             f"{rec[score]!r}") from None
        if math.isnan(s) or math.isinf(s):
            raise InputError(f"{path}: line {line}: column {score!r} is {s}")
        pid = rec[id_column] if id_column else pair_id_for(a, b)
        if not SAFE_ID.fullmatch(pid or ""):
            raise InputError(f"{path}: line {line}: column {id_column!r} must be a non-empty id "
                             f"of letters, digits, '.', '_' or '-' (it names files), got {pid!r}")
        rows.append({"pair_id": pid, "prompt_a": a, "prompt_b": b, "score": s, "line": line})
    if not rows:
        raise InputError(f"{path}: no pairs")
    out = pl.DataFrame(rows)
    check_unique_ids(out, path)
    return out.drop("line")


def check_unique_ids(df: pl.DataFrame, path: Path) -> None:
    """Duplicate pair ids are an error that names the lines."""
    dup = df.filter(pl.col("pair_id").is_duplicated())
    if len(dup):
        first = dup.group_by("pair_id", maintain_order=True).agg(pl.col("line")).row(0)
        raise InputError(f"{path}: duplicate pair {first[0]!r} on lines {first[1]}")


def make_groups(df: pl.DataFrame, bins: Sequence[float], source: str) -> pl.DataFrame:
    """Add the ``group`` column; a score outside the bins is an error naming the pair."""
    groups = []
    for pid, s in df.select("pair_id", "score").iter_rows():
        g = assign_group(s, bins)
        if g is None:
            raise InputError(f"{source}: pair {pid!r} has score {s}, outside the bins "
                             f"[{bins[0]}, {bins[-1]}]")
        groups.append(g)
    return df.with_columns(pl.Series("group", groups, pl.String))


def sample_groups(df: pl.DataFrame, bins: Sequence[float], n_per_group: int, seed: int,
                  source: str) -> pl.DataFrame:
    """Draw up to ``n_per_group`` pairs per group; a group with no pairs is an error.

    The draw depends only on the seed, the group and the set of pair ids (not row order).
    A group with fewer pairs than asked keeps all of them.
    """
    df = make_groups(df, bins, source)
    parts = []
    for label in group_labels(bins):
        members = df.filter(pl.col("group") == label).sort("pair_id")
        if members.is_empty():
            raise InputError(f"{source}: similarity group {label} (data.bins) has no pairs")
        rng = np.random.default_rng(derive_seed(seed, "sample", label))
        take = np.sort(rng.permutation(len(members))[:min(n_per_group, len(members))])
        parts.append(members[take.tolist()])
    return pl.concat(parts).select(list(PAIR_SCHEMA)).cast(PAIR_SCHEMA)
