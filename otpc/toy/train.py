"""Train the toy text-to-image model from nothing: a Stable-Diffusion-1.x-shaped pipeline
(KL autoencoder, CLIP text encoder on CLIP's real tokenizer, cross-attention U-Net, DDIM)
on the toy world's scenes and captions.

Two phases, both seeded and run for a fixed number of steps:

1. the autoencoder learns to reconstruct the training scenes (32 px to 16 x 16 x 4
   latents), minimising ``sum_p w_p (x_p - D(z)_p)^2 / sum_p w_p + kl_weight * KL(q(z|x) ||
   N(0, I))``, where a pixel of the shape weighs ``1 + foreground_weight`` and one of the
   background 1 (the shape is a few percent of the pixels; unweighted, its colour and
   outline are what the loss neglects);
2. the text encoder and the U-Net learn together to predict the noise,
   minimising ``w(t) * MSE(eps, eps_theta(sqrt(a_t) z + sqrt(1 - a_t) eps, t, E(c)))`` with
   Min-SNR weights ``w(t) = min(SNR(t), 5) / SNR(t)``; a caption is replaced by the empty one
   with probability ``uncond_rate`` so that classifier-free guidance works (and, if
   ``embed_noise`` is set, isotropic Gaussian noise is added to the text embeddings).

Both phases save a checkpoint every few hundred steps (models, optimiser, random
generators, loss log) next to the output folder; the same command run again after a stop
continues from it and writes the same bytes as a run that never stopped.

Only the training scenes are ever seen (``world.scenes(..., "train")``): the held-out
phrasings and colour-shape combinations stay for the quality benchmark. The folder it writes
is loaded by ``DiffusionPipeline.from_pretrained`` like any Stable Diffusion model.
"""

from __future__ import annotations

import csv
import hashlib
import itertools
import json
import math
import os
import platform
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from otpc.atomic import temporary_prefix
from otpc.sd_parts import BETAS, clip_text_config, clip_tokenizer, save_sd_folder
from otpc.toy import world
from otpc.toy.config import TrainConfig

RECORD = "OTPC_TOY.json"
LOSS_LOG = "training_log.csv"


def code_version() -> str:
    """A hash of the code that decides the weights: the world, the model's parts (with the
    tokenizer's vocabulary) and the training loop."""
    h = hashlib.sha256()
    here = Path(__file__).parent
    for name in ("toy/world.py", "toy/config.py", "toy/train.py", "sd_parts.py", "clip_vocab.py"):
        h.update((here.parent / name).read_bytes())
    return h.hexdigest()[:12]


def _parts(seed: int) -> dict[str, Any]:
    """The untrained pipeline: CLIP tokenizer, a 2-layer 64-wide CLIP text encoder, a
    three-level cross-attention U-Net (32, 64, 64 channels) on 16 x 16 x 4 latents (the
    third level at 4 x 4 lets every position see the whole picture), a 2x KL
    autoencoder and a DDIM scheduler with Stable Diffusion's noise schedule."""
    from diffusers import AutoencoderKL, DDIMScheduler, UNet2DConditionModel
    from transformers import CLIPTextModel

    torch.manual_seed(seed)
    tokenizer = clip_tokenizer()
    return {
        "tokenizer": tokenizer,
        "text_encoder": CLIPTextModel(clip_text_config(tokenizer, 64, heads=4)),
        "unet": UNet2DConditionModel(
            sample_size=world.SIZE // 2,
            in_channels=4,
            out_channels=4,
            layers_per_block=1,
            block_out_channels=(32, 64, 64),
            norm_num_groups=16,
            down_block_types=("CrossAttnDownBlock2D",) * 3,
            up_block_types=("CrossAttnUpBlock2D",) * 3,
            cross_attention_dim=64,
            attention_head_dim=8,
        ),
        "vae": AutoencoderKL(
            in_channels=3,
            out_channels=3,
            latent_channels=4,
            layers_per_block=1,
            block_out_channels=(32, 64),
            down_block_types=("DownEncoderBlock2D",) * 2,
            up_block_types=("UpDecoderBlock2D",) * 2,
            norm_num_groups=16,
            sample_size=world.SIZE,
        ),
        "scheduler": DDIMScheduler(
            **BETAS, clip_sample=False, set_alpha_to_one=False, steps_offset=1
        ),
    }


