"""otpc's renderer: a batched denoising loop over diffusers parts, for every model family.

Many frames (of many paths) go through the denoiser together, with the unconditional half of
classifier-free guidance in the same batch; latents are decoded in bounded chunks and frames
are written to the content-addressed cache by background threads while the next batch is on
the device, so memory is bounded by ``batch_size`` whatever the study's size. What differs
between families (encoding, guidance, latent shapes, decoding) is ``otpc.families``'; for
the same embeddings, noise and scheduler the frames are the family's diffusers pipeline's.

On CUDA the denoiser and VAE run channels-last with fused QKV projections (SDPA attention,
the model's dtype: fp16/bf16 for the presets) and cuDNN autotuning; ``compile`` wraps the
denoiser in ``torch.compile`` after fusing, with static shapes (short batches are padded).
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from itertools import islice
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from otpc.errors import InputError
from otpc.families import Conditioning, cat, family_for
from otpc.frame_cache import FrameCache, frame_key
from otpc.models import PRESETS, LoadedModel, preset_name
from otpc.params import RenderSettings, speed_only


@dataclass(frozen=True)
class FrameJob:
    """One image to render: its rows (n x d), its noise seed, and the pooled vector of models
    that have one."""

    embedding: torch.Tensor
    latent_seed: int
    pooled: torch.Tensor | None = None


def job_key(context: str, job: FrameJob) -> str:
    """The frame cache key of ``job``'s image, rendered in ``context`` (``Renderer.context``)."""
    return frame_key(context, (job.embedding, job.pooled), job.latent_seed)


def initial_latents(shape: tuple[int, ...], seed: int) -> torch.Tensor:
    """Seeded starting noise, drawn on the CPU in float32 so it is device-independent."""
    return torch.randn(shape, generator=torch.Generator("cpu").manual_seed(seed))


# Schedulers whose steps draw no noise (DDIM's eta is a step argument; the renderer passes
# none, so 0), named in the error that refuses one that does.
DETERMINISTIC_SAMPLERS = (
    "DDIMScheduler (eta=0), EulerDiscreteScheduler, PNDMScheduler or "
    "DPMSolverMultistepScheduler (algorithm_type dpmsolver++)"
)
PROBE_STEPS = 10  # the schedule the probe sets: ancestral samplers add no noise on the last step


def scheduler_draws_noise(scheduler: Any, steps: int = PROBE_STEPS) -> bool:
    """Whether ``scheduler.step`` draws random noise (ancestral and SDE samplers, DDPM, LCM),
    found by running it, not from its class name.

    Two copies of it, set to ``steps`` timesteps (at least 3, so that the two steps probed are
    not the last, where ancestral samplers add none), each take the first two steps from the
    same fixed sample and model output, under two different states of torch's global RNG
    (which diffusers' schedulers draw from when ``step`` gets no generator, as in the
    renderer's loop); the outputs differ only if a step draws noise. It runs on the CPU and
    leaves the caller's RNG as it was.
    """
    train_steps = scheduler.config.get("num_train_timesteps") or steps
    steps = min(max(steps, 3), train_steps)
    outputs = []
    for seed in (1, 2):
        with torch.random.fork_rng(devices=[]):
            torch.default_generator.manual_seed(seed)  # the CPU's only: no other device's state
            probe = copy.deepcopy(scheduler)
            # flow-matching schedulers with dynamic shift need one (any value will do here)
            shift = {"mu": 1.0} if probe.config.get("use_dynamic_shifting") else {}
            probe.set_timesteps(steps, device="cpu", **shift)
            gen = torch.Generator("cpu").manual_seed(0)
            sample = torch.randn(1, 4, 8, 8, generator=gen) * getattr(probe, "init_noise_sigma", 1)
            model_output = torch.randn(1, 4, 8, 8, generator=gen)
            taken = []
            for t in probe.timesteps[:2]:
                if hasattr(probe, "scale_model_input"):  # as the U-Net loop does (some check)
                    probe.scale_model_input(sample, t)
                sample = probe.step(model_output, t, sample, return_dict=False)[0]
                taken.append(sample)
        outputs.append(taken)
    return any(not torch.equal(x, y) for x, y in zip(*outputs, strict=True))


def stochastic_scheduler_message(name: str) -> str:
    """Why scheduler ``name``, whose steps draw noise, cannot render the study; and the fix."""
    return (
        f"scheduler {name} draws random noise in its steps, so the same embedding and "
        "starting noise would render a different image each time (and the frame cache would "
        "keep one random draw under a key meant to fix the image); the study needs a "
        f"deterministic sampler, such as {DETERMINISTIC_SAMPLERS}. To switch, in a local "
        "diffusers folder of the model (a copy, for a hub model) name one of them in the "
        '"scheduler" entry of model_index.json (which decides the class loaded) and as '
        "_class_name in scheduler/scheduler_config.json, and set model.name to that folder"
    )


