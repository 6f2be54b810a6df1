"""FLUX.1: a joint-attention transformer (MMDiT) over T5 rows, with CLIP's pooled vector.

The rows are T5's (512 x 4096 for FLUX.1; the tokenizer's length, at most 512), their
``txt_ids`` all zero, so rotary position embedding gives every text row the same position and
the transformer sees them as a set. FLUX.1-dev is guidance-distilled: the guidance scale is
an input of the transformer (``guidance_embeds``), with one pass per step; FLUX.1-schnell
has none and ignores it. Latents are 16 channels (the VAE's), packed 2 x 2 into tokens for
the transformer; the flow-matching scheduler's shift grows with the image's token count.

The loop keeps the latents unpacked and packs them around each transformer call: the Euler
step is elementwise, so its values are the pipeline's.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from otpc.families.base import Conditioning, Family
from otpc.row_blocks import RowBlock

MAX_ROWS = 512  # FluxPipeline's limit on max_sequence_length
DEFAULT_SAMPLE_SIZE = 128  # FluxPipeline's default latent size (1024 px with its VAE)


def pack(latents: torch.Tensor) -> torch.Tensor:
    """(B, C, h, w) latents to (B, h/2 * w/2, 4C) tokens, as FluxPipeline packs them."""
    b, c, h, w = latents.shape
    tokens = latents.view(b, c, h // 2, 2, w // 2, 2).permute(0, 2, 4, 1, 3, 5)
    return tokens.reshape(b, (h // 2) * (w // 2), c * 4)


def unpack(tokens: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """The inverse of ``pack`` for latents of height ``h`` and width ``w``."""
    b, _, channels = tokens.shape
    latents = tokens.view(b, h // 2, w // 2, channels // 4, 2, 2).permute(0, 3, 1, 4, 2, 5)
    return latents.reshape(b, channels // 4, h, w)


def image_ids(h: int, w: int, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """Each packed token's (0, row, column) position, for rotary embedding."""
    ids = torch.zeros(h // 2, w // 2, 3)
    ids[..., 1] += torch.arange(h // 2)[:, None]
    ids[..., 2] += torch.arange(w // 2)[None, :]
    return ids.reshape(-1, 3).to(device=device, dtype=dtype)


class FluxFamily(Family):
    """FLUX.1 dev / schnell pipelines (``FluxPipeline``)."""

    name = "flux"
    components = ("transformer", "vae", "text_encoder", "text_encoder_2", "tokenizer_2")
    denoiser_part = "transformer"
    denoiser_class = "Flux"
    default_steps = 28
    default_guidance = 3.5

    def __init__(self, pipe: Any) -> None:
        super().__init__(pipe)
        self.rows = min(MAX_ROWS, pipe.tokenizer_2.model_max_length)

    @classmethod
    def size_multiple_of(cls, vae: dict[str, Any], denoiser: dict[str, Any]) -> int:
        return super().size_multiple_of(vae, denoiser) * 2  # latents are packed 2 x 2

    def default_size(self) -> tuple[int, int]:
        side = DEFAULT_SAMPLE_SIZE * self.scale
        return side, side

    def tokenizers(self) -> list[tuple[Any, int]]:
        return [
            (self.pipe.tokenizer, self.pipe.tokenizer_max_length),
            (self.pipe.tokenizer_2, self.rows),
        ]

    def token_count(self, prompt: str) -> tuple[int, bool]:
        n = self._count(self.pipe.tokenizer_2, prompt)
        return n, n > self.rows

    def row_blocks(self, prompt: str) -> list[RowBlock]:
        return [
            RowBlock(
                "t5",
                0,
                self.rows,
                min(self._count(self.pipe.tokenizer_2, prompt), self.rows),
                False,
            )
        ]

    def encode(self, prompts: list[str], device: torch.device) -> Conditioning:
        rows, pooled, _ = self.pipe.encode_prompt(
            prompt=prompts,
            prompt_2=None,
            device=device,
            num_images_per_prompt=1,
            max_sequence_length=self.rows,
        )
        return Conditioning(rows, pooled)

    def unconditional(self, device: torch.device) -> Conditioning:
        """The empty prompt's encoding (true CFG's default negative)."""
        return self.encode([""], device)

    def uses_cfg(self, guidance: float) -> bool:
        return False  # dev: guidance is an input of the transformer; schnell: none

    def noise_shape(self, height: int, width: int) -> tuple[int, ...]:
        h = 2 * (height // (self.scale * 2))
        w = 2 * (width // (self.scale * 2))
        return (self.pipe.transformer.config.in_channels // 4, h, w)

    def set_timesteps(
        self, scheduler: Any, steps: int, height: int, width: int, device: torch.device
    ) -> None:
        from diffusers.pipelines.flux.pipeline_flux import calculate_shift

        config = scheduler.config
        sigmas = None if config.get("use_flow_sigmas") else np.linspace(1.0, 1 / steps, steps)
        _, h, w = self.noise_shape(height, width)
        mu = calculate_shift(
            (h // 2) * (w // 2),
            config.get("base_image_seq_len", 256),
            config.get("max_image_seq_len", 4096),
            config.get("base_shift", 0.5),
            config.get("max_shift", 1.15),
        )
        if sigmas is None:
            scheduler.set_timesteps(steps, device=device, mu=mu)
        else:
            scheduler.set_timesteps(sigmas=sigmas, device=device, mu=mu)
        scheduler.set_begin_index(0)

    def predict(
        self,
        scheduler: Any,
        latents: torch.Tensor,
        t: torch.Tensor,
        cond: Conditioning,
        guidance: float,
    ) -> torch.Tensor:
        batch, _, h, w = latents.shape
        rows = cond.rows
        embed_guidance = None
        if self.pipe.transformer.config.guidance_embeds:
            embed_guidance = torch.full([1], guidance, device=rows.device, dtype=torch.float32)
            embed_guidance = embed_guidance.expand(batch)
        text_ids = torch.zeros(rows.shape[1], 3).to(device=rows.device, dtype=rows.dtype)
        out = self.denoiser(
            hidden_states=pack(latents),
            timestep=t.expand(batch).to(latents.dtype) / 1000,
            guidance=embed_guidance,
            pooled_projections=cond.pooled,
            encoder_hidden_states=rows,
            txt_ids=text_ids,
            img_ids=image_ids(h, w, rows.device, rows.dtype),
            joint_attention_kwargs={},
            return_dict=False,
        )[0]
        return unpack(out, h, w)