def _pixels(scenes: list[world.Scene]) -> torch.Tensor:
    """Scenes as a float batch in [-1, 1], N x 3 x H x W."""
    images = np.stack([world.draw(s) for s in scenes])
    return torch.from_numpy(images).permute(0, 3, 1, 2).float() / 127.5 - 1.0


def _lr(step: int, total: int, peak: float, warmup: int) -> float:
    """Linear warm-up, then cosine decay to a tenth of ``peak``."""
    if step < warmup:
        return peak * (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return peak * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress)))


def _steps(start: int, total: int, desc: str) -> Iterator[tuple[int, Any]]:
    """``(step, progress bar)`` for steps ``start`` to ``total``."""
    with tqdm(initial=start, total=total, desc=desc, unit="step", dynamic_ncols=True) as bar:
        for step in range(start, total):
            yield step, bar
            bar.update()


def _scene_key(s: world.Scene) -> tuple[str, ...]:
    return (s.shape, s.colour, s.size, s.background)


def training_images() -> list[world.Scene]:
    """Every distinct picture training may see (captions aside): all attribute combinations
    but the held-out colour-shape ones."""
    grid = itertools.product(world.SHAPES, world.COLOURS, world.SIZES, world.BACKGROUNDS)
    return [
        world.Scene(*attrs, template=0)
        for attrs in grid
        if (attrs[1], attrs[0]) not in world.HELD_OUT_COMBOS
    ]


LossLog = Callable[[str, int, float], object]  # (phase, step, loss) -> a row of the log


class Checkpoints:
    """Where a training saves its state every ``every`` steps (the models, the optimiser,
    every random generator, the loss log so far), so that a stopped training continues
    from its last checkpoint and ends with the same bytes as one that never stopped."""

    FILE = "checkpoint.pt"

    def __init__(self, folder: Path, cfg: TrainConfig, every: int) -> None:
        self.folder, self.cfg, self.every = folder, cfg, every
        self.state: dict[str, Any] | None = None
        self.extra: Callable[[], dict[str, Any]] = dict  # more to save: the log, the times
        path = folder / self.FILE
        if path.exists():
            state = torch.load(path, weights_only=False)
            if state["config"] == asdict(cfg) and state["code_version"] == code_version():
                self.state = state

    def resume(self, phase: str) -> dict[str, Any] | None:
        """The saved state if it is in ``phase``, else ``None``."""
        return self.state if self.state and self.state["phase"] == phase else None

    def done(self, phase: str) -> bool:
        """Whether the saved state is past ``phase`` (``vae`` or ``denoiser``)."""
        order = ("vae", "denoiser")
        if self.state is None:
            return False
        return order.index(self.state["phase"]) > order.index(phase)

    def due(self, step: int, total: int) -> bool:
        """Whether to save after ``step`` (every ``every`` steps; not after the last)."""
        return self.every > 0 and (step + 1) % self.every == 0 and step + 1 < total

    def save(self, **state: Any) -> None:
        """Save ``state`` (with the config, the code version and the global RNGs) atomically."""
        self.folder.mkdir(parents=True, exist_ok=True)
        state |= self.extra() | {
            "config": asdict(self.cfg),
            "code_version": code_version(),
            "torch_rng": torch.get_rng_state(),
        }
        tmp = self.folder / (self.FILE + ".tmp")
        torch.save(state, tmp)
        os.replace(tmp, self.folder / self.FILE)
        self.state = state


