"""Render speed: diffusers' StableDiffusionPipeline against otpc's Renderer, one process.

The same interpolation paths (between prompt embeddings under a permutation coupling, every
frame of a path from the same seeded noise) are rendered on one device by

  (a) StableDiffusionPipeline, one frame per call;
  (b) the same pipeline, all frames of a path per call (a ``prompt_embeds`` batch), with a
      channels-last ``torch.compile``'d U-Net with ``--compile`` (off by default: compiling
      on a CPU is slow);
  (c) otpc's Renderer through ``render_missing`` into an empty frame cache (frames written
      as PNG files: (a) and (b) only return images, so (c) pays for its disk writes), its
      U-Net compiled too with ``--compile``.

It prints s/image for each, the ratios (a)/(c) and (b)/(c), (c)'s share of the compute floor
(FLOPs counted with FlopCounterMode on one U-Net forward and one VAE decode, peak from a
large matmul measured in the same run and dtype), and peak GPU memory on CUDA.

  python benchmarks/render.py --arch tiny --device cpu --steps 2 --frames 3 --paths 2
  python benchmarks/render.py --arch sd15 --device cuda --dtype float16 --compile

Besides torch it needs only diffusers, transformers and what otpc.render imports (no POT).
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

from otpc.embeddings import encode
from otpc.frame_cache import FrameCache
from otpc.models import DTYPES, LoadedModel, ModelSpec, Resolved, load_pipeline, pick_device
from otpc.params import RenderSettings
from otpc.render import FrameJob, Renderer, initial_latents, render_missing

SD15 = json.loads((Path(__file__).parent / "sd15_architecture.json").read_text())


def build_sd15(device: torch.device, dtype: torch.dtype):
    """An SD-1.5-shaped StableDiffusionPipeline with random weights (no download).

    The text encoder is a one-layer CLIP with SD 1.5's width (768): the benchmark feeds
    embeddings directly, so only its output shape matters.
    """
    from diffusers import (
        AutoencoderKL,
        PNDMScheduler,
        StableDiffusionPipeline,
        UNet2DConditionModel,
    )
    from transformers import CLIPTextModel

    from otpc.tiny import clip_text_config, clip_tokenizer

    tokenizer = clip_tokenizer()
    torch.manual_seed(0)
    with torch.device(device):
        unet = UNet2DConditionModel(**SD15["unet"]).to(dtype)
        vae = AutoencoderKL(**SD15["vae"]).to(dtype)
        config = clip_text_config(tokenizer, 768, layers=1, heads=12, intermediate_size=3072)
        text_encoder = CLIPTextModel(config).to(dtype)
    pipe = StableDiffusionPipeline(
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        unet=unet,
        scheduler=PNDMScheduler(**SD15["scheduler"]),
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    pipe.set_progress_bar_config(disable=True)
    return LoadedModel(pipe, Resolved("random-sd15-architecture", None, device, dtype, True))


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(device: torch.device, fn: Callable[[], object]) -> tuple[float, object]:
    """Wall seconds of ``fn()`` (device work included), and its result."""
    sync(device)
    start = time.perf_counter()
    out = fn()
    sync(device)
    return time.perf_counter() - start, out


def latent_shape(pipe, height: int, width: int) -> tuple[int, int, int, int]:
    """One image's latent shape (1, C, h, w)."""
    scale = 2 ** (len(pipe.vae.config.block_out_channels) - 1)
    return 1, pipe.unet.config.in_channels, height // scale, width // scale


@torch.no_grad()
def count_flops(model: LoadedModel, height: int, width: int) -> tuple[float, float]:
    """FLOPs of one U-Net forward (one sample) and of one VAE decode (one image).

    Attention runs on SDPA's math backend while counting, so it is counted on every device.
    """
    pipe, dev, dtype = model.pipe, model.resolved.device, model.resolved.dtype
    lat = torch.randn(latent_shape(pipe, height, width), device=dev, dtype=dtype)
    cond = torch.randn(1, 77, pipe.unet.config.cross_attention_dim, device=dev, dtype=dtype)
    t = torch.tensor(500, device=dev)
    with sdpa_kernel(SDPBackend.MATH):
        with FlopCounterMode(display=False) as unet_count:
            pipe.unet(lat, t, encoder_hidden_states=cond, return_dict=False)
        with FlopCounterMode(display=False) as vae_count:
            pipe.vae.decode(lat, return_dict=False)
    return float(unet_count.get_total_flops()), float(vae_count.get_total_flops())


