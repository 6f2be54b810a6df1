"""Prompt pairs: read a source table, validate it, put pairs in similarity groups, sample.

The result is the pairs table (``otpc.tables.PAIRS``), one row per pair.
Pair ids come from the pair's content, so seeds derived from them do not depend on row order.
"""

from __future__ import annotations

import csv
import hashlib
import io
import itertools
import math
import re
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import polars as pl

from otpc.errors import InputError
from otpc.seeds import derive_seed
from otpc.tables import PAIRS
from otpc.text import is_blank, read_utf8, shorten

SAFE_ID = re.compile(r"[A-Za-z0-9._-]+")


def pair_id_for(a: str, b: str) -> str:
    """A content-derived id for the pair (A, B)."""
    return "p" + hashlib.sha256(f"{a}\x00{b}".encode()).hexdigest()[:12]


def group_labels(bins: Sequence[float]) -> list[str]:
    """Labels of the bins [b0,b1) [b1,b2) ... [b_{m-1},b_m] (the last one closed)."""
    edges = list(bins)
    labels = [f"[{_fmt(lo)},{_fmt(hi)})" for lo, hi in itertools.pairwise(edges[:-1])]
    return [*labels, f"[{_fmt(edges[-2])},{_fmt(edges[-1])}]"]


def _fmt(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else str(x)


def assign_group(score: float, bins: Sequence[float]) -> str | None:
    """The bin label of ``score``, or None outside [b0, bm]."""
    labels = group_labels(bins)
    if score == bins[-1]:
        return labels[-1]
    i = int(np.searchsorted(bins, score, side="right")) - 1
    return labels[i] if 0 <= i < len(labels) else None


def _records(path: Path, text: str) -> Iterator[tuple[int, list[str]]]:
    """(first line, fields) of each CSV record; a record may span lines (quoted newlines)."""
    reader = csv.reader(io.StringIO(text, newline=""))
    start = 1
    while True:
        try:
            fields = next(reader)
        except StopIteration:
            return
        except csv.Error as err:
            raise InputError(f"{path}: line {start}: not readable as CSV ({err})") from None
        if fields:  # blank lines are skipped
            yield start, fields
        start = reader.line_num + 1


def read_csv_pairs(
    path: Path, prompt_a: str, prompt_b: str, score: str, id_column: str | None = None
) -> pl.DataFrame:
    """Read and validate a CSV of prompt pairs; errors name the file, line and column.

    Returns ``pair_id, prompt_a, prompt_b, score, line`` (the line where each record starts)
    and a null ``sampling_method`` (a CxC notion).
    """
    records = _records(path, read_utf8(path, InputError))
    header_line, header = next(records, (1, []))
    if not header:
        raise InputError(f"{path}: empty file (expected a header line)")
    wanted = [c for c in (prompt_a, prompt_b, score, id_column) if c]
    missing = [c for c in wanted if c not in header]
    if missing:
        raise InputError(f"{path}: missing column(s) {missing}; columns are {header}")
    column = {name: header.index(name) for name in wanted}
    rows = []
    for line, fields in records:
        if len(fields) != len(header):
            raise InputError(
                f"{path}: line {line}: {len(fields)} field(s), but the header "
                f"(line {header_line}) has {len(header)}"
            )
        rec = {name: fields[i] for name, i in column.items()}
        a, b = rec[prompt_a], rec[prompt_b]
        for col, val in ((prompt_a, a), (prompt_b, b)):
            if is_blank(val):
                raise InputError(f"{path}: line {line}: column {col!r} is an empty prompt")
        try:
            s = float(rec[score])
        except ValueError:
            raise InputError(
                f"{path}: line {line}: column {score!r} is not a number: {shorten(rec[score])!r}"
            ) from None
        if math.isnan(s) or math.isinf(s):
            raise InputError(f"{path}: line {line}: column {score!r} is {s}")
        pid = rec[id_column] if id_column else pair_id_for(a, b)
        if not SAFE_ID.fullmatch(pid or ""):
            raise InputError(
                f"{path}: line {line}: column {id_column!r} must be a non-empty id "
                f"of letters, digits, '.', '_' or '-' (it names files), got "
                f"{shorten(pid)!r}"
            )
        rows.append({"pair_id": pid, "prompt_a": a, "prompt_b": b, "score": s, "line": line})
    if not rows:
        raise InputError(f"{path}: no pairs")
    out = pl.DataFrame(rows).with_columns(pl.lit(None, pl.String).alias("sampling_method"))
    check_unique_ids(out, path)
    return out


def check_unique_ids(df: pl.DataFrame, path: Path) -> None:
    """Duplicate pair ids are an error that names the lines."""
    dup = df.filter(pl.col("pair_id").is_duplicated())
    if len(dup):
        first = dup.group_by("pair_id", maintain_order=True).agg(pl.col("line")).row(0)
        raise InputError(f"{path}: duplicate pair {first[0]!r} on lines {first[1]}")


def make_groups(df: pl.DataFrame, bins: Sequence[float], source: str) -> pl.DataFrame:
    """Add the ``group`` column; a score outside the bins is an error naming the pair and,
    if ``df`` has a ``line`` column, its line."""
    groups = []
    lines = df["line"].to_list() if "line" in df.columns else [None] * len(df)
    for (pid, s), line in zip(df.select("pair_id", "score").iter_rows(), lines, strict=True):
        g = assign_group(s, bins)
        if g is None:
            where = f"line {line}: " if line is not None else ""
            raise InputError(
                f"{source}: {where}pair {pid!r} has score {s}, outside the bins "
                f"[{bins[0]}, {bins[-1]}] (data.bins)"
            )
        groups.append(g)
    return df.with_columns(pl.Series("group", groups, pl.String))


def sample_groups(
    df: pl.DataFrame, bins: Sequence[float], n_per_group: int, seed: int, source: str
) -> pl.DataFrame:
    """Draw up to ``n_per_group`` pairs per group, each with its ``rank`` in its group's draw
    (the first n of a larger draw are the n drawn); a group with no pairs is an error.

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
        order = rng.permutation(len(members))[: min(n_per_group, len(members))]
        rank = np.argsort(order)  # the taken rows in pair-id order, by place in the draw
        parts.append(
            members[np.sort(order).tolist()].with_columns(pl.Series("rank", rank, pl.Int64))
        )
    return PAIRS.conform(pl.concat(parts))
