"""A T5-style tokenizer made offline, for the tiny SD3- and FLUX-shaped models.

T5's real SentencePiece model cannot be had without the hub, so the tiny models' T5 tokenizer
is built here, deterministically, in the same format: a SentencePiece Unigram model with
``▁`` word boundaries, ``<pad>`` = 0, ``</s>`` = 1 appended to every text, ``<unk>`` = 2,
saved as ``tokenizer.json`` and loaded by ``T5TokenizerFast.from_pretrained`` like the real
one. Its pieces are the single printable characters and the most frequent whole words and
word pieces of CLIP's BPE vocabulary (``otpc.clip_vocab``), so every text tokenizes, common
words as one token.
"""

from __future__ import annotations

import gzip
import string

from otpc.clip_vocab import MERGES, bpe_bytes

WORDS = 6000  # whole words, in CLIP's merge order (frequent first)
PIECES = 2000  # word-internal pieces
SPECIAL = ["<pad>", "</s>", "<unk>"]


def pieces() -> list[tuple[str, float]]:
    """The Unigram model's (piece, log-probability score), special tokens first.

    Scores make whole words win over their letters: a word scores -10 (minus its rank in
    1e-4 steps), a piece -12, a single character -20, so the best segmentation of a known
    word is the word itself."""
    merges = gzip.decompress(bpe_bytes()).decode("utf-8").split("\n")[1 : MERGES + 1]
    words: list[str] = []
    inner: list[str] = []
    for line in merges:
        token = "".join(line.split())
        text = token.removesuffix("</w>")
        if not (text.isascii() and text.isalpha() and len(text) > 1):
            continue
        if token.endswith("</w>") and len(words) < WORDS:
            words.append(text)
        elif not token.endswith("</w>") and len(inner) < PIECES:
            inner.append(text)
    chars = [c for c in string.printable if not c.isspace()]
    scored = [(p, 0.0) for p in SPECIAL] + [("▁", -5.0)]
    scored += [(c, -20.0) for c in chars] + [("▁" + c, -19.0) for c in chars]
    scored += [("▁" + w, -10.0 - i * 1e-4) for i, w in enumerate(words)]
    known = {p for p, _ in scored}
    scored += [(p, -12.0 - i * 1e-4) for i, p in enumerate(inner) if p not in known]
    return scored


def t5_tokenizer(max_length: int):  # -> transformers.T5TokenizerFast
    """The T5-style tokenizer, padding and truncating to ``max_length`` tokens."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors
    from transformers import T5TokenizerFast

    tok = Tokenizer(models.Unigram(pieces(), unk_id=SPECIAL.index("<unk>")))
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always")
    tok.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="always")
    eos = ("</s>", SPECIAL.index("</s>"))
    tok.post_processor = processors.TemplateProcessing(
        single="$A </s>", pair="$A </s> $B </s>", special_tokens=[eos]
    )
    return T5TokenizerFast(
        tokenizer_object=tok,
        eos_token="</s>",
        unk_token="<unk>",
        pad_token="<pad>",
        extra_ids=0,
        model_max_length=max_length,
    )