def require_deterministic_scheduler(scheduler: Any, model: str) -> None:
    """``InputError`` naming ``model`` and the scheduler's class if its steps draw noise."""
    if scheduler_draws_noise(scheduler):
        raise InputError(
            f"model {model!r}: {stochastic_scheduler_message(type(scheduler).__name__)}"
        )


def _uses_default_attention(model: torch.nn.Module) -> bool:
    procs = getattr(model, "attn_processors", {})
    return bool(procs) and all(type(p).__name__ == "AttnProcessor2_0" for p in procs.values())


def optimise_for_speed(unet: torch.nn.Module, vae: torch.nn.Module) -> None:
    """Channels-last memory format and fused QKV projections (in place).

    Fusing replaces diffusers' default SDPA processors with the fused SDPA ones; models with
    other processors (custom, added-KV) are left unfused. Must run before ``torch.compile``.
    """
    for model in (unet, vae):
        model.to(memory_format=torch.channels_last)
        fuse = getattr(model, "fuse_qkv_projections", None)
        if callable(fuse) and _uses_default_attention(model):
            fuse()


class Renderer:
    """Renders batches of prompt embeddings to uint8 images with one model.

    Everything that differs between model families goes through ``otpc.families``. Steps,
    guidance and size left unset come from the model's preset, else from its pipeline's
    defaults (``steps``, ``guidance``, ``height``, ``width`` say what they became). On CUDA
    it optimises the denoiser and VAE in place (see ``optimise_for_speed``).
    ``InputError`` if the pipeline's scheduler draws noise in its steps: the study's frames
    must be functions of their embedding and noise seed (see ``scheduler_draws_noise``).
    """

    def __init__(self, model: LoadedModel, settings: RenderSettings) -> None:
        self.pipe = pipe = model.pipe
        self.settings = settings
        self.res = model.resolved
        require_deterministic_scheduler(pipe.scheduler, self.res.label or self.res.source)
        self.family = family = family_for(pipe)
        preset = PRESETS.get(preset_name(self.res) or "")
        self.steps: int = _first(settings.steps, preset and preset.steps, family.default_steps)
        self.guidance: float = _first(
            settings.guidance, preset and preset.guidance, family.default_guidance
        )
        height, width = (preset.size,) * 2 if preset and preset.size else family.default_size()
        self.height: int = settings.height or height
        self.width: int = settings.width or width
        if self.height % family.size_multiple or self.width % family.size_multiple:
            raise ValueError(f"render height/width must be multiples of {family.size_multiple}")
        family.prepare()
        with torch.no_grad():
            negative = family.unconditional(self.res.device)
        self.negative = negative.to(self.res.device, self.res.dtype)
        self.context = self._context()
        if self.res.device.type == "cuda":
            torch.backends.cudnn.benchmark = True
            optimise_for_speed(family.denoiser, family.vae)
        if settings.compile:
            family.denoiser = torch.compile(
                family.denoiser, mode=settings.compile_mode, fullgraph=True, dynamic=False
            )

    def _context(self) -> str:
        """A string that fixes the model and all settings a frame's pixels depend on."""
        settings = self.settings.model_dump(
            include=set(RenderSettings.model_fields) - speed_only(RenderSettings)
        )
        settings.update(
            steps=self.steps, guidance=self.guidance, height=self.height, width=self.width
        )
        scheduler = {k: v for k, v in self.pipe.scheduler.config.items() if not k.startswith("_")}
        scheduler["class"] = type(self.pipe.scheduler).__name__
        rows = self.negative.rows[0].float().cpu().numpy()
        return json.dumps(
            {
                "model": self.res.fingerprint,
                "scheduler": scheduler,
                "settings": settings,
                "negative": hashlib.sha256(rows.tobytes()).hexdigest()[:16],
            },
            sort_keys=True,
            default=str,
        )

    def free_text_encoders(self) -> None:
        """Free the pipeline's text encoders (its unconditional rows are already encoded):
        call once every prompt is encoded, before rendering a large model."""
        self.family.free_text_encoders()

    def key(self, job: FrameJob) -> str:
        """The frame cache key of ``job``'s image."""
        return job_key(self.context, job)

    def initial_latents(self, seed: int) -> torch.Tensor:
        """The seeded starting noise (1, C, h, w) of a frame."""
        return initial_latents((1, *self.family.noise_shape(self.height, self.width)), seed)

    def scheduler(self) -> Any:
        """A fresh copy of the pipeline's scheduler, set for these settings."""
        scheduler = copy.deepcopy(self.pipe.scheduler)
        self.family.set_timesteps(scheduler, self.steps, self.height, self.width, self.res.device)
        return scheduler

    def render(self, jobs: Sequence[FrameJob]) -> np.ndarray:
        """Images (len(jobs), H, W, 3) uint8; with ``compile`` a short batch is padded to
        ``batch_size`` so the compiled denoiser sees one shape only."""
        cond = cat([Conditioning(job.embedding[None], _batch_of(job.pooled)) for job in jobs])
        latents = torch.cat([self.initial_latents(job.latent_seed) for job in jobs])
        pad = self.settings.batch_size - len(jobs) if self.settings.compile else 0
        if pad > 0:
            cond = cat([cond, Conditioning(cond.rows[-1:], _last(cond.pooled)).expand(pad)])
            latents = torch.cat([latents, latents[-1:].expand(pad, -1, -1, -1)])
        return self.render_batch(cond.rows, latents, cond.pooled)[: len(jobs)]

    @torch.no_grad()
    def render_batch(
        self,
        embeds: torch.Tensor,
        latents: torch.Tensor,
        pooled: torch.Tensor | None = None,
        on_step: Callable[[], object] | None = None,
    ) -> np.ndarray:
        """Images (B, H, W, 3) uint8 for rows (B, n, d) (and pooled vectors (B, p)) from
        noise (B, C, h, w); ``on_step`` is called after each denoising step (progress bars)."""
        dev, dtype, guidance = self.res.device, self.res.dtype, self.guidance
        cfg = self.family.uses_cfg(guidance)
        scheduler = self.scheduler()
        cond = Conditioning(embeds, pooled).to(dev, dtype)
        if cfg:
            cond = cat([self.negative.expand(len(cond)), cond])
        lat = self.family.start(latents.to(dev, dtype), scheduler)
        for t in scheduler.timesteps:
            x = torch.cat([lat, lat]) if cfg else lat
            out = self.family.predict(scheduler, x, t, cond, guidance)
            if cfg:
                uncond, text = out.chunk(2)
                out = uncond + guidance * (text - uncond)
            lat = scheduler.step(out, t, lat, return_dict=False)[0]
            if on_step is not None:
                on_step()
        return self.decode(lat)

    @torch.no_grad()
    def decode(self, latents: torch.Tensor) -> np.ndarray:
        """Latents to uint8 images in chunks of ``decode_batch_size``, with the same
        arithmetic as the pipeline's image processor (converted on the device)."""
        chunks = []
        for chunk in latents.split(self.settings.decode_batch_size):
            images = self.family.decode(chunk)
            images = (images * 0.5 + 0.5).clamp(0, 1).permute(0, 2, 3, 1).float()
            chunks.append((images * 255).round().to(torch.uint8))
        return torch.cat(chunks).cpu().numpy()