def train_vae(vae: Any, cfg: TrainConfig, log: LossLog, ckpt: Checkpoints) -> float:
    """Fit the autoencoder to the training scenes; returns the latents' scaling factor
    (one over the standard deviation of the encoded training scenes, as SD's 0.18215)."""
    rng = np.random.default_rng([cfg.seed, 1])
    scenes = training_images()
    images = _pixels(scenes)
    masks = np.stack([world.mask(s.shape, s.size) for s in scenes])
    weights = 1.0 + cfg.foreground_weight * torch.from_numpy(masks).float()[:, None]
    opt = torch.optim.AdamW(vae.parameters(), lr=cfg.vae_lr)
    start = 0
    if state := ckpt.resume("vae"):
        vae.load_state_dict(state["vae"])
        opt.load_state_dict(state["opt"])
        rng.bit_generator.state = state["np_rng"]
        torch.set_rng_state(state["torch_rng"])
        start = state["step"]
    vae.train()
    for step, bar in _steps(start, cfg.vae_steps, "vae"):
        for group in opt.param_groups:
            group["lr"] = _lr(step, cfg.vae_steps, cfg.vae_lr, cfg.warmup)
        pick = torch.from_numpy(rng.integers(len(images), size=cfg.batch_size))
        batch, w = images[pick], weights[pick]
        posterior = vae.encode(batch).latent_dist
        rec = vae.decode(posterior.sample()).sample
        mse = (w * (rec - batch) ** 2).sum() / (3 * w.sum())
        loss = mse + cfg.kl_weight * posterior.kl().mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        log("vae", step, mse.item())
        bar.set_postfix(mse=f"{mse.item():.4f}")
        if ckpt.due(step, cfg.vae_steps):
            ckpt.save(
                phase="vae",
                step=step + 1,
                vae=vae.state_dict(),
                opt=opt.state_dict(),
                np_rng=rng.bit_generator.state,
            )
    vae.eval()
    with torch.no_grad():
        latents = vae.encode(images).latent_dist.mean
    return float(1.0 / latents.std())


def train_denoiser(
    parts: dict[str, Any], cfg: TrainConfig, log: LossLog, ckpt: Checkpoints
) -> None:
    """Fit the text encoder and the U-Net together on the training captions (eps-prediction,
    Min-SNR weights, caption dropout for classifier-free guidance, and Gaussian noise of
    standard deviation ``embed_noise`` on every coordinate of the text embeddings the U-Net
    reads: isotropic, so it favours no direction, and no path between prompts, over another)."""
    from diffusers import DDPMScheduler

    tokenizer, text_encoder, unet, vae = (
        parts[k] for k in ("tokenizer", "text_encoder", "unet", "vae")
    )
    rng = np.random.default_rng([cfg.seed, 2])
    gen = torch.Generator().manual_seed(cfg.seed + 2)
    train = world.scenes(cfg.unet_steps * cfg.batch_size, cfg.seed, "train")
    pictures = {_scene_key(s): s for s in reversed(train)}  # one scene per distinct picture
    keys = sorted(pictures)
    index = {k: i for i, k in enumerate(keys)}
    with torch.no_grad():
        scaling = vae.config.scaling_factor
        stats = vae.encode(_pixels([pictures[k] for k in keys])).latent_dist
        means, stds = stats.mean * scaling, stats.std * scaling
    captions = [world.caption(s) for s in train]
    noise_schedule = DDPMScheduler(**BETAS)
    alphas = noise_schedule.alphas_cumprod
    snr = alphas / (1 - alphas)
    weights = torch.clamp(snr, max=cfg.min_snr) / snr
    params = list(unet.parameters()) + list(text_encoder.parameters())
    opt = torch.optim.AdamW(params, lr=cfg.unet_lr, weight_decay=0.01)
    start = 0
    if state := ckpt.resume("denoiser"):
        unet.load_state_dict(state["unet"])
        text_encoder.load_state_dict(state["text_encoder"])
        opt.load_state_dict(state["opt"])
        rng.bit_generator.state = state["np_rng"]
        gen.set_state(state["gen"])
        torch.set_rng_state(state["torch_rng"])
        start = state["step"]
    unet.train()
    text_encoder.train()
    for step, bar in _steps(start, cfg.unet_steps, "denoiser"):
        for group in opt.param_groups:
            group["lr"] = _lr(step, cfg.unet_steps, cfg.unet_lr, cfg.warmup)
        batch = range(step * cfg.batch_size, (step + 1) * cfg.batch_size)
        drop = rng.random(cfg.batch_size) < cfg.uncond_rate
        text = ["" if d else captions[i] for i, d in zip(batch, drop, strict=True)]
        ids = tokenizer(text, padding="max_length", max_length=77, return_tensors="pt").input_ids
        rows = torch.tensor([index[_scene_key(train[i])] for i in batch])
        eps_z = torch.randn(means[rows].shape, generator=gen)
        latents = means[rows] + stds[rows] * eps_z
        t = torch.randint(0, len(alphas), (cfg.batch_size,), generator=gen)
        noise = torch.randn(latents.shape, generator=gen)
        noisy = noise_schedule.add_noise(latents, noise, t)
        cond = text_encoder(ids)[0]
        if cfg.embed_noise:
            cond = cond + cfg.embed_noise * torch.randn(cond.shape, generator=gen)
        pred = unet(noisy, t, cond).sample
        per_sample = ((pred - noise) ** 2).mean(dim=(1, 2, 3))
        loss = (weights[t] * per_sample).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        log("denoiser", step, loss.item())
        bar.set_postfix(loss=f"{loss.item():.4f}")
        if ckpt.due(step, cfg.unet_steps):
            ckpt.save(
                phase="denoiser",
                step=step + 1,
                vae=parts["vae"].state_dict(),
                unet=unet.state_dict(),
                text_encoder=text_encoder.state_dict(),
                opt=opt.state_dict(),
                np_rng=rng.bit_generator.state,
                gen=gen.get_state(),
                scaling=vae.config.scaling_factor,
            )
    unet.eval()
    text_encoder.eval()


