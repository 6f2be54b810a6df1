"""Step 2: every distinct prompt -> its embedding (safetensors), plus an index table."""

from __future__ import annotations

from pathlib import Path

import polars as pl
from tqdm.auto import tqdm

from otpc import embeddings
from otpc.atomic import atomic_dir
from otpc.models import ModelSpec, load_pipeline
from otpc.row_blocks import label
from otpc.study.layout import INDEX
from otpc.tables import EMBEDDINGS, PAIRS


def embed(pairs_path: Path, spec: ModelSpec, out: Path, batch_size: int = 32) -> pl.DataFrame:
    """Encode each prompt of the pairs table once; ``out`` is replaced whole on success.

    Returns the index (``otpc.tables.EMBEDDINGS``).
    """
    pairs = PAIRS.read(pairs_path)
    prompts = list(dict.fromkeys(pairs["prompt_a"].to_list() + pairs["prompt_b"].to_list()))
    model = load_pipeline(spec)
    rows = []
    with atomic_dir(out) as tmp:
        for i in tqdm(range(0, len(prompts), batch_size), desc="embed", unit="batch"):
            for emb in embeddings.encode(model, prompts[i : i + batch_size]):
                embeddings.save(tmp, emb)
                rows.append(
                    {
                        "prompt": emb.prompt,
                        "key": emb.key,
                        "n_tokens": emb.n_tokens,
                        "truncated": emb.truncated,
                        "encoders": label(emb.blocks),
                        "model": model.resolved.fingerprint,
                    }
                )
        index = EMBEDDINGS.write(EMBEDDINGS.frame(rows), tmp / INDEX)
    return index


def load_index(folder: Path) -> dict[str, str]:
    """prompt -> embedding key."""
    index = EMBEDDINGS.read(folder / INDEX)
    return dict(zip(index["prompt"].to_list(), index["key"].to_list(), strict=True))
