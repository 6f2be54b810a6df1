"""The offline models: tiny diffusers pipelines with deterministic random weights.

Five kinds, each saved as a standard diffusers folder and loaded with the same
``from_pretrained`` code that loads the real models:

- ``tiny``: SD-1.x-shaped (one CLIP text encoder, PNDM, epsilon prediction), 77 x 32.
- ``tiny-sd2``: SD-2-shaped: another width (77 x 48), GELU text encoder, pad token ``!``,
  linear-projection transformers, DDIM with v-prediction (as SD 2.1 768; 2.1 base is epsilon).
- ``tiny-sdxl``: SDXL-shaped: two text encoders (32 + 64 columns, the second with a 32-d
  projection that gives the pooled vector), a ``text_time`` U-Net and the Euler scheduler.
- ``tiny-sd3``: SD3-shaped: 77 CLIP rows (two encoders side by side, zero-padded to T5's
  width) then 32 T5 rows, a pooled vector of both CLIPs, an ``SD3Transformer2DModel``.
- ``tiny-flux``: FLUX.1-dev-shaped: T5 rows (32 x 32, from ``otpc.t5_vocab``'s tokenizer),
  CLIP's pooled vector, a ``FluxTransformer2DModel`` with guidance embedding, the
  flow-matching Euler scheduler with dynamic shift.

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

from otpc import clip_vocab, sd_parts, t5_vocab
from otpc.atomic import temporary_prefix
from otpc.project import otpc_home
from otpc.quiet import quiet_libraries
from otpc.sd_parts import (
    BETAS,
    clip_text_config,
    clip_tokenizer,
    save_pipeline,
    save_sd_folder,
)
from otpc.t5_vocab import t5_tokenizer

TINY_VERSION = "1"
TINY_SEED = 20251117


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


# SD 2 and SDXL attention: heads per level, linear projections in and out of the blocks.
SD2_ATTENTION = {"attention_head_dim": (2, 4), "use_linear_projection": True}


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
    save_pipeline(
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


TINY_T5_ROWS = 32  # the tiny T5 tokenizer's length: the rows of tiny-flux (FLUX.1: 512)


def t5_config(tokenizer, width: int, layers: int = 2, heads: int = 4, **extra: Any):
    """A T5 v1.1 encoder's configuration (gated GELU, relative positions) for ``tokenizer``,
    ``width`` wide, its MLP twice as wide unless ``d_ff`` is given."""
    from transformers import T5Config

    extra.setdefault("d_ff", 2 * width)
    return T5Config(
        vocab_size=len(tokenizer),
        d_model=width,
        d_kv=width // heads,
        num_layers=layers,
        num_heads=heads,
        relative_attention_num_buckets=8,
        feed_forward_proj="gated-gelu",
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
        decoder_start_token_id=tokenizer.pad_token_id,
        **extra,
    )


def _tiny_t5(tokenizer, width: int, seed: int):  # -> transformers.T5EncoderModel
    """A tiny T5 encoder, 2 layers, ``width`` wide, portable random weights."""
    from transformers import T5EncoderModel

    return _portable_init(T5EncoderModel(t5_config(tokenizer, width)), seed)


def _flow_vae(seed: int, scaling_factor: float, shift_factor: float):
    """The 4x autoencoder as SD3's and FLUX's VAEs are set up: no quantisation convolutions,
    latents scaled and shifted."""
    return _vae(
        seed,
        scaling_factor=scaling_factor,
        shift_factor=shift_factor,
        use_quant_conv=False,
        use_post_quant_conv=False,
    )


def build_tiny_flux_pipeline(folder: Path) -> None:
    """Create the tiny FLUX.1-dev-shaped pipeline at ``folder``: T5 rows (32 x 32), CLIP's
    pooled 32 vector, a guidance-distilled MMDiT, 16-channel VAE latents packed 2 x 2."""
    from diffusers import FlowMatchEulerDiscreteScheduler, FluxPipeline, FluxTransformer2DModel
    from transformers import CLIPTextModel

    tokenizer = clip_tokenizer()
    tokenizer_2 = t5_tokenizer(TINY_T5_ROWS)
    transformer = FluxTransformer2DModel(
        patch_size=1,
        in_channels=16,  # 4 latent channels, packed 2 x 2
        num_layers=1,
        num_single_layers=1,
        attention_head_dim=16,
        num_attention_heads=2,
        joint_attention_dim=32,
        pooled_projection_dim=32,
        guidance_embeds=True,
        axes_dims_rope=(4, 6, 6),
    )
    save_pipeline(
        folder,
        FluxPipeline,
        {
            "tokenizer": tokenizer,
            "text_encoder": _portable_init(
                CLIPTextModel(clip_text_config(tokenizer, 32)), TINY_SEED + 30
            ),
            "tokenizer_2": tokenizer_2,
            "text_encoder_2": _tiny_t5(tokenizer_2, 32, TINY_SEED + 31),
            "transformer": _portable_init(transformer, TINY_SEED + 32),
            "vae": _flow_vae(TINY_SEED + 33, scaling_factor=0.3611, shift_factor=0.1159),
            "scheduler": FlowMatchEulerDiscreteScheduler(  # FLUX.1-dev's
                shift=3.0,
                use_dynamic_shifting=True,
                base_shift=0.5,
                max_shift=1.15,
                base_image_seq_len=256,
                max_image_seq_len=4096,
            ),
        },
    )


def build_tiny_sd3_pipeline(folder: Path) -> None:
    """Create the tiny SD3-shaped pipeline at ``folder``: 77 CLIP rows (32 + 32 wide, padded
    to 64) then 32 T5 rows (64 wide), a pooled 64 vector, an MMDiT on 2 x 2 patches."""
    from diffusers import (
        FlowMatchEulerDiscreteScheduler,
        SD3Transformer2DModel,
        StableDiffusion3Pipeline,
    )
    from transformers import CLIPTextModelWithProjection

    tokenizer, tokenizer_2 = clip_tokenizer(), clip_tokenizer(pad_token="!")
    tokenizer_3 = t5_tokenizer(TINY_T5_ROWS)
    clip_l = clip_text_config(tokenizer, 32, projection_dim=32)
    clip_g = clip_text_config(tokenizer_2, 32, hidden_act="gelu", projection_dim=32)
    transformer = SD3Transformer2DModel(
        sample_size=8,  # latents of the default 32 px image
        patch_size=2,
        in_channels=4,
        out_channels=4,
        num_layers=1,
        attention_head_dim=8,
        num_attention_heads=4,
        joint_attention_dim=64,
        caption_projection_dim=32,
        pooled_projection_dim=64,
        pos_embed_max_size=8,
    )
    save_pipeline(
        folder,
        StableDiffusion3Pipeline,
        {
            "tokenizer": tokenizer,
            "text_encoder": _portable_init(CLIPTextModelWithProjection(clip_l), TINY_SEED + 40),
            "tokenizer_2": tokenizer_2,
            "text_encoder_2": _portable_init(CLIPTextModelWithProjection(clip_g), TINY_SEED + 41),
            "tokenizer_3": tokenizer_3,
            "text_encoder_3": _tiny_t5(tokenizer_3, 64, TINY_SEED + 42),
            "transformer": _portable_init(transformer, TINY_SEED + 43),
            "vae": _flow_vae(TINY_SEED + 44, scaling_factor=1.5305, shift_factor=0.0609),
            "scheduler": FlowMatchEulerDiscreteScheduler(shift=3.0),  # SD3's
        },
    )


BUILDERS: dict[str, Callable[[Path], None]] = {
    "tiny": build_tiny_pipeline,
    "tiny-sd2": build_tiny_sd2_pipeline,
    "tiny-sdxl": build_tiny_sdxl_pipeline,
    "tiny-sd3": build_tiny_sd3_pipeline,
    "tiny-flux": build_tiny_flux_pipeline,
}


def _builder_hash() -> str:
    """A hash of the code that builds the models (this file and the tokenizers'): editing it
    gives a new folder, never a stale model."""
    h = hashlib.sha256(Path(__file__).read_bytes())
    for module in (clip_vocab, sd_parts, t5_vocab):
        h.update(Path(str(module.__file__)).read_bytes())
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
