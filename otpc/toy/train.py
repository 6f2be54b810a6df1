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
   with probability ``uncond_rate`` so that classifier-free guidance works.

Every ``CHECKPOINT_EVERY`` steps the whole state (weights, optimiser, random generators, loss
log) is saved next to the output folder; a stopped training started again with the same
command continues from the last checkpoint to the same bytes.

Only the training scenes are ever seen (``world.scenes(..., "train")``): the held-out
phrasings and colour-shape combinations stay for the quality benchmark. The folder it writes
is loaded by ``DiffusionPipeline.from_pretrained`` like any Stable Diffusion model.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import math
import os
import platform
import shutil
import tempfile
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from otpc.atomic import temporary_prefix
from otpc.sd_parts import BETAS, clip_text_config, clip_tokenizer, save_sd_folder
from otpc.toy import world
from otpc.toy.checkpoints import Checkpoints
from otpc.toy.config import TrainConfig

RECORD = "OTPC_TOY.json"
LOSS_LOG = "training_log.csv"


def code_version() -> str:
    """A hash of the code that decides the weights: the world, the model's parts (with the
    tokenizer's vocabulary) and the training loop."""
    h = hashlib.sha256()
    here = Path(__file__).parent
    names = ("toy/world.py", "toy/config.py", "toy/train.py", "sd_parts.py", "clip_vocab.py")
    for name in names:
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


CHECKPOINT_EVERY = 200  # steps between saved states
Log = list[str]  # the loss log's rows: "phase,step,loss"


def _bar(phase: str, start: int, total: int) -> Any:
    """A progress bar over ``phase``'s steps, continuing from ``start``."""
    return tqdm(range(start, total), desc=phase, unit="step", initial=start, total=total)


def train_vae(
    vae: Any, cfg: TrainConfig, log: Log, ckpt: Checkpoints, resumed: dict[str, Any] | None
) -> float:
    """Fit the autoencoder to the training scenes (from ``resumed``, a saved state of this
    phase, if given); returns the latents' scaling factor (one over the standard deviation
    of the encoded training scenes, as SD's 0.18215)."""
    rng = np.random.default_rng([cfg.seed, 1])
    scenes = training_images()
    images = _pixels(scenes)
    masks = np.stack([world.mask(s.shape, s.size) for s in scenes])
    weights = 1.0 + cfg.foreground_weight * torch.from_numpy(masks).float()[:, None]
    opt = torch.optim.AdamW(vae.parameters(), lr=cfg.vae_lr)
    modules, generators = {"vae": vae}, {"rng": rng}
    start = ckpt.restore(resumed, modules, opt, generators) if resumed else 0
    vae.train()
    for step in (bar := _bar("vae", start, cfg.vae_steps)):
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
        log.append(f"vae,{step},{mse.item():.6f}")
        bar.set_postfix(mse=f"{mse.item():.4f}")
        if ckpt.due(step + 1, cfg.vae_steps):
            ckpt.save("vae", step + 1, modules, opt, generators, log=log)
    vae.eval()
    with torch.no_grad():
        latents = vae.encode(images).latent_dist.mean
    return float(1.0 / latents.std())


def train_denoiser(
    parts: dict[str, Any],
    cfg: TrainConfig,
    log: Log,
    ckpt: Checkpoints,
    resumed: dict[str, Any] | None,
) -> None:
    """Fit the text encoder and the U-Net together on the training captions (eps-prediction,
    Min-SNR weights, caption dropout for classifier-free guidance), from ``resumed`` (a
    saved state of this phase) if given."""
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
    modules = {"vae": vae, "unet": unet, "text_encoder": text_encoder}
    generators: dict[str, np.random.Generator | torch.Generator] = {"rng": rng, "gen": gen}
    start = ckpt.restore(resumed, modules, opt, generators) if resumed else 0
    unet.train()
    text_encoder.train()
    for step in (bar := _bar("denoiser", start, cfg.unet_steps)):
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
        pred = unet(noisy, t, text_encoder(ids)[0]).sample
        per_sample = ((pred - noise) ** 2).mean(dim=(1, 2, 3))
        loss = (weights[t] * per_sample).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        log.append(f"denoiser,{step},{loss.item():.6f}")
        bar.set_postfix(loss=f"{loss.item():.4f}")
        if ckpt.due(step + 1, cfg.unet_steps):
            ckpt.save("denoiser", step + 1, modules, opt, generators, log=log, scaling=scaling)
    unet.eval()
    text_encoder.eval()


def checkpoint_folder(out: Path) -> Path:
    """Where the training of ``out`` keeps its state: ``.<name>.checkpoints`` beside it."""
    return out.parent / f".{out.name}.checkpoints"


def train(
    out: Path, cfg: TrainConfig, command: str, every: int = CHECKPOINT_EVERY
) -> dict[str, Any]:
    """Train the toy model with ``cfg`` and save it as a diffusers folder at ``out`` (with its
    loss log and a record of ``command``, seed, code version and time); returns the record.
    The state is saved every ``every`` steps, and a training of the same settings and code
    that stopped continues from it."""
    identity = {"config": asdict(cfg), "code": code_version()}
    ckpt = Checkpoints(checkpoint_folder(out), identity, every)
    resumed = ckpt.load()
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=temporary_prefix(out), suffix=".tmp", dir=out.parent))
    try:
        record = _train_into(tmp, cfg, command, ckpt, resumed)
        if out.exists():
            shutil.rmtree(out)
        os.replace(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    ckpt.remove()
    return record


def _train_into(
    out: Path, cfg: TrainConfig, command: str, ckpt: Checkpoints, resumed: dict[str, Any] | None
) -> dict[str, Any]:
    parts = _parts(cfg.seed)
    log: Log = list(resumed["log"]) if resumed else []
    if resumed is None or resumed["phase"] == "vae":
        scaling = train_vae(parts["vae"], cfg, log, ckpt, resumed)
        resumed = None
    else:
        parts["vae"].load_state_dict(resumed["modules"]["vae"])
        parts["vae"].eval()
        scaling = float(resumed["scaling"])
    parts["vae"].register_to_config(scaling_factor=scaling)
    train_denoiser(parts, cfg, log, ckpt, resumed)
    (out / LOSS_LOG).write_text("\n".join(["phase,step,loss", *log]) + "\n")
    save_sd_folder(out, parts)
    record = {
        "model": "otpc toy model: Stable-Diffusion-1.x-shaped, trained on the toy world",
        "command": command,
        "config": asdict(cfg),
        "code_version": code_version(),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "machine": platform.machine(),
        "seconds": round(ckpt.seconds(), 1),
        "scaling_factor": scaling,
    }
    (out / RECORD).write_text(json.dumps(record, indent=2) + "\n")
    return record
