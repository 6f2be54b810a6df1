"""The offline models: tiny Stable-Diffusion-shaped pipelines with deterministic random weights.

Three kinds, each saved as a standard diffusers folder and loaded with the same
``from_pretrained`` code that loads the real models:

- ``tiny``: SD-1.x-shaped (one CLIP text encoder, PNDM, epsilon prediction), 77 x 32.
- ``tiny-sd2``: SD-2-shaped: another width (77 x 48), GELU text encoder, pad token ``!``,
  linear-projection transformers, DDIM with v-prediction (as SD 2.1 768; 2.1 base is epsilon).
- ``tiny-sdxl``: SDXL-shaped: two text encoders (32 + 64 columns, the second with a 32-d
  projection that gives the pooled vector), a ``text_time`` U-Net and the Euler scheduler.

Their images carry no meaning: every result made with them says it comes from random weights.
The weights are drawn with NumPy's PCG64 and plain arithmetic, not torch's initialisers (whose
normal sampler rounds differently by instruction set), so a model is the same bytes on every
machine.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from otpc import clip_vocab
from otpc.atomic import temporary_prefix
from otpc.project import otpc_home
from otpc.quiet import quiet_libraries

TINY_VERSION = "1"
TINY_SEED = 20251117


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


def _portable_init(model: torch.nn.Module, seed: int) -> torch.nn.Module:
    """Overwrite every weight with U(-1/sqrt(fan_in), 1/sqrt(fan_in)) (torch's default bound
    for linear and convolution layers; embeddings get CLIP's standard deviation 0.02), drawn
    from PCG64 in name order; normalisation layers keep their ones and zeros. Identical
    bytes on any machine."""
    rng = np.random.default_rng(seed)
    norms = (torch.nn.LayerNorm, torch.nn.GroupNorm)
    with torch.no_grad():
        for _, module in sorted(model.named_modules(), key=lambda item: item[0]):
            if isinstance(module, norms):
                continue
            weight = getattr(module, "weight", None)
            fan_in = (
                int(np.prod(weight.shape[1:]))
                if isinstance(weight, torch.nn.Parameter) and weight.dim() > 1
                else None
            )
            for _, param in sorted(module.named_parameters(recurse=False)):
                bound = (
                    0.02 * np.sqrt(3.0)
                    if isinstance(module, torch.nn.Embedding)
                    else 1.0 / np.sqrt(fan_in or param.shape[-1])
                )
                values = (2.0 * rng.random(tuple(param.shape)) - 1.0) * bound
                param.copy_(torch.from_numpy(values))
    return model


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


def _vae(seed: int, **extra: Any):  # -> diffusers.AutoencoderKL
    """A 4x-downsampling KL autoencoder with 4 latent channels."""
    from diffusers import AutoencoderKL

    blocks = {
        "down_block_types": ("DownEncoderBlock2D",) * 3,
        "up_block_types": ("UpDecoderBlock2D",) * 3,
    }
    vae = AutoencoderKL(
        in_channels=3,
        out_channels=3,
        latent_channels=4,
        layers_per_block=1,
        block_out_channels=(32, 64, 64),
        sample_size=64,
        norm_num_groups=32,
        **blocks,
        **extra,
    )
    return _portable_init(vae, seed)


def _unet(seed: int, attention: tuple[str, str], **extra: Any):
    """A two-level U-Net on 16 x 16 x 4 latents (32 and 64 channels); ``attention`` says which
    levels cross-attend to the text ("CrossAttn") and which do not ("")."""
    from diffusers import UNet2DConditionModel

    down = tuple(f"{kind}DownBlock2D" for kind in attention)
    up = tuple(f"{kind}UpBlock2D" for kind in reversed(attention))
    unet = UNet2DConditionModel(
        sample_size=16,
        in_channels=4,
        out_channels=4,
        layers_per_block=1,
        block_out_channels=(32, 64),
        norm_num_groups=32,
        down_block_types=down,
        up_block_types=up,
        **extra,
    )
    return _portable_init(unet, seed)


# Stable Diffusion's noise schedule, shared by the three schedulers.
BETAS = {
    "beta_start": 0.00085,
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "num_train_timesteps": 1000,
}


def _save(folder: Path, pipeline: Any, parts: dict[str, Any]) -> None:
    """Save the diffusers ``pipeline`` class made of ``parts`` at ``folder``."""
    pipeline(**parts).save_pretrained(folder, safe_serialization=True)


# SD 2 and SDXL attention: heads per level, linear projections in and out of the blocks.
SD2_ATTENTION = {"attention_head_dim": (2, 4), "use_linear_projection": True}


def save_sd_folder(folder: Path, parts: dict[str, Any]) -> None:
    """Save an SD-1.x/2.x-shaped pipeline made of ``parts`` (no safety checker)."""
    from diffusers import StableDiffusionPipeline

    no_checker = {
        "safety_checker": None,
        "feature_extractor": None,
        "requires_safety_checker": False,
    }
    _save(folder, StableDiffusionPipeline, no_checker | parts)


def build_tiny_pipeline(folder: Path) -> None:
    """Create the tiny SD-1.x-shaped pipeline's diffusers folder at ``folder``."""
    from diffusers import PNDMScheduler
    from transformers import CLIPTextModel

    tokenizer = clip_tokenizer()
    save_sd_folder(
        folder,
        {
            "tokenizer": tokenizer,
            "text_encoder": _portable_init(
                CLIPTextModel(clip_text_config(tokenizer, 32)), TINY_SEED
            ),
            "unet": _unet(
                TINY_SEED + 1,
                ("CrossAttn", "CrossAttn"),
                cross_attention_dim=32,
                attention_head_dim=8,
            ),
            "vae": _vae(TINY_SEED + 2),
            "scheduler": PNDMScheduler(
                **BETAS, skip_prk_steps=True, steps_offset=1, set_alpha_to_one=False
            ),
        },
    )


def build_tiny_sd2_pipeline(folder: Path) -> None:
    """Create the tiny SD-2-shaped pipeline (77 x 48, v-prediction) at ``folder``."""
    from diffusers import DDIMScheduler
    from transformers import CLIPTextModel

    tokenizer = clip_tokenizer(pad_token="!")
    config = clip_text_config(tokenizer, 48, hidden_act="gelu")
    save_sd_folder(
        folder,
        {
            "tokenizer": tokenizer,
            "text_encoder": _portable_init(CLIPTextModel(config), TINY_SEED + 10),
            "unet": _unet(
                TINY_SEED + 11, ("CrossAttn", ""), cross_attention_dim=48, **SD2_ATTENTION
            ),
            "vae": _vae(TINY_SEED + 12),
            "scheduler": DDIMScheduler(
                **BETAS,
                clip_sample=False,
                set_alpha_to_one=False,
                steps_offset=1,
                prediction_type="v_prediction",
            ),
        },
    )


def build_tiny_sdxl_pipeline(folder: Path) -> None:
    """Create the tiny SDXL-shaped pipeline (77 x (32 + 64), pooled 32) at ``folder``."""
    from diffusers import EulerDiscreteScheduler, StableDiffusionXLPipeline
    from transformers import CLIPTextModel, CLIPTextModelWithProjection

    tokenizer, tokenizer_2 = clip_tokenizer(), clip_tokenizer(pad_token="!")
    config_2 = clip_text_config(tokenizer_2, 64, hidden_act="gelu", projection_dim=32)
    time_dim = 8  # six size/crop numbers, each embedded in 8 dims, plus the pooled 32
    _save(
        folder,
        StableDiffusionXLPipeline,
        {
            "tokenizer": tokenizer,
            "tokenizer_2": tokenizer_2,
            "text_encoder": _portable_init(
                CLIPTextModel(clip_text_config(tokenizer, 32)), TINY_SEED + 20
            ),
            "text_encoder_2": _portable_init(CLIPTextModelWithProjection(config_2), TINY_SEED + 21),
            "unet": _unet(
                TINY_SEED + 22,
                ("", "CrossAttn"),
                cross_attention_dim=96,
                **SD2_ATTENTION,
                addition_embed_type="text_time",
                addition_time_embed_dim=time_dim,
                projection_class_embeddings_input_dim=6 * time_dim + 32,
            ),
            "vae": _vae(TINY_SEED + 23, scaling_factor=0.13025, force_upcast=True),
            "scheduler": EulerDiscreteScheduler(
                **BETAS, steps_offset=1, timestep_spacing="leading", prediction_type="epsilon"
            ),
            "force_zeros_for_empty_prompt": True,
            "add_watermarker": False,
        },
    )


BUILDERS: dict[str, Callable[[Path], None]] = {
    "tiny": build_tiny_pipeline,
    "tiny-sd2": build_tiny_sd2_pipeline,
    "tiny-sdxl": build_tiny_sdxl_pipeline,
}


def _builder_hash() -> str:
    """A hash of the code that builds the models (this file and the tokenizer's): editing it
    gives a new folder, never a stale model."""
    h = hashlib.sha256(Path(__file__).read_bytes())
    h.update(Path(clip_vocab.__file__).read_bytes())
    return h.hexdigest()[:10]


def tiny_model_dir(root: Path | None = None, kind: str = "tiny") -> Path:
    """The ``kind`` tiny pipeline's folder, built once (atomically) under otpc's cache."""
    if kind not in BUILDERS:
        raise ValueError(f"unknown tiny model {kind!r}; choose one of {sorted(BUILDERS)}")
    base = root or otpc_home()
    folder = base / "models" / f"{kind}-v{TINY_VERSION}-{_builder_hash()}"
    if (folder / "OTPC_TINY.json").exists():
        return folder
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=temporary_prefix(folder), suffix=".tmp", dir=folder.parent))
    try:
        with quiet_libraries():
            BUILDERS[kind](tmp)
        (tmp / "OTPC_TINY.json").write_text(
            json.dumps(
                {
                    "kind": kind,
                    "version": TINY_VERSION,
                    "seed": TINY_SEED,
                    "weights": "random (untrained)",
                }
            )
        )
        try:
            os.replace(tmp, folder)
        except OSError:
            if not (folder / "OTPC_TINY.json").exists():  # not a concurrent builder's win
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return folder