@torch.no_grad()
def matmul_peak(device: torch.device, dtype: torch.dtype) -> float:
    """Measured FLOP/s of a large square matmul in ``dtype`` on ``device``."""
    n, reps = (8192, 20) if device.type == "cuda" else (1024, 5)
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    a @ b
    seconds, _ = timed(device, lambda: [a @ b for _ in range(reps)])
    return 2 * n**3 * reps / seconds


def make_paths(model: LoadedModel, n_paths: int, frames: int, seed: int) -> list[FrameJob]:
    """Every frame of ``n_paths`` paths E(t) = (1 - t) A + t B[sigma] between prompt pairs,
    sigma a seeded random permutation (any coupling costs the same to render)."""
    jobs = []
    t = torch.linspace(0, 1, frames).view(-1, 1, 1)
    for i in range(n_paths):
        a, b = encode(
            model, [f"a photo of a red cat number {i}", f"an oil painting of a house {i}"]
        )
        sigma = torch.randperm(b.embeds.shape[0], generator=torch.Generator().manual_seed(seed + i))
        path = (1 - t) * a.embeds + t * b.embeds[sigma]
        jobs += [FrameJob(frame, seed + i) for frame in path]
    return jobs


def peak_memory(device: torch.device) -> str:
    if device.type != "cuda":
        return ""
    return f", peak GPU memory {torch.cuda.max_memory_allocated(device) / 2**30:.2f} GiB"


