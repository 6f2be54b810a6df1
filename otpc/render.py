"""otpc's renderer: a batched classifier-free-guidance denoising loop over diffusers parts.

Many frames (of many paths) go through the U-Net together, with the unconditional half of
CFG in the same batch; latents are decoded in batches and frames go straight to the
content-addressed cache, so memory is bounded by ``batch_size`` whatever the study's size.
For the same embeddings, noise and scheduler it produces StableDiffusionPipeline's images.
"""

from __future__ import annotations

import copy
import hashlib
import json
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass

import numpy as np
import torch
from tqdm.auto import tqdm

from otpc.embeddings import encode_batch
from otpc.frame_cache import FrameCache, frame_key


@dataclass(frozen=True)
class RenderSettings:
    """Everything besides the model and the embedding that decides a frame's pixels."""

    steps: int = 50
    guidance: float = 7.5
    height: int | None = None
    width: int | None = None
    batch_size: int = 16
    compile: bool = False


@dataclass(frozen=True)
class FrameJob:
    """One image to render: its embedding (n x d), its noise seed, and SDXL's pooled vector."""

    embedding: torch.Tensor
    latent_seed: int
    pooled: torch.Tensor | None = None


class Renderer:
    """Renders batches of prompt embeddings to uint8 images with one model."""

    def __init__(self, pipe, settings: RenderSettings) -> None:
        self.pipe = pipe
        self.settings = settings
        self.res = pipe.otpc_resolved
        self.unet, self.vae = pipe.unet, pipe.vae
        self.scale = 2 ** (len(self.vae.config.block_out_channels) - 1)
        self.height = settings.height or self.unet.config.sample_size * self.scale
        self.width = settings.width or self.unet.config.sample_size * self.scale
        if self.height % self.scale or self.width % self.scale:
            raise ValueError(f"render height/width must be multiples of {self.scale}")
        self.is_xl = hasattr(pipe, "text_encoder_2")
        with torch.no_grad():
            neg, neg_pooled = encode_batch(pipe, [""], self.res.device)
        self.negative = neg[0].to(self.res.dtype)
        self.negative_pooled = None if neg_pooled is None else neg_pooled[0].to(self.res.dtype)
        self._optimise()

    def _optimise(self) -> None:
        if self.res.device.type == "cuda":
            self.unet.to(memory_format=torch.channels_last)
            self.vae.to(memory_format=torch.channels_last)
            if hasattr(self.unet, "fuse_qkv_projections"):
                self.unet.fuse_qkv_projections()
        if self.settings.compile:
            self.unet = torch.compile(self.unet, mode="max-autotune-no-cudagraphs", fullgraph=True)

    @property
    def context(self) -> str:
        """A string that fixes the model and all settings a frame depends on."""
        settings = asdict(self.settings)
        for not_pixels in ("batch_size", "compile"):
            settings.pop(not_pixels)
        settings.update(height=self.height, width=self.width)
        neg = hashlib.sha256(self.negative.float().cpu().numpy().tobytes()).hexdigest()[:16]
        return json.dumps({"model": self.res.fingerprint, "scheduler": dict(self.pipe.scheduler.config),
                           "settings": settings, "negative": neg}, sort_keys=True, default=str)

    def initial_latents(self, seed: int) -> torch.Tensor:
        """The seeded starting noise (1, C, h, w), drawn on the CPU so it is device-independent."""
        shape = (1, self.unet.config.in_channels, self.height // self.scale, self.width // self.scale)
        return torch.randn(shape, generator=torch.Generator("cpu").manual_seed(seed))

    def _added_cond(self, pooled: torch.Tensor, batch: int) -> dict[str, torch.Tensor]:
        """SDXL's extra conditioning: pooled text vector and size/crop ids."""
        ids = torch.tensor([self.height, self.width, 0, 0, self.height, self.width],
                           device=self.res.device, dtype=self.res.dtype).repeat(batch, 1)
        return {"text_embeds": pooled, "time_ids": ids}

    @torch.no_grad()
    def render_batch(self, embeds: torch.Tensor, latents: torch.Tensor,
                     pooled: torch.Tensor | None = None) -> np.ndarray:
        """Images (B, H, W, 3) uint8 for embeddings (B, n, d) from noise (B, C, h, w)."""
        dev, dtype = self.res.device, self.res.dtype
        batch = embeds.shape[0]
        cfg = self.settings.guidance > 1.0
        scheduler = copy.deepcopy(self.pipe.scheduler)
        scheduler.set_timesteps(self.settings.steps, device=dev)
        cond = embeds.to(dev, dtype)
        if cfg:
            cond = torch.cat([self.negative.expand(batch, -1, -1), cond])
        added = None
        if self.is_xl:
            pool = pooled.to(dev, dtype)
            if cfg:
                pool = torch.cat([self.negative_pooled.expand(batch, -1), pool])
            added = self._added_cond(pool, pool.shape[0])
        lat = latents.to(dev, dtype) * scheduler.init_noise_sigma
        for t in scheduler.timesteps:
            x = torch.cat([lat, lat]) if cfg else lat
            x = scheduler.scale_model_input(x, t)
            eps = self.unet(x, t, encoder_hidden_states=cond, added_cond_kwargs=added,
                            return_dict=False)[0]
            if cfg:
                uncond, text = eps.chunk(2)
                eps = uncond + self.settings.guidance * (text - uncond)
            lat = scheduler.step(eps, t, lat, return_dict=False)[0]
        return self.decode(lat)

    @torch.no_grad()
    def decode(self, latents: torch.Tensor) -> np.ndarray:
        """Latents to uint8 images, as the pipeline's image processor does."""
        vae = self.vae
        needs_upcast = vae.dtype == torch.float16 and getattr(vae.config, "force_upcast", False)
        if needs_upcast:
            vae = vae.to(torch.float32)
        lat = latents.to(vae.dtype) / vae.config.scaling_factor
        images = vae.decode(lat, return_dict=False)[0]
        if needs_upcast:
            vae.to(torch.float16)
        images = (images.float() / 2 + 0.5).clamp(0, 1)
        return (images.permute(0, 2, 3, 1).cpu().numpy() * 255).round().astype(np.uint8)


def render_missing(renderer: Renderer, cache: FrameCache,
                   jobs: Callable[[], Iterable[FrameJob]], desc: str = "render"
                   ) -> tuple[list[str], int]:
    """Make sure every job's frame is in ``cache``; render only the missing ones.

    ``jobs`` is called twice: once to find what is missing (cheap: hashing), once to render
    it, with frames produced lazily and rendered as batches fill, so memory stays bounded
    by the batch. Returns each job's cache key (in order) and how many frames were rendered.
    """
    context = renderer.context
    keys = [frame_key(context, (job.embedding, job.pooled), job.latent_seed) for job in jobs()]
    missing = {key for key in dict.fromkeys(keys) if not cache.has(key)}
    bar = tqdm(total=len(missing), desc=desc, unit="img", dynamic_ncols=True,
               disable=not missing)
    batch: list[tuple[str, FrameJob]] = []
    queued: set[str] = set()
    for key, job in zip(keys, jobs()):
        if key in missing and key not in queued:
            queued.add(key)
            batch.append((key, job))
        if len(batch) == renderer.settings.batch_size:
            _render_into(renderer, cache, batch, bar)
            batch = []
    if batch:
        _render_into(renderer, cache, batch, bar)
    bar.close()
    return keys, len(missing)


def _render_into(renderer: Renderer, cache: FrameCache, batch: list[tuple[str, FrameJob]],
                 bar: tqdm) -> None:
    embeds = torch.stack([job.embedding for _, job in batch])
    latents = torch.cat([renderer.initial_latents(job.latent_seed) for _, job in batch])
    pooled = torch.stack([job.pooled for _, job in batch]) if renderer.is_xl else None
    for (key, _), image in zip(batch, renderer.render_batch(embeds, latents, pooled)):
        cache.put(key, image)
    bar.update(len(batch))