def checkpoint_folder(out: Path) -> Path:
    """Where a training of ``out`` keeps its checkpoints until it has written ``out``."""
    return out.parent / f".{out.name}.checkpoints"


def train(out: Path, cfg: TrainConfig, command: str, checkpoint_every: int = 200) -> dict[str, Any]:
    """Train the toy model with ``cfg`` and save it as a diffusers folder at ``out`` (with its
    loss log and a record of ``command``, seed, code version and times); returns the record.

    Every ``checkpoint_every`` steps it saves its state next to ``out``
    (``checkpoint_folder``); run again with the same settings after a stop, it continues
    from there (the same bytes in the end) and removes the checkpoints once ``out`` is
    written. A checkpoint of other settings or other code is ignored."""
    out.parent.mkdir(parents=True, exist_ok=True)
    ckpt = Checkpoints(checkpoint_folder(out), cfg, checkpoint_every)
    tmp = Path(tempfile.mkdtemp(prefix=temporary_prefix(out), suffix=".tmp", dir=out.parent))
    try:
        record = _train_into(tmp, cfg, command, ckpt)
        if out.exists():
            shutil.rmtree(out)
        os.replace(tmp, out)
        shutil.rmtree(ckpt.folder, ignore_errors=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return record


def _train_into(out: Path, cfg: TrainConfig, command: str, ckpt: Checkpoints) -> dict[str, Any]:
    start = time.perf_counter()
    parts = _parts(cfg.seed)
    rows: list[list[str]] = []
    before = ckpt.state or {}
    rows.extend(before.get("log", []))
    times = {"vae_s": float(before.get("vae_s", 0.0)), "denoiser_s": 0.0}
    spent = float(before.get("seconds", 0.0))  # in earlier runs, before their last checkpoint

    def log(phase: str, step: int, loss: float) -> None:
        rows.append([phase, str(step), f"{loss:.6f}"])

    def extra() -> dict[str, Any]:
        elapsed = spent + time.perf_counter() - start
        return {"log": list(rows), "seconds": elapsed, "vae_s": times["vae_s"] or elapsed}

    ckpt.extra = extra
    if ckpt.done("vae"):
        assert ckpt.state is not None
        parts["vae"].load_state_dict(ckpt.state["vae"])
        parts["vae"].eval()
        scaling = float(ckpt.state["scaling"])
    else:
        scaling = train_vae(parts["vae"], cfg, log, ckpt)
        times["vae_s"] = spent + time.perf_counter() - start
    parts["vae"].register_to_config(scaling_factor=scaling)
    train_denoiser(parts, cfg, log, ckpt)
    times["denoiser_s"] = spent + time.perf_counter() - start - times["vae_s"]
    with open(out / LOSS_LOG, "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["phase", "step", "loss"])
        writer.writerows(rows)
    save_sd_folder(out, parts)
    record = {
        "model": "otpc toy model: Stable-Diffusion-1.x-shaped, trained on the toy world",
        "command": command,
        "config": asdict(cfg),
        "code_version": code_version(),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "machine": platform.machine(),
        "seconds": {k: round(v, 1) for k, v in times.items()},
        "scaling_factor": scaling,
    }
    (out / RECORD).write_text(json.dumps(record, indent=2) + "\n")
    return record
