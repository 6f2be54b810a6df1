"""Step 3: for each pair and method (random with seeded replicates) -> the coupling table,
with what each coupling does with the prompts' tokens, and which pairs are degenerate."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
from tqdm.auto import tqdm

from otpc import embeddings
from otpc.couplings import METHODS, Coupling, couple_many
from otpc.params import CoupleParams
from otpc.row_blocks import PairBlock, pair_blocks
from otpc.seeds import coupling_seed
from otpc.study.embed import load_index
from otpc.tables import COUPLINGS, PAIRS
from otpc.token_structure import token_structure


def path_id(pair_id: str, method: str, replicate: int) -> str:
    return f"{pair_id}-{method}-{replicate}"


def replicates(params: CoupleParams, method: str) -> int:
    return params.random_replicates if METHODS[method].stochastic else 1


def couple_pairs(
    pairs_path: Path, emb_dir: Path, params: CoupleParams, out: Path, block: int = 512
) -> pl.DataFrame:
    """Couple every pair with every method in ``params``; write the table to ``out``.

    Pairs are coupled ``block`` at a time with ``couple_many`` (memory bounded by a block).
    A pair whose prompts tokenize identically (equal ``token_digest``: equal embeddings) is
    marked ``degenerate``: its clip and ot paths do not move.
    """
    pairs = PAIRS.read(pairs_path).select("pair_id", "prompt_a", "prompt_b")
    index = load_index(emb_dir)
    rows = []
    bar = tqdm(total=len(pairs), desc="couple", unit="pair")
    for start in range(0, len(pairs), block):
        chunk = pairs.slice(start, block)
        ids = chunk["pair_id"].to_list()
        loaded = [
            [embeddings.load(emb_dir, index[t]) for t in chunk[col].to_list()]
            for col in ("prompt_a", "prompt_b")
        ]
        a, b = (np.stack([e.embeds.double().numpy() for e in side]) for side in loaded)
        tokens = [(ea.n_tokens, eb.n_tokens) for ea, eb in zip(*loaded, strict=True)]
        blocks = [pair_blocks(ea.blocks, eb.blocks) for ea, eb in zip(*loaded, strict=True)]
        same = [ea.token_digest == eb.token_digest for ea, eb in zip(*loaded, strict=True)]
        for method in params.methods:
            for r in range(replicates(params, method)):
                seeds = [coupling_seed(params.seed, pid, method, r) for pid in ids]
                found = couple_many(
                    a,
                    b,
                    method,
                    seeds,
                    structure=blocks,
                    per_block=params.blocks == "per_encoder",
                    sinkhorn_reg=params.sinkhorn_reg,
                )
                rows += [
                    _row(pid, r, c, a[p], b[p], tokens[p], blocks[p], same[p])
                    for p, (pid, c) in enumerate(zip(ids, found, strict=True))
                ]
        bar.update(len(chunk))
    bar.close()
    return COUPLINGS.write(COUPLINGS.frame(rows).sort("pair_id", "method", "replicate"), out)


def _row(
    pair_id: str,
    replicate: int,
    c: Coupling,
    a: np.ndarray,
    b: np.ndarray,
    tokens: tuple[int, int],
    blocks: list[PairBlock],
    degenerate: bool,
) -> dict[str, object]:
    return {
        "path_id": path_id(pair_id, c.method, replicate),
        "pair_id": pair_id,
        "method": c.method,
        "replicate": replicate,
        "path_kind": c.path,
        "cost": c.cost,
        "permutation": None if c.permutation is None else c.permutation.tolist(),
        "plan": None if c.plan is None else c.plan.ravel().tolist(),
        "tokens_a": tokens[0],
        "tokens_b": tokens[1],
        "degenerate": degenerate,
        **token_structure(a, b, c.permutation, blocks),
    }


def coupling_from_row(row: dict[str, Any]) -> Coupling:
    """Rebuild a ``Coupling`` from a row of the couplings table."""
    perm, plan = row["permutation"], row["plan"]
    return Coupling(
        method=row["method"],
        cost=row["cost"],
        permutation=None if perm is None else np.asarray(perm, dtype=np.int64),
        plan=None if plan is None else np.asarray(plan).reshape(int(np.sqrt(len(plan))), -1),
        path=row["path_kind"],
    )
