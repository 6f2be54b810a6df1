"""Stable Diffusion 3 / 3.5: a joint-attention transformer (MMDiT) over CLIP and T5 rows.

Its rows are CLIP-L's and CLIP-G's penultimate layers side by side (77 x 2048), zero-padded
to T5's width (4096), followed along the sequence by T5's rows (256 by default; zeros if the
pipeline was loaded without T5), plus a pooled 2048 vector (both CLIPs' projections). The
transformer's text stream has no position embedding, so it sees the rows as a set.
Classifier-free guidance against the empty prompt's encoding, as the pipeline's default;
16-channel latents, not packed; a flow-matching scheduler.
"""

from __future__ import annotations

from typing import Any

import torch

from otpc.families.base import Conditioning, Family
from otpc.row_blocks import RowBlock

T5_ROWS = 256  # StableDiffusion3Pipeline's default max_sequence_length


class SD3Family(Family):
    """SD3 / SD3.5 pipelines (``StableDiffusion3Pipeline``)."""

    name = "sd3"
    components = ("transformer", "vae", "text_encoder", "text_encoder_2", "tokenizer_3")
    denoiser_part = "transformer"
    denoiser_class = "SD3"
    default_steps = 28
    default_guidance = 7.0

    def __init__(self, pipe: Any) -> None:
        super().__init__(pipe)
        self.t5_rows = min(T5_ROWS, pipe.tokenizer_3.model_max_length)

    @classmethod
    def size_multiple_of(cls, vae: dict[str, Any], denoiser: dict[str, Any]) -> int:
        return super().size_multiple_of(vae, denoiser) * int(denoiser.get("patch_size", 2))

    def default_size(self) -> tuple[int, int]:
        side = self.pipe.default_sample_size * self.scale
        return side, side

    def tokenizers(self) -> list[tuple[Any, int]]:
        clip = self.pipe.tokenizer_max_length
        return [
            (self.pipe.tokenizer, clip),
            (self.pipe.tokenizer_2, clip),
            (self.pipe.tokenizer_3, self.t5_rows),
        ]

    def token_count(self, prompt: str) -> tuple[int, bool]:
        clip = self._count(self.pipe.tokenizer, prompt)
        t5 = self._count(self.pipe.tokenizer_3, prompt)
        return clip, clip > self.pipe.tokenizer_max_length or t5 > self.t5_rows

    def row_blocks(self, prompt: str) -> list[RowBlock]:
        clip_rows = self.pipe.tokenizer_max_length
        clip = min(self._count(self.pipe.tokenizer, prompt), clip_rows)
        # without T5 (text_encoder_3=None) the pipeline fills its rows with zeros
        t5 = min(self._count(self.pipe.tokenizer_3, prompt), self.t5_rows)
        t5 = t5 if self.pipe.text_encoder_3 is not None else 0
        return [
            RowBlock("clip-l+clip-g", 0, clip_rows, clip, True),
            RowBlock("t5", clip_rows, self.t5_rows, t5, False),
        ]

    def encode(self, prompts: list[str], device: torch.device) -> Conditioning:
        rows, _, pooled, _ = self.pipe.encode_prompt(
            prompt=prompts,
            prompt_2=None,
            prompt_3=None,
            device=device,
            num_images_per_prompt=1,
            do_classifier_free_guidance=False,
            max_sequence_length=self.t5_rows,
        )
        return Conditioning(rows, pooled)

    def unconditional(self, device: torch.device) -> Conditioning:
        return self.encode([""], device)  # the pipeline's default negative prompt

    def noise_shape(self, height: int, width: int) -> tuple[int, ...]:
        channels = self.pipe.transformer.config.in_channels
        return (channels, height // self.scale, width // self.scale)

    def set_timesteps(
        self, scheduler: Any, steps: int, height: int, width: int, device: torch.device
    ) -> None:
        from diffusers.pipelines.stable_diffusion_3.pipeline_stable_diffusion_3 import (
            calculate_shift,
        )

        config = scheduler.config
        shift = {}
        if config.get("use_dynamic_shifting"):
            _, h, w = self.noise_shape(height, width)
            patch = self.pipe.transformer.config.patch_size
            shift["mu"] = calculate_shift(
                (h // patch) * (w // patch),
                config.get("base_image_seq_len", 256),
                config.get("max_image_seq_len", 4096),
                config.get("base_shift", 0.5),
                config.get("max_shift", 1.16),
            )
        scheduler.set_timesteps(steps, device=device, **shift)

    def predict(
        self,
        scheduler: Any,
        latents: torch.Tensor,
        t: torch.Tensor,
        cond: Conditioning,
        guidance: float,
    ) -> torch.Tensor:
        return self.denoiser(
            hidden_states=latents,
            timestep=t.expand(latents.shape[0]),
            encoder_hidden_states=cond.rows,
            pooled_projections=cond.pooled,
            return_dict=False,
        )[0]
