"""The tables the stages pass to each other: each one's columns, types and meaning, once.

Every table is a parquet file. ``Table.write`` keeps exactly the schema's columns, in order
and with its types; ``Table.read`` checks that a file has them and names the file and the
column when it does not. ``docs/architecture.md`` lists every column (a test keeps it so).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import polars as pl

from otpc.atomic import write_with
from otpc.errors import InputError


@dataclass(frozen=True)
class Table:
    """A named parquet table: ``columns`` maps each column to (polars type, meaning)."""

    name: str
    columns: dict[str, tuple[pl.DataType, str]]

    @property
    def schema(self) -> dict[str, pl.DataType]:
        return {name: dtype for name, (dtype, _) in self.columns.items()}

    def frame(self, rows: list[dict[str, object]]) -> pl.DataFrame:
        """A table of ``rows`` (dicts with at least the schema's columns)."""
        return pl.DataFrame(rows, schema=self.schema)

    def conform(self, df: pl.DataFrame) -> pl.DataFrame:
        """``df`` with exactly the schema's columns, in order, cast to its types."""
        return df.select(list(self.columns)).cast(self.schema)  # type: ignore[arg-type]

    def write(self, df: pl.DataFrame, path: Path) -> pl.DataFrame:
        """Write ``df`` (conformed) to ``path`` atomically; returns what was written."""
        table = self.conform(df)
        write_with(path, table.write_parquet)
        return table

    def read(self, path: Path) -> pl.DataFrame:
        """Read ``path``; ``InputError`` naming the file and column if it is not this table."""
        try:
            df = pl.read_parquet(path)
        except FileNotFoundError as err:
            raise InputError(
                f"{path}: the {self.name} table is missing; run the stage that "
                "writes it (`dvc repro`)"
            ) from err
        except (pl.exceptions.PolarsError, OSError) as err:
            raise InputError(f"{path}: not a readable {self.name} table ({err})") from err
        for column, dtype in self.schema.items():
            if column not in df.columns:
                raise InputError(f"{path}: the {self.name} table has no column {column!r}")
            if df.schema[column] != dtype:
                raise InputError(
                    f"{path}: column {column!r} of the {self.name} table is "
                    f"{df.schema[column]}, expected {dtype}"
                )
        return df.select(list(self.columns))


PAIRS = Table(
    "pairs",
    {
        "pair_id": (pl.String(), "content-derived id (or data.id_column); seeds derive from it"),
        "prompt_a": (pl.String(), "the prompt the paths start from"),
        "prompt_b": (pl.String(), "the prompt the paths end at"),
        "score": (pl.Float64(), "similarity score of the pair (CxC agg_score, 0-5)"),
        "group": (pl.String(), "similarity group: the data.bins interval of score, e.g. [3,4)"),
        "sampling_method": (pl.String(), "CxC: c2c_cocaption or c2c_isim (null: a CSV source)"),
        "rank": (pl.Int64(), "place in its group's draw: spares (rank >= n_per_group) fill in"),
    },
)

EMBEDDINGS = Table(
    "embeddings index",
    {
        "prompt": (pl.String(), "the prompt's text"),
        "key": (pl.String(), "name of its file <key>.safetensors (hash of the text)"),
        "n_tokens": (pl.Int64(), "tokens with start/end tokens, before truncation"),
        "truncated": (pl.Boolean(), "longer than the tokenizer's limit, cut as the pipeline cuts"),
        "encoders": (pl.String(), "its rows by encoder: tokens / rows, e.g. clip 9/77, t5 12/256"),
        "model": (pl.String(), "fingerprint of the model that encoded it"),
    },
)

COUPLINGS = Table(
    "couplings",
    {
        "path_id": (pl.String(), "<pair_id>-<method>-<replicate>"),
        "pair_id": (pl.String(), "the pair"),
        "method": (pl.String(), "coupling method (couple.methods)"),
        "replicate": (pl.Int32(), "replicate of a stochastic method (0 otherwise)"),
        "path_kind": (pl.String(), "how rows move: linear, slerp or barycentric"),
        "cost": (pl.Float64(), "mean squared distance each row moves along the path"),
        "permutation": (pl.List(pl.Int32()), "row of B each row of A moves to (null: a plan)"),
        "plan": (pl.List(pl.Float64()), "entropic plan, row-major n x n (sinkhorn only)"),
        "tokens_a": (pl.Int32(), "tokens of prompt A, start and end included, before truncation"),
        "tokens_b": (pl.Int32(), "tokens of prompt B"),
        "degenerate": (pl.Boolean(), "A and B tokenize identically: clip and ot paths do not move"),
        "bos_fixed": (pl.Boolean(), "start tokens go to start tokens (null: a plan, or none: T5)"),
        "eos_to_eos": (pl.Boolean(), "A's end tokens go to B's, per encoder (null: a plan)"),
        "real_to_pad": (pl.Int32(), "A's word and end-token rows sent to padding rows of B"),
        "real_cost_share": (pl.Float64(), "share of the cost in A's token rows (null: cost 0)"),
        "rows_moved_tokens": (pl.Int32(), "A's token rows sent to another row than their own"),
        "rows_moved_padding": (pl.Int32(), "A's padding rows sent to another row than their own"),
    },
)

FRAMES = Table(
    "frames index",
    {
        "path_id": (pl.String(), "the path"),
        "pair_id": (pl.String(), "its pair"),
        "k": (pl.Int64(), "frame number, 0 .. render.frames - 1"),
        "t": (pl.Float64(), "position on the path, k / (frames - 1)"),
        "key": (pl.String(), "frame cache key (shared by the end frames of permutation paths)"),
        "file": (pl.String(), "the PNG, relative to the render folder"),
        "random_weights": (pl.Boolean(), "the model's weights are random"),
        "model": (pl.String(), "the model that drew the frames, in words"),
    },
)

SCORES = Table(
    "scores",
    {
        "path_id": (pl.String(), "the path"),
        "pair_id": (pl.String(), "its pair"),
        "method": (pl.String(), "coupling method"),
        "replicate": (pl.Int32(), "replicate of a stochastic method"),
        "path_kind": (pl.String(), "how rows move (as in couplings)"),
        "cost": (pl.Float64(), "coupling cost (as in couplings)"),
        "degenerate": (pl.Boolean(), "the pair's embeddings are equal (as in couplings)"),
        "ppl": (pl.Float64(), "sum of the LPIPS steps (the paper's PPL; compare at equal frames)"),
        "ppl_norm": (pl.Float64(), "mean step / dt^2, dt = 1 / (frames - 1)"),
        "length": (pl.Float64(), "sum of the square roots of the steps (comparable across frames)"),
        "max_step": (pl.Float64(), "the largest LPIPS step"),
        "frames": (pl.Int32(), "frames of the scored path (score.frames, or render.frames)"),
        "steps": (pl.List(pl.Float64()), "LPIPS between consecutive frames (rounded to float32)"),
        "end_lpips": (pl.Float64(), "LPIPS between the path's two end frames (primary scoring)"),
        "variant": (pl.String(), "primary, or the robustness variant (e.g. net=vgg)"),
        "score": (pl.Float64(), "the pair's similarity score"),
        "group": (pl.String(), "the pair's similarity group"),
        "rank": (pl.Int64(), "the pair's place in its group's draw (as in pairs)"),
        "metric": (pl.String(), "lpips-<net>-<imagenet|untrained>"),
        "random_weights": (pl.Boolean(), "the images come from random weights"),
        "model": (pl.String(), "the model that drew the frames, in words"),
    },
)

ALL = (PAIRS, EMBEDDINGS, COUPLINGS, FRAMES, SCORES)
