"""Step 3: for each pair and method (random with seeded replicates) -> the coupling table."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl
from tqdm.auto import tqdm

from otpc import embeddings
from otpc.atomic import write_with
from otpc.couplings import METHODS, Coupling, couple, derive_seed
from otpc.params import CoupleParams
from otpc.study.embed import load_index

SCHEMA = {"path_id": pl.String, "pair_id": pl.String, "method": pl.String,
          "replicate": pl.Int32, "path_kind": pl.String, "cost": pl.Float64, "w2": pl.Float64,
          "permutation": pl.List(pl.Int32), "plan": pl.List(pl.Float64)}


def path_id(pair_id: str, method: str, replicate: int) -> str:
    return f"{pair_id}-{method}-{replicate}"


def replicates(params: CoupleParams, method: str) -> int:
    return params.random_replicates if METHODS[method].stochastic else 1


def couple_pairs(pairs_path: Path, emb_dir: Path, params: CoupleParams, out: Path) -> pl.DataFrame:
    """Couple every pair with every method in ``params``; write the table to ``out``."""
    pairs = pl.read_parquet(pairs_path)
    index = load_index(emb_dir)
    rows = []
    for pid, a_text, b_text in tqdm(pairs.select("pair_id", "prompt_a", "prompt_b").iter_rows(),
                                    total=len(pairs), desc="couple", unit="pair"):
        a = embeddings.load(emb_dir, index[a_text]).embeds.double().numpy()
        b = embeddings.load(emb_dir, index[b_text]).embeds.double().numpy()
        for method in params.methods:
            for r in range(replicates(params, method)):
                seed = derive_seed(params.seed, pid, method, r)
                c = couple(a, b, method, seed=seed, sinkhorn_reg=params.sinkhorn_reg)
                rows.append(_row(pid, r, c))
    table = pl.DataFrame(rows, schema=SCHEMA)
    write_with(out, table.write_parquet)
    return table


def _row(pair_id: str, replicate: int, c: Coupling) -> dict[str, object]:
    return {"path_id": path_id(pair_id, c.method, replicate), "pair_id": pair_id,
            "method": c.method, "replicate": replicate, "path_kind": c.path, "cost": c.cost,
            "w2": c.w2, "permutation": None if c.permutation is None else c.permutation.tolist(),
            "plan": None if c.plan is None else c.plan.ravel().tolist()}


def coupling_from_row(row: dict[str, object]) -> Coupling:
    """Rebuild a ``Coupling`` from a row of the table."""
    perm = row["permutation"]
    plan = row["plan"]
    return Coupling(
        method=str(row["method"]), cost=float(row["cost"]),
        permutation=None if perm is None else np.asarray(perm, dtype=np.int64),
        plan=None if plan is None else np.asarray(plan).reshape(int(np.sqrt(len(plan))), -1),
        w2=row["w2"], path=row["path_kind"])
