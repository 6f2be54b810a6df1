"""Step 2: every distinct prompt -> its embedding (safetensors), plus an index table."""

from __future__ import annotations

from pathlib import Path

import polars as pl
from tqdm.auto import tqdm

from otpc import embeddings
from otpc.atomic import atomic_dir, write_with
from otpc.models import ModelSpec, load_pipeline

INDEX = "index.parquet"


def embed(pairs_path: Path, spec: ModelSpec, out: Path, batch_size: int = 32) -> pl.DataFrame:
    """Encode each prompt of the pairs table once; ``out`` is replaced whole on success."""
    pairs = pl.read_parquet(pairs_path)
    prompts = list(dict.fromkeys(pairs["prompt_a"].to_list() + pairs["prompt_b"].to_list()))
    pipe = load_pipeline(spec)
    rows = []
    with atomic_dir(out) as tmp:
        for i in tqdm(range(0, len(prompts), batch_size), desc="embed", unit="batch"):
            for emb in embeddings.encode(pipe, prompts[i:i + batch_size]):
                embeddings.save(tmp, emb)
                rows.append({"prompt": emb.prompt, "key": emb.key, "n_tokens": emb.n_tokens,
                             "truncated": emb.truncated})
        index = pl.DataFrame(rows)
        index = index.with_columns(pl.lit(pipe.otpc_resolved.fingerprint).alias("model"))
        write_with(tmp / INDEX, index.write_parquet)
    if index["truncated"].any():
        n = int(index["truncated"].sum())
        print(f"embed: {n} prompt(s) longer than the tokenizer's limit were truncated "
              "(see 'truncated' in the index)")
    return index


def load_index(folder: Path) -> dict[str, str]:
    """prompt -> embedding key."""
    index = pl.read_parquet(folder / INDEX)
    return dict(zip(index["prompt"].to_list(), index["key"].to_list()))
