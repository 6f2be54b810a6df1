"""Standard pipeline parts otpc's offline models share (the tiny ones and the trained toy
model): CLIP's tokenizer with its real vocabulary, a CLIP text encoder's configuration,
Stable Diffusion's noise schedule, and saving a pipeline as a diffusers folder.

The toy model's record hashes this file (``otpc.toy.train.code_version``): what is here
decides its weights.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

from otpc import clip_vocab


def clip_tokenizer(pad_token: str = "<|endoftext|>"):  # -> transformers.CLIPTokenizer
    """CLIP's tokenizer (its real BPE vocabulary, 49,408 tokens), 77 tokens long, padding
    with ``pad_token`` (SD 2 and SDXL's second encoder pad with "!")."""
    from transformers import CLIPTokenizer

    with tempfile.TemporaryDirectory() as vocab_dir:
        clip_vocab.write_tokenizer_files(Path(vocab_dir))
        return CLIPTokenizer(
            os.path.join(vocab_dir, "vocab.json"),
            os.path.join(vocab_dir, "merges.txt"),
            pad_token=pad_token,
            model_max_length=77,
        )


def clip_text_config(tokenizer, hidden: int, layers: int = 2, heads: int = 4, **extra: Any):
    """A CLIP text encoder's configuration for ``tokenizer`` (77 positions, ``hidden`` wide,
    its MLP twice as wide unless ``intermediate_size`` is given)."""
    from transformers import CLIPTextConfig

    extra.setdefault("intermediate_size", 2 * hidden)
    ids = {
        f"{name}_token_id": getattr(tokenizer, f"{name}_token_id") for name in ("bos", "eos", "pad")
    }
    return CLIPTextConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        max_position_embeddings=77,
        **ids,
        **extra,
    )


# Stable Diffusion's noise schedule, shared by the SD-shaped models' schedulers.
BETAS = {
    "beta_start": 0.00085,
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "num_train_timesteps": 1000,
}


def save_pipeline(folder: Path, pipeline: Any, parts: dict[str, Any]) -> None:
    """Save the diffusers ``pipeline`` class made of ``parts`` at ``folder``."""
    pipeline(**parts).save_pretrained(folder, safe_serialization=True)


def save_sd_folder(folder: Path, parts: dict[str, Any]) -> None:
    """Save an SD-1.x/2.x-shaped pipeline made of ``parts`` (no safety checker)."""
    from diffusers import StableDiffusionPipeline

    no_checker = {
        "safety_checker": None,
        "feature_extractor": None,
        "requires_safety_checker": False,
    }
    save_pipeline(folder, StableDiffusionPipeline, no_checker | parts)
