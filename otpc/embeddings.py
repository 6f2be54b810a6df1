"""Prompt embeddings exactly as the diffusers pipeline feeds them to its denoiser.

Each distinct prompt is stored once, as ``<key>.safetensors`` named by the hash of its
text, so an embedding written by a crashed run is either complete or absent. A file's bytes
depend only on its content: the prompt, token count and truncation flag are one JSON string
under one metadata key (safetensors writes several keys in a random order).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from otpc.atomic import write_with
from otpc.errors import InputError
from otpc.families import Family, family_for
from otpc.models import LoadedModel
from otpc.quiet import quiet_libraries
from otpc.row_blocks import RowBlock


@dataclass(frozen=True)
class PromptEmbedding:
    """One prompt's embedding (n x d, float32), with how it was tokenised: ``token_digest``
    hashes the token ids the pipeline encodes (equal digests: equal embeddings); ``blocks``
    say which encoder each row comes from and which rows are tokens, not padding."""

    prompt: str
    embeds: torch.Tensor
    n_tokens: int
    truncated: bool
    token_digest: str
    blocks: tuple[RowBlock, ...]  # which encoder each row comes from, which rows are tokens
    pooled: torch.Tensor | None = None

    @property
    def key(self) -> str:
        return prompt_key(self.prompt)


def prompt_key(prompt: str) -> str:
    """A short stable name for a prompt's text."""
    return hashlib.sha256(prompt.encode("utf-8")).hexdigest()[:24]


def token_digest(family: Family, prompt: str) -> str:
    """A hash of the ids every tokenizer of the pipeline gives ``prompt``, padded and
    truncated as the pipeline pads and truncates it."""
    h = hashlib.sha256()
    for tokenizer, length in family.tokenizers():
        ids = tokenizer(prompt, padding="max_length", max_length=length, truncation=True).input_ids
        h.update(json.dumps(ids).encode())
    return h.hexdigest()[:16]


@torch.no_grad()
def encode(model: LoadedModel, prompts: list[str]) -> list[PromptEmbedding]:
    """Encode ``prompts`` as the model family's pipeline does (no CFG, one image)."""
    family = family_for(model.pipe)
    with quiet_libraries():  # the pipeline would print the text a long prompt loses
        cond = family.encode(prompts, model.resolved.device)
        counts = [family.token_count(prompt) for prompt in prompts]
    return [
        PromptEmbedding(
            prompt,
            cond.rows[i].float().cpu(),
            n,
            truncated,
            token_digest(family, prompt),
            tuple(family.row_blocks(prompt)),
            None if cond.pooled is None else cond.pooled[i].float().cpu(),
        )
        for i, (prompt, (n, truncated)) in enumerate(zip(prompts, counts, strict=True))
    ]


def save(folder: Path, emb: PromptEmbedding) -> Path:
    """Write one embedding atomically; returns its path."""
    path = folder / f"{emb.key}.safetensors"
    tensors = {"embeds": emb.embeds.contiguous()}
    if emb.pooled is not None:
        tensors["pooled"] = emb.pooled.contiguous()
    meta = {
        "otpc": json.dumps(
            {
                "prompt": emb.prompt,
                "n_tokens": emb.n_tokens,
                "truncated": emb.truncated,
                "token_digest": emb.token_digest,
                "blocks": [dataclasses.astuple(block) for block in emb.blocks],
            },
            sort_keys=True,
        )
    }
    write_with(path, lambda tmp: save_file(tensors, str(tmp), metadata=meta))
    return path


def load(folder: Path, key: str) -> PromptEmbedding:
    """Read one embedding; a missing or damaged file is an error naming it."""
    path = folder / f"{key}.safetensors"
    try:
        with safe_open(str(path), "pt") as fh:
            meta = json.loads((fh.metadata() or {})["otpc"])
            tensors = {name: fh.get_tensor(name) for name in fh.keys()}  # noqa: SIM118 - not iterable
        blocks = tuple(RowBlock(*block) for block in meta["blocks"])  # KeyError: an older otpc's
    except (FileNotFoundError, SafetensorError, OSError, KeyError, TypeError, ValueError) as err:
        raise InputError(
            f"{path}: missing or unreadable embedding ({err}); re-run `embed`"
        ) from err
    return PromptEmbedding(
        meta["prompt"],
        tensors["embeds"],
        int(meta["n_tokens"]),
        bool(meta["truncated"]),
        str(meta["token_digest"]),
        blocks,
        tensors.get("pooled"),
    )
