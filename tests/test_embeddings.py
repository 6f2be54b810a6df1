"""Embedding files: their bytes depend only on their content; damage is an error naming them."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from otpc import embeddings
from otpc.errors import InputError

SAVE = (
    "import sys, torch; from pathlib import Path; from otpc import embeddings; "
    "from otpc.row_blocks import RowBlock; "
    "e = embeddings.PromptEmbedding('a cat', torch.arange(12.).reshape(3, 4), 5, False, "
    "'0123abcd', (RowBlock('clip', 0, 2, 2, True), RowBlock('t5', 2, 1, 1, False)), "
    "torch.ones(2)); print(embeddings.save(Path(sys.argv[1]), e))"
)


def test_the_same_embedding_is_the_same_bytes_in_any_process(tmp_path: Path) -> None:
    """safetensors writes several metadata keys in a random order; otpc writes one."""
    files = [
        Path(
            subprocess.run(
                [sys.executable, "-c", SAVE, str(tmp_path / str(seed))],
                capture_output=True,
                text=True,
                check=True,
                env=dict(os.environ, PYTHONHASHSEED=str(seed)),
            ).stdout.strip()
        )
        for seed in range(4)
    ]
    assert len({f.read_bytes() for f in files}) == 1
    back = embeddings.load(files[0].parent, files[0].stem)
    assert (back.prompt, back.n_tokens, back.truncated) == ("a cat", 5, False)
    assert back.token_digest == "0123abcd"
    assert [b.encoder for b in back.blocks] == ["clip", "t5"] and back.blocks[1].start == 2
    assert back.embeds.shape == (3, 4) and back.pooled.tolist() == [1.0, 1.0]


def test_prompts_that_tokenize_identically_share_a_digest_and_an_embedding(tiny) -> None:
    """CLIP's tokenizer lower-cases and splits on spaces: these two prompts are one."""
    same, twin, other = embeddings.encode(
        tiny, ["A bowl of ripe peaches.", "a bowl of  RIPE peaches.", "A bowl of ripe pears."]
    )
    assert same.token_digest == twin.token_digest != other.token_digest
    assert same.embeds.equal(twin.embeds) and not same.embeds.equal(other.embeds)


def test_damaged_embedding_names_the_file(tmp_path: Path) -> None:
    path = Path(
        subprocess.run(
            [sys.executable, "-c", SAVE, str(tmp_path)], capture_output=True, text=True, check=True
        ).stdout.strip()
    )
    path.write_bytes(path.read_bytes()[:40])
    with pytest.raises(InputError, match=f"{path.name}.*re-run `embed`"):
        embeddings.load(tmp_path, path.stem)