def reset_memory(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--arch", choices=["tiny", "sd15"], default="tiny")
    ap.add_argument("--device", default="auto")
    ap.add_argument(
        "--dtype",
        choices=["auto", *DTYPES],
        default="auto",
        help="auto: float16 on CUDA, float32 elsewhere",
    )
    ap.add_argument("--size", type=int, default=None, help="image side (default: the model's)")
    ap.add_argument("--steps", type=int, default=50)
    ap.add_argument("--guidance", type=float, default=7.5)
    ap.add_argument("--frames", type=int, default=16, help="frames per path")
    ap.add_argument("--paths", type=int, default=4)
    ap.add_argument("--batch-size", type=int, default=32, help="(c)'s frames per batch")
    ap.add_argument("--decode-batch-size", type=int, default=8)
    ap.add_argument(
        "--a-frames",
        type=int,
        default=0,
        help="(a) renders only the first N frames (0: all); s/image is per frame",
    )
    ap.add_argument(
        "--compile",
        action=argparse.BooleanOptionalAction,
        default=False,
        help="torch.compile the U-Net in (b) and (c) (slow to compile on a CPU)",
    )
    ap.add_argument("--compile-mode", default="default")
    ap.add_argument("--threads", type=int, default=0, help="CPU threads for torch (0: default)")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    if args.threads:
        torch.set_num_threads(args.threads)
    device = pick_device(args.device)
    dtype_name = (
        args.dtype if args.dtype != "auto" else ("float16" if device.type == "cuda" else "float32")
    )
    dtype = DTYPES[dtype_name]
    if args.arch == "sd15":
        model = build_sd15(device, dtype)
    else:
        model = load_pipeline(ModelSpec("tiny", dtype=dtype_name, device=str(device)))
    pipe = model.pipe
    scale = 2 ** (len(pipe.vae.config.block_out_channels) - 1)
    size = args.size or pipe.unet.config.sample_size * scale
    jobs = make_paths(model, args.paths, args.frames, args.seed)
    n = len(jobs)
    n_a = min(args.a_frames or n, n)
    cfg = args.guidance > 1.0
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    print(
        f"device {device} ({name}), "
        f"arch {args.arch}, {dtype_name}, {size}x{size}, {args.steps} steps, guidance "
        f"{args.guidance}, {args.paths} paths x {args.frames} frames = {n} images, "
        f"batch {args.batch_size}, compile {args.compile}, torch {torch.__version__}"
    )

    unet_flops, vae_flops = count_flops(model, size, size)
    peak = matmul_peak(device, dtype)
    unet_work = args.steps * (2 if cfg else 1) * unet_flops
    floor_unet, floor_all = unet_work / peak, (unet_work + vae_flops) / peak
    print(
        f"FLOPs: U-Net forward {unet_flops / 1e9:.3f} GFLOP/sample, VAE decode "
        f"{vae_flops / 1e9:.3f} GFLOP/image; {dtype_name} matmul {peak / 1e12:.2f} TFLOP/s"
    )
    print(f"compute floor: {floor_unet:.4f} s/image (U-Net), {floor_all:.4f} s/image (U-Net + VAE)")

    neg = pipe.encode_prompt("", device, 1, False)[0]
    lats = [
        initial_latents(latent_shape(pipe, size, size), job.latent_seed).to(device, dtype)
        for job in jobs
    ]
    embeds = [job.embedding.to(device, dtype) for job in jobs]

    def pipeline(first: int, count: int) -> list[np.ndarray]:
        out = pipe(
            prompt_embeds=torch.stack(embeds[first : first + count]),
            negative_prompt_embeds=neg.expand(count, -1, -1),
            latents=torch.cat(lats[first : first + count]),
            num_inference_steps=args.steps,
            guidance_scale=args.guidance,
            height=size,
            width=size,
            output_type="pil",
        )
        return [np.asarray(image) for image in out.images]

    # (a) one frame per call
    pipeline(0, 1)
    reset_memory(device)
    seconds, images_a = timed(device, lambda: [pipeline(i, 1)[0] for i in range(n_a)])
    s_a = seconds / n_a
    print(f"(a) pipeline, 1 frame/call: {s_a:.4f} s/image ({n_a} images){peak_memory(device)}")

    # (b) one call per path, optionally with a compiled channels-last U-Net
    base_unet = pipe.unet
    if args.compile:
        pipe.unet = torch.compile(
            base_unet.to(memory_format=torch.channels_last), mode=args.compile_mode
        )
    warm, _ = timed(device, lambda: pipeline(0, args.frames))
    reset_memory(device)
    seconds, images_b = timed(
        device,
        lambda: [im for p in range(args.paths) for im in pipeline(p * args.frames, args.frames)],
    )
    s_b = seconds / n
    print(
        f"(b) pipeline, {args.frames} frames/call{', compiled U-Net' if args.compile else ''}: "
        f"{s_b:.4f} s/image ({n} images; warm-up {warm:.1f} s){peak_memory(device)}"
    )
    pipe.unet = base_unet
    torch._dynamo.reset()

    # (c) otpc's Renderer into an empty frame cache
    settings = RenderSettings(
        steps=args.steps,
        guidance=args.guidance,
        height=size,
        width=size,
        batch_size=args.batch_size,
        decode_batch_size=args.decode_batch_size,
        compile=args.compile,
        compile_mode=args.compile_mode,
    )
    renderer = Renderer(model, settings)
    warm, _ = timed(device, lambda: renderer.render(jobs[: args.batch_size]))
    reset_memory(device)
    with tempfile.TemporaryDirectory() as tmp:
        cache = FrameCache(Path(tmp))
        seconds, (keys, rendered) = timed(
            device, lambda: render_missing(renderer, cache, jobs, desc="(c)")
        )
        assert rendered == n, (rendered, n)
        images_c = [cache.get(k) for k in keys]
    s_c = seconds / n
    print(
        f"(c) otpc Renderer, batch {args.batch_size}: {s_c:.4f} s/image ({n} images; "
        f"warm-up {warm:.1f} s){peak_memory(device)}"
    )

    for name, images in (("b", images_b), ("c", images_c)):
        diff = np.abs(np.stack(images[:n_a]).astype(int) - np.stack(images_a).astype(int))
        print(f"pixels ({name}) vs (a): max |diff| {diff.max()}, mean {diff.mean():.4f}")
    print(f"ratio (a)/(c): {s_a / s_c:.3f}")
    print(f"ratio (b)/(c): {s_b / s_c:.3f}")
    print(
        f"(c) share of compute floor: {floor_unet / s_c:.1%} (U-Net), "
        f"{floor_all / s_c:.1%} (U-Net + VAE)"
    )


if __name__ == "__main__":
    main()
