"""Prompt embeddings exactly as the diffusers pipeline feeds them to the U-Net.

Each distinct prompt is stored once, as ``<key>.safetensors`` named by the hash of its
text, so an embedding written by a crashed run is either complete or absent. A file's bytes
depend only on its content: the prompt, token count and truncation flag are one JSON string
under one metadata key (safetensors writes several keys in a random order).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from otpc.atomic import write_with
from otpc.errors import InputError
from otpc.models import LoadedModel
from otpc.quiet import quiet_libraries


@dataclass(frozen=True)
class PromptEmbedding:
    """One prompt's embedding (n x d, float32), with how it was tokenised: ``token_digest``
    hashes the token ids the pipeline encodes (equal digests: equal embeddings)."""

    prompt: str
    embeds: torch.Tensor
    n_tokens: int
    truncated: bool
    token_digest: str
    pooled: torch.Tensor | None = None

    @property
    def key(self) -> str:
        return prompt_key(self.prompt)


def prompt_key(prompt: str) -> str:
    """A short stable name for a prompt's text."""
    return hashlib.sha256(prompt.encode("utf-8")).hexdigest()[:24]


def token_count(pipe: Any, prompt: str) -> tuple[int, bool]:
    """Tokens of ``prompt`` (with start/end tokens) and whether the pipeline truncates it."""
    ids = pipe.tokenizer(prompt, truncation=False).input_ids
    return len(ids), len(ids) > pipe.tokenizer.model_max_length


def token_digest(pipe: Any, prompt: str) -> str:
    """A hash of the ids every tokenizer of the pipeline gives ``prompt``, padded and
    truncated as the pipeline pads and truncates it."""
    h = hashlib.sha256()
    for tokenizer in (getattr(pipe, "tokenizer", None), getattr(pipe, "tokenizer_2", None)):
        if tokenizer is not None:
            ids = tokenizer(
                prompt,
                padding="max_length",
                max_length=tokenizer.model_max_length,
                truncation=True,
            ).input_ids
            h.update(json.dumps(ids).encode())
    return h.hexdigest()[:16]


@torch.no_grad()
def encode(model: LoadedModel, prompts: list[str]) -> list[PromptEmbedding]:
    """Encode ``prompts`` with the pipeline's own ``encode_prompt`` (no CFG, one image)."""
    with quiet_libraries():  # the pipeline would print the text a long prompt loses
        embeds, pooled = encode_batch(model.pipe, prompts, model.resolved.device)
        counts = [token_count(model.pipe, prompt) for prompt in prompts]
    return [
        PromptEmbedding(
            prompt,
            embeds[i].float().cpu(),
            n,
            truncated,
            token_digest(model.pipe, prompt),
            None if pooled is None else pooled[i].float().cpu(),
        )
        for i, (prompt, (n, truncated)) in enumerate(zip(prompts, counts, strict=True))
    ]


def encode_batch(
    pipe: Any, prompts: list[str], device: torch.device
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(prompt_embeds, pooled or None) for a list of prompts, via ``pipe.encode_prompt``."""
    if hasattr(pipe, "text_encoder_2"):  # SDXL: two encoders, plus a pooled vector
        embeds, _, pooled, _ = pipe.encode_prompt(
            prompts, device=device, num_images_per_prompt=1, do_classifier_free_guidance=False
        )
        return embeds, pooled
    embeds, _ = pipe.encode_prompt(prompts, device, 1, False)
    return embeds, None


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
    except (FileNotFoundError, SafetensorError, OSError, KeyError, ValueError) as err:
        raise InputError(
            f"{path}: missing or unreadable embedding ({err}); re-run `embed`"
        ) from err
    return PromptEmbedding(
        meta["prompt"],
        tensors["embeds"],
        int(meta["n_tokens"]),
        bool(meta["truncated"]),
        str(meta["token_digest"]),
        tensors.get("pooled"),
    )
