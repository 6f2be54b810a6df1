"""What otpc needs from a model family: how its pipeline turns prompts into rows (and pooled
vectors), what the unconditional conditioning is, how guidance works, how latents are shaped
and how they are decoded. The renderer, ``embed`` and ``interpolate`` use only this.

Each family does exactly what its diffusers pipeline does, so that for the same embeddings and
noise otpc's frames are the pipeline's.
"""

from __future__ import annotations

import gc
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, ClassVar

import torch

from otpc.row_blocks import RowBlock


@dataclass(frozen=True)
class Conditioning:
    """What the denoiser reads of a batch of prompts: rows (B, n, d), the point clouds otpc
    couples, and the pooled vectors (B, p) of families that have them."""

    rows: torch.Tensor
    pooled: torch.Tensor | None = None

    def to(self, device: torch.device, dtype: torch.dtype) -> Conditioning:
        pooled = None if self.pooled is None else self.pooled.to(device, dtype)
        return Conditioning(self.rows.to(device, dtype), pooled)

    def expand(self, batch: int) -> Conditioning:
        """A one-prompt conditioning repeated ``batch`` times."""
        pooled = None if self.pooled is None else self.pooled.expand(batch, -1)
        return Conditioning(self.rows.expand(batch, -1, -1), pooled)

    def __len__(self) -> int:
        return self.rows.shape[0]


def cat(parts: list[Conditioning]) -> Conditioning:
    """Conditionings stacked along the batch."""
    rows = torch.cat([c.rows for c in parts])
    pooled = [c.pooled for c in parts]
    if all(p is None for p in pooled):
        return Conditioning(rows)
    if any(p is None for p in pooled):
        raise ValueError("this model needs a pooled vector for every frame")
    return Conditioning(rows, torch.cat([p for p in pooled if p is not None]))


class Family(ABC):
    """One model family over its loaded diffusers pipeline ``pipe``."""

    name: ClassVar[str]
    #: pipeline components that make this family (checked in ``matches``)
    components: ClassVar[tuple[str, ...]]
    #: the denoiser's component, and how its class name starts
    denoiser_part: ClassVar[str]
    denoiser_class: ClassVar[str] = ""
    #: the text encoders' components (freed by ``free_text_encoders``)
    text_parts: ClassVar[tuple[str, ...]] = ("text_encoder", "text_encoder_2", "text_encoder_3")
    #: the pipeline's own defaults (``num_inference_steps``, ``guidance_scale``)
    default_steps: ClassVar[int]
    default_guidance: ClassVar[float]

    def __init__(self, pipe: Any) -> None:
        self.pipe = pipe
        #: the network that predicts the noise (U-Net or transformer), compiled in place by
        #: the renderer when asked
        self.denoiser: Any = getattr(pipe, self.denoiser_part)

    @classmethod
    def matches(cls, parts: dict[str, str]) -> bool:
        """Whether a pipeline whose components have these class names (``parts``: component
        -> class name, None for a missing one) is of this family."""
        denoiser = parts.get(cls.denoiser_part) or ""
        return all(parts.get(p) for p in cls.components) and denoiser.startswith(cls.denoiser_class)

    @classmethod
    def size_multiple_of(cls, vae: dict[str, Any], denoiser: dict[str, Any]) -> int:
        """What image sides must be multiples of, from the VAE's and denoiser's configs: the
        VAE's downsampling factor by default."""
        return int(2 ** (len(vae["block_out_channels"]) - 1))

    def _count(self, tokenizer: Any, prompt: str) -> int:
        """Tokens ``tokenizer`` makes of ``prompt`` (with its special tokens), untruncated."""
        return len(tokenizer(prompt, truncation=False).input_ids)

    @property
    def vae(self) -> Any:
        return self.pipe.vae

    @property
    def scale(self) -> int:
        """Pixels per latent cell along each side."""
        return 2 ** (len(self.vae.config.block_out_channels) - 1)

    @property
    def size_multiple(self) -> int:
        """What image heights and widths must be multiples of."""
        denoiser = getattr(self.pipe, self.denoiser_part).config
        return self.size_multiple_of(dict(self.vae.config), dict(denoiser))

    @abstractmethod
    def default_size(self) -> tuple[int, int]:
        """The (height, width) the pipeline renders by default."""

    @abstractmethod
    def tokenizers(self) -> list[tuple[Any, int]]:
        """Every tokenizer with the length the pipeline pads and truncates to."""

    @abstractmethod
    def token_count(self, prompt: str) -> tuple[int, bool]:
        """Tokens of ``prompt`` for the rows' first encoder (start and end tokens included,
        before truncation) and whether the pipeline truncates it for any encoder."""

    @abstractmethod
    def row_blocks(self, prompt: str) -> list[RowBlock]:
        """Which encoder each of ``prompt``'s rows comes from, and which are its tokens."""

    @abstractmethod
    def encode(self, prompts: list[str], device: torch.device) -> Conditioning:
        """The prompts' conditioning, computed as the pipeline's ``encode_prompt`` does."""

    @abstractmethod
    def unconditional(self, device: torch.device) -> Conditioning:
        """The conditioning classifier-free guidance pushes away from (one row of it)."""

    def free_text_encoders(self) -> None:
        """Drop the text encoders from the pipeline (T5-XXL alone is 9.5 GB in bf16), once
        every prompt is encoded: rendering needs only the denoiser and the VAE."""
        for part in self.text_parts:
            if getattr(self.pipe, part, None) is not None:
                setattr(self.pipe, part, None)
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()

    def uses_cfg(self, guidance: float) -> bool:
        """Whether ``guidance`` means classifier-free guidance (two passes per step)."""
        return guidance > 1.0

    def prepare(self) -> None:
        """Adjust the pipeline's parts (in place) as its pipeline does before rendering;
        nothing by default."""
        return None

    @abstractmethod
    def noise_shape(self, height: int, width: int) -> tuple[int, ...]:
        """The shape (C, h, w) of one frame's starting noise."""

    @abstractmethod
    def set_timesteps(
        self, scheduler: Any, steps: int, height: int, width: int, device: torch.device
    ) -> None:
        """Set ``scheduler``'s timesteps for ``steps`` steps at this image size."""

    def start(self, noise: torch.Tensor, scheduler: Any) -> torch.Tensor:
        """The first latents of the loop from the starting noise (B, C, h, w): the noise
        itself by default (flow matching)."""
        return noise

    @abstractmethod
    def predict(
        self,
        scheduler: Any,
        latents: torch.Tensor,
        t: torch.Tensor,
        cond: Conditioning,
        guidance: float,
    ) -> torch.Tensor:
        """The denoiser's output for ``latents`` (as ``start`` made them) at ``scheduler``'s
        step ``t``; ``cond`` has one conditioning per latent."""

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """Images (B, 3, H, W) in [-1, 1] from the loop's final latents: unscaled by the
        VAE's ``scaling_factor`` and shifted by its ``shift_factor`` (SD3, FLUX), as the
        pipelines do."""
        config = self.vae.config
        latents = latents.to(self.vae.dtype) / config.scaling_factor
        if config.get("shift_factor") is not None:
            latents = latents + config.shift_factor
        return self.vae.decode(latents, return_dict=False)[0]
