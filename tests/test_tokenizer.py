"""The tiny models tokenize as Stable Diffusion does: CLIP's real BPE vocabulary (from
open-clip-torch's packaged file), 77 tokens, the same truncation and padding."""

from __future__ import annotations

import gzip
from pathlib import Path

import pytest

from otpc import embeddings
from otpc.clip_vocab import bpe_bytes, checked
from otpc.errors import InputError
from otpc.models import ModelSpec, load_pipeline

BOS, EOS = 49406, 49407


def test_a_photo_of_a_cat(tiny) -> None:
    tokenizer = tiny.pipe.tokenizer
    assert len(tokenizer) == 49408 and tokenizer.model_max_length == 77
    assert tokenizer("a photo of a cat").input_ids == [BOS, 320, 1125, 539, 320, 2368, EOS]


def test_a_long_prompt_is_cut_where_sd_cuts_it(tiny) -> None:
    """Past 75 words the pipeline keeps BOS, the first 75 tokens and EOS; otpc records the
    full count and the truncation."""
    prompt = " ".join(["cat"] * 100)
    full = tiny.pipe.tokenizer(prompt).input_ids
    assert len(full) == 102
    kept = tiny.pipe.tokenizer(
        prompt, padding="max_length", max_length=77, truncation=True
    ).input_ids
    assert kept == full[:76] + [EOS]
    emb = embeddings.encode(tiny, [prompt])[0]
    assert (emb.n_tokens, emb.truncated) == (102, True)


@pytest.mark.parametrize("name, pad", [("tiny", EOS), ("tiny-sd2", 0)])
def test_padding_is_the_pipelines(name: str, pad: int) -> None:
    """SD 1.x pads with the end token, SD 2 (and SDXL's second encoder) with "!" (id 0)."""
    tokenizer = load_pipeline(ModelSpec(name)).pipe.tokenizer
    ids = tokenizer("a cat", padding="max_length", max_length=77).input_ids
    assert ids[:4] == [BOS, 320, 2368, EOS] and set(ids[4:]) == {pad}


def test_a_damaged_vocabulary_file_is_refused(tmp_path: Path) -> None:
    text = gzip.decompress(bpe_bytes())
    damaged = text.replace(b"\ni n\n", b"\ni m\n", 1)  # one merge changed
    assert damaged != text
    source = tmp_path / "bpe_simple_vocab_16e6.txt.gz"
    with pytest.raises(InputError, match=r"bpe_simple_vocab_16e6\.txt\.gz: .* is not CLIP's"):
        checked(gzip.compress(damaged), source)