def _first(*values: Any) -> Any:
    """The first value that is not None (0 and 0.0 count)."""
    return next(v for v in values if v is not None)


def _batch_of(vector: torch.Tensor | None) -> torch.Tensor | None:
    return None if vector is None else vector[None]


def _last(vectors: torch.Tensor | None) -> torch.Tensor | None:
    return None if vectors is None else vectors[-1:]


def batches(
    items: Iterable[tuple[str, FrameJob]], size: int
) -> Iterator[list[tuple[str, FrameJob]]]:
    """``items`` in lists of ``size`` (the last may be shorter), drawn lazily."""
    iterator = iter(items)
    while batch := list(islice(iterator, size)):
        yield batch


def render_frames(
    renderer: Renderer,
    cache: FrameCache,
    jobs: Iterable[tuple[str, FrameJob]],
    total: int,
    desc: str = "render",
) -> None:
    """Render each ``(key, job)`` (keys distinct) into ``cache``, ``batch_size`` at a time.

    ``jobs`` is consumed lazily, a batch at a time; PNGs are written by worker threads while
    the next batch renders, and at most one batch waits to be written, so memory stays bounded
    by the batch. A crash leaves only whole frames in the cache.
    """
    with (
        ThreadPoolExecutor(max_workers=min(4, os.cpu_count() or 1)) as pool,
        tqdm(total=total, desc=desc, unit="img", dynamic_ncols=True, disable=not total) as bar,
    ):
        writing: list[Future[None]] = []
        for batch in batches(jobs, renderer.settings.batch_size):
            images = renderer.render([job for _, job in batch])
            for done in writing:
                done.result()
            writing = [
                pool.submit(cache.put, key, image)
                for (key, _), image in zip(batch, images, strict=True)
            ]
            bar.update(len(batch))
        for done in writing:
            done.result()


def missing_keys(cache: FrameCache, keys: Iterable[str]) -> list[str]:
    """The distinct ``keys`` without a valid cache entry, in order (entries verified in
    parallel; damaged ones are reported and removed)."""
    unique = list(dict.fromkeys(keys))
    with ThreadPoolExecutor(max_workers=min(4, os.cpu_count() or 1)) as pool:
        return [key for key, ok in zip(unique, pool.map(cache.has, unique), strict=True) if not ok]


def render_missing(
    renderer: Renderer, cache: FrameCache, jobs: Sequence[FrameJob], desc: str = "render"
) -> tuple[list[str], int]:
    """Make sure every job's frame is in ``cache``, rendering only the missing ones (each
    once); returns each job's key, in order, and how many frames were rendered."""
    keys = [renderer.key(job) for job in jobs]
    missing = missing_keys(cache, keys)
    first = dict(zip(reversed(keys), reversed(jobs), strict=True))
    render_frames(renderer, cache, ((key, first[key]) for key in missing), len(missing), desc)
    return keys, len(missing)
