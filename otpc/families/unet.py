"""Stable Diffusion 1.x, 2.x and XL: a U-Net cross-attending to CLIP rows.

SD 1.x/2.x: one CLIP text encoder, 77 rows. SDXL: two, their rows side by side (77 x 2048
for the real one), plus a pooled vector and size/crop ids; its empty prompt is all zeros
(``force_zeros_for_empty_prompt``) and its VAE is upcast from float16, as its pipeline does.
"""

from __future__ import annotations

from typing import Any

import torch

from otpc.families.base import Conditioning, Family
from otpc.row_blocks import RowBlock


class UNetFamily(Family):
    """SD 1.x / 2.x / XL pipelines (``StableDiffusionPipeline``, ``StableDiffusionXLPipeline``)."""

    name = "sd-unet"
    components = ("unet", "vae", "text_encoder", "tokenizer")
    denoiser_part = "unet"
    default_steps = 50
    default_guidance = 7.5  # StableDiffusionPipeline's (SDXL's is 5.0)

    def __init__(self, pipe: Any) -> None:
        super().__init__(pipe)
        self.is_xl = getattr(pipe, "text_encoder_2", None) is not None

    def default_size(self) -> tuple[int, int]:
        side = self.pipe.unet.config.sample_size * self.scale
        return side, side

    def tokenizers(self) -> list[tuple[Any, int]]:
        found = (getattr(self.pipe, name, None) for name in ("tokenizer", "tokenizer_2"))
        return [(tok, tok.model_max_length) for tok in found if tok is not None]

    def token_count(self, prompt: str) -> tuple[int, bool]:
        n = self._count(self.pipe.tokenizer, prompt)
        return n, n > self.pipe.tokenizer.model_max_length

    def row_blocks(self, prompt: str) -> list[RowBlock]:
        rows = self.pipe.tokenizer.model_max_length
        tokens = min(self._count(self.pipe.tokenizer, prompt), rows)
        return [RowBlock("clip-l+clip-g" if self.is_xl else "clip", 0, rows, tokens, True)]

    def encode(self, prompts: list[str], device: torch.device) -> Conditioning:
        if self.is_xl:
            rows, _, pooled, _ = self.pipe.encode_prompt(
                prompts, device=device, num_images_per_prompt=1, do_classifier_free_guidance=False
            )
            return Conditioning(rows, pooled)
        rows, _ = self.pipe.encode_prompt(prompts, device, 1, False)
        return Conditioning(rows)

    def unconditional(self, device: torch.device) -> Conditioning:
        empty = self.encode([""], device)
        if empty.pooled is not None and self.pipe.config.get("force_zeros_for_empty_prompt"):
            return Conditioning(torch.zeros_like(empty.rows), torch.zeros_like(empty.pooled))
        return empty

    def prepare(self) -> None:
        if self.is_xl and self.vae.dtype == torch.float16 and self.vae.config.force_upcast:
            self.vae.to(torch.float32)  # SDXL's VAE overflows in fp16; its pipeline upcasts too

    def noise_shape(self, height: int, width: int) -> tuple[int, ...]:
        return (self.pipe.unet.config.in_channels, height // self.scale, width // self.scale)

    def set_timesteps(
        self, scheduler: Any, steps: int, height: int, width: int, device: torch.device
    ) -> None:
        scheduler.set_timesteps(steps, device=device)

    def start(self, noise: torch.Tensor, scheduler: Any) -> torch.Tensor:
        return noise * scheduler.init_noise_sigma

    def _added_cond(self, cond: Conditioning, height: int, width: int) -> dict[str, Any] | None:
        """SDXL's extra conditioning: pooled text vector and size/crop ids."""
        if not self.is_xl:
            return None
        if cond.pooled is None:
            raise ValueError("an SDXL-shaped model needs a pooled vector for every frame")
        ids = torch.tensor(
            [height, width, 0, 0, height, width], device=cond.rows.device, dtype=cond.rows.dtype
        ).repeat(len(cond), 1)
        return {"text_embeds": cond.pooled, "time_ids": ids}

    def predict(
        self,
        scheduler: Any,
        latents: torch.Tensor,
        t: torch.Tensor,
        cond: Conditioning,
        guidance: float,
    ) -> torch.Tensor:
        x = scheduler.scale_model_input(latents, t)
        height, width = (side * self.scale for side in latents.shape[-2:])
        return self.denoiser(
            x,
            t,
            encoder_hidden_states=cond.rows,
            added_cond_kwargs=self._added_cond(cond, height, width),
            return_dict=False,
        )[0]
