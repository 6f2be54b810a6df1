"""Step 1: a source of prompt pairs -> the pairs table."""

from __future__ import annotations

from pathlib import Path

import polars as pl

from otpc.pairs import read_csv_pairs, sample_groups
from otpc.params import DataParams
from otpc.tables import PAIRS


def load_source(data: DataParams) -> tuple[pl.DataFrame, str]:
    """All candidate pairs of the configured source, and a name for error messages."""
    if data.source == "toy":
        from otpc.toy.pairs import toy_pairs

        return toy_pairs(per_group(data), data.seed, data.toy_attributes), "the toy world"
    if data.source == "cxc":
        from otpc.cxc import read_cxc_pairs  # only CxC studies read the captions file

        return read_cxc_pairs(data), f"CxC {data.split}"
    return read_csv_pairs(
        Path(data.path), data.prompt_a, data.prompt_b, data.score, data.id_column
    ), data.path


def sample(data: DataParams, out: Path) -> pl.DataFrame:
    """Draw the study's pairs and write them to ``out`` (the pairs table)."""
    pairs, name = load_source(data)
    return PAIRS.write(sample_groups(pairs, data.bins, per_group(data), data.seed, name), out)


def per_group(data: DataParams) -> int:
    """Candidates drawn per group: the pairs analysed and their spares."""
    return data.n_per_group + data.spare_per_group
