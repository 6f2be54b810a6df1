"""CLIP's BPE vocabulary, offline: the tokenizer files Stable Diffusion's pipelines use.

``open-clip-torch==3.3.0`` (MIT) ships ``open_clip/bpe_simple_vocab_16e6.txt.gz``, the
byte-for-byte copy of OpenAI's CLIP BPE file (its sha256 is pinned here). From it follow the
``vocab.json`` and ``merges.txt`` of ``transformers.CLIPTokenizer``: 256 byte symbols, the
same with ``</w>``, 48,894 merges and the two special tokens, 49,408 in all, in CLIP's order.
The package is located, never imported (it is installed without its dependencies).
"""

from __future__ import annotations

import gzip
import json
from pathlib import Path

from otpc.errors import InputError
from otpc.packaged import package_file, sha256

PACKAGE = "open_clip"  # open-clip-torch==3.3.0
BPE_FILE = "bpe_simple_vocab_16e6.txt.gz"
BPE_SHA256 = "924691ac288e54409236115652ad4aa250f48203de50a9e4722a6ecd48d6804a"
MERGES = 49152 - 256 - 2  # CLIP uses the first 48,894 merges
SPECIAL = ["<|startoftext|>", "<|endoftext|>"]


def byte_alphabet() -> list[str]:
    """CLIP's reversible byte-to-unicode alphabet: printable bytes as themselves, the others
    from U+0100 on, in byte order."""
    printable = (
        list(range(ord("!"), ord("~") + 1))
        + list(range(ord("¡"), ord("¬") + 1))
        + list(range(ord("®"), ord("ÿ") + 1))
    )
    extra = [b for b in range(256) if b not in printable]
    return [chr(c) for c in printable] + [chr(256 + i) for i in range(len(extra))]


def bpe_bytes() -> bytes:
    """The BPE file of the installed open-clip-torch, checked; ``InputError`` saying how to
    install it if it is missing or its sha256 is not CLIP's."""
    path = package_file(PACKAGE, BPE_FILE)
    if path is None:
        raise InputError(
            "CLIP's BPE vocabulary is not installed: pip install --no-deps "
            "open-clip-torch==3.3.0 (`make setup` does)"
        )
    return checked(path.read_bytes(), path)


def checked(data: bytes, source: Path) -> bytes:
    """``data`` if it is CLIP's BPE file (its sha256); ``InputError`` naming ``source`` if not."""
    digest = sha256(data)
    if digest != BPE_SHA256:
        raise InputError(
            f"{source}: sha256 {digest[:16]}... is not CLIP's BPE file "
            f"({BPE_SHA256[:16]}...); reinstall open-clip-torch==3.3.0"
        )
    return data


def write_tokenizer_files(folder: Path) -> None:
    """``vocab.json`` and ``merges.txt`` of CLIP's tokenizer into ``folder``."""
    lines = gzip.decompress(bpe_bytes()).decode("utf-8").split("\n")
    merges = [tuple(line.split()) for line in lines[1 : MERGES + 1]]
    alphabet = byte_alphabet()
    vocab = alphabet + [c + "</w>" for c in alphabet] + ["".join(m) for m in merges] + SPECIAL
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.json").write_text(
        json.dumps({tok: i for i, tok in enumerate(vocab)}), encoding="utf-8"
    )
    (folder / "merges.txt").write_text(
        "#version: 0.2\n" + "\n".join(" ".join(m) for m in merges) + "\n", encoding="utf-8"
    )
