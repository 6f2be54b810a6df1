"""Render speed: the model's diffusers pipeline against otpc's Renderer, one process.

The same interpolation paths (between prompt embeddings under a permutation coupling, every
frame of a path from the same seeded noise; pooled vectors moved linearly) are rendered on
one device by

  (a) the pipeline (StableDiffusionPipeline, StableDiffusion3Pipeline or FluxPipeline), one
      frame per call;
  (b) the same pipeline, all frames of a path per call (a ``prompt_embeds`` batch), with a
      channels-last ``torch.compile``'d denoiser with ``--compile`` (off by default:
      compiling on a CPU is slow);
  (c) otpc's Renderer through ``render_missing`` into an empty frame cache (frames written
      as PNG files: (a) and (b) only return images, so (c) pays for its disk writes), its
      denoiser compiled too with ``--compile``.

It prints s/image for each, the ratios (a)/(c) and (b)/(c), (c)'s share of the compute floor
(FLOPs counted with FlopCounterMode on one denoiser forward and one VAE decode, peak from a
large matmul measured in the same run and dtype), and peak GPU memory on CUDA.

Architectures: the offline tiny models (``tiny``, ``tiny-sd3``, ``tiny-flux``), and with
random weights the shapes of SD 1.5 (``sd15``), SD 3.5 Medium (``sd3``) and FLUX.1 [dev]
(``flux``: 12B parameters, 24 GB in bf16; for a GPU). Their text encoders are one layer of
the real widths: the benchmark feeds embeddings, so only their output shapes matter.
``--layers N`` keeps N transformer blocks (FLUX: N double and 2N single), for a smaller
machine: per-block cost and the loop's overhead, not the model's speed.

  python benchmarks/render.py --arch tiny --device cpu --steps 2 --frames 3 --paths 2
  python benchmarks/render.py --arch sd15 --device cuda --dtype float16 --compile
  python benchmarks/render.py --arch flux --device cuda --dtype bfloat16 --steps 28

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
from otpc.families import Conditioning, Family
from otpc.families.flux import FluxFamily, pack
from otpc.frame_cache import FrameCache
from otpc.models import DTYPES, LoadedModel, ModelSpec, Resolved, load_pipeline, pick_device
from otpc.params import RenderSettings
from otpc.render import FrameJob, Renderer, render_missing

HERE = Path(__file__).parent
SD15 = json.loads((HERE / "sd15_architecture.json").read_text())
TRANSFORMERS = {"sd3": "sd35_architecture.json", "flux": "flux_architecture.json"}
TINY = ("tiny", "tiny-sd3", "tiny-flux")


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

    from otpc.sd_parts import clip_text_config, clip_tokenizer

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


def build_transformer_model(
    arch: str, device: torch.device, dtype: torch.dtype, layers: int | None
) -> LoadedModel:
    """An SD-3.5-Medium- or FLUX.1-dev-shaped pipeline with random weights (no download);
    ``layers``: keep that many transformer blocks (FLUX: double, and twice as many single)."""
    from diffusers import (
        AutoencoderKL,
        FlowMatchEulerDiscreteScheduler,
        FluxPipeline,
        FluxTransformer2DModel,
        SD3Transformer2DModel,
        StableDiffusion3Pipeline,
    )
    from transformers import CLIPTextModel, CLIPTextModelWithProjection, T5EncoderModel

    from otpc.sd_parts import clip_text_config, clip_tokenizer
    from otpc.t5_vocab import t5_tokenizer
    from otpc.tiny import t5_config

    spec = json.loads((HERE / TRANSFORMERS[arch]).read_text())
    shape = dict(spec["transformer"])
    if layers is not None:
        shape["num_layers"] = layers
        if arch == "flux":
            shape["num_single_layers"] = 2 * layers
        else:
            shape["dual_attention_layers"] = [
                i for i in shape["dual_attention_layers"] if i < layers
            ]
    text = spec["text"]
    t5_tok = t5_tokenizer(text["t5_rows"])
    torch.manual_seed(0)
    with torch.device(device):
        cls = FluxTransformer2DModel if arch == "flux" else SD3Transformer2DModel
        transformer = cls(**shape).to(dtype)
        vae = AutoencoderKL(**spec["vae"]).to(dtype)
        t5_shape = t5_config(t5_tok, text["t5_width"], layers=1, heads=64, d_ff=256)
        t5 = T5EncoderModel(t5_shape).to(dtype)
        tokenizers = [clip_tokenizer(), clip_tokenizer(pad_token="!")]
        clips = []
        for tok, width in zip(tokenizers, text["clip_widths"], strict=False):
            config = clip_text_config(tok, width, layers=1, heads=width // 64)
            if arch == "flux":
                clips.append(CLIPTextModel(config).to(dtype))
            else:
                config.projection_dim = width
                clips.append(CLIPTextModelWithProjection(config).to(dtype))
    scheduler = FlowMatchEulerDiscreteScheduler(**spec["scheduler"])
    if arch == "flux":
        pipe = FluxPipeline(
            scheduler=scheduler,
            vae=vae,
            text_encoder=clips[0],
            tokenizer=tokenizers[0],
            text_encoder_2=t5,
            tokenizer_2=t5_tok,
            transformer=transformer,
        )
    else:
        pipe = StableDiffusion3Pipeline(
            transformer=transformer,
            scheduler=scheduler,
            vae=vae,
            text_encoder=clips[0],
            tokenizer=tokenizers[0],
            text_encoder_2=clips[1],
            tokenizer_2=tokenizers[1],
            text_encoder_3=t5,
            tokenizer_3=t5_tok,
        )
    pipe.set_progress_bar_config(disable=True)
    label = f"random-{arch}-architecture" + (f"-{layers}-layers" if layers else "")
    return LoadedModel(pipe, Resolved(label, None, device, dtype, True))


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


@torch.no_grad()
def count_flops(renderer: Renderer) -> tuple[float, float]:
    """FLOPs of one denoiser forward (one sample, the unconditional conditioning) and of one
    VAE decode (one image). Attention runs on SDPA's math backend while counting, so it is
    counted on every device."""
    family, dev, dtype = renderer.family, renderer.res.device, renderer.res.dtype
    scheduler = renderer.scheduler()
    latents = family.start(renderer.initial_latents(0).to(dev, dtype), scheduler)
    t = scheduler.timesteps[0]
    with sdpa_kernel(SDPBackend.MATH):
        with FlopCounterMode(display=False) as denoiser_count:
            family.predict(scheduler, latents, t, renderer.negative, renderer.guidance)
        with FlopCounterMode(display=False) as vae_count:
            family.decode(latents)
    return float(denoiser_count.get_total_flops()), float(vae_count.get_total_flops())


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
    sigma a seeded random permutation (any coupling costs the same to render); pooled
    vectors, where the model has them, move linearly."""
    jobs = []
    t = torch.linspace(0, 1, frames).view(-1, 1, 1)
    for i in range(n_paths):
        a, b = encode(
            model, [f"a photo of a red cat number {i}", f"an oil painting of a house {i}"]
        )
        sigma = torch.randperm(b.embeds.shape[0], generator=torch.Generator().manual_seed(seed + i))
        path = (1 - t) * a.embeds + t * b.embeds[sigma]
        pooled = None
        if a.pooled is not None and b.pooled is not None:
            pooled = (1 - t[:, :, 0]) * a.pooled + t[:, :, 0] * b.pooled
        jobs += [
            FrameJob(frame, seed + i, None if pooled is None else pooled[k])
            for k, frame in enumerate(path)
        ]
    return jobs


def pipeline_kwargs(
    family: Family, cond: Conditioning, negative: Conditioning, noise: torch.Tensor
) -> dict[str, torch.Tensor]:
    """The pipeline's arguments for these rows and starting noise: FluxPipeline takes its
    latents packed and has no CFG; the others take the unconditional rows as the negative."""
    kwargs = {"prompt_embeds": cond.rows}
    if cond.pooled is not None:
        kwargs["pooled_prompt_embeds"] = cond.pooled
    if isinstance(family, FluxFamily):
        return kwargs | {"latents": pack(noise)}
    kwargs |= {"latents": noise, "negative_prompt_embeds": negative.rows.expand_as(cond.rows)}
    if negative.pooled is not None and cond.pooled is not None:
        kwargs["negative_pooled_prompt_embeds"] = negative.pooled.expand_as(cond.pooled)
    return kwargs


def peak_memory(device: torch.device) -> str:
    if device.type != "cuda":
        return ""
    return f", peak GPU memory {torch.cuda.max_memory_allocated(device) / 2**30:.2f} GiB"


def reset_memory(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


def build(args: argparse.Namespace, device: torch.device, dtype_name: str) -> LoadedModel:
    """The model ``--arch`` names, on ``device`` in ``dtype_name``."""
    dtype = DTYPES[dtype_name]
    if args.arch == "sd15":
        return build_sd15(device, dtype)
    if args.arch in TRANSFORMERS:
        return build_transformer_model(args.arch, device, dtype, args.layers)
    return load_pipeline(ModelSpec(args.arch, dtype=dtype_name, device=str(device)))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--arch", choices=[*TINY, "sd15", *TRANSFORMERS], default="tiny")
    ap.add_argument("--layers", type=int, default=None, help="sd3/flux: keep N blocks")
    ap.add_argument("--device", default="auto")
    ap.add_argument(
        "--dtype",
        choices=["auto", *DTYPES],
        default="auto",
        help="auto: float16 on CUDA (bfloat16 for sd3, flux), float32 elsewhere",
    )
    ap.add_argument("--size", type=int, default=None, help="image side (default: the model's)")
    ap.add_argument("--steps", type=int, default=None, help="default: the model's")
    ap.add_argument("--guidance", type=float, default=None, help="default: the model's")
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
        help="torch.compile the denoiser in (b) and (c) (slow to compile on a CPU)",
    )
    ap.add_argument("--compile-mode", default="default")
    ap.add_argument("--threads", type=int, default=0, help="CPU threads for torch (0: default)")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    if args.threads:
        torch.set_num_threads(args.threads)
    device = pick_device(args.device)
    half = "bfloat16" if args.arch in TRANSFORMERS else "float16"
    dtype_name = (
        args.dtype if args.dtype != "auto" else (half if device.type == "cuda" else "float32")
    )
    model = build(args, device, dtype_name)
    pipe = model.pipe
    settings = RenderSettings(
        steps=args.steps,
        guidance=args.guidance,
        height=args.size,
        width=args.size,
        batch_size=args.batch_size,
        decode_batch_size=args.decode_batch_size,
        compile=args.compile,
        compile_mode=args.compile_mode,
    )
    jobs = make_paths(model, args.paths, args.frames, args.seed)
    renderer = Renderer(model, settings.model_copy(update={"compile": False}))
    family, size, steps, guidance = (
        renderer.family,
        renderer.height,
        renderer.steps,
        renderer.guidance,
    )
    n = len(jobs)
    n_a = min(args.a_frames or n, n)
    passes = 2 if family.uses_cfg(guidance) else 1
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    print(
        f"device {device} ({name}), arch {args.arch} ({family.name}), {dtype_name}, "
        f"{size}x{size}, {steps} steps, guidance {guidance}, {args.paths} paths x "
        f"{args.frames} frames = {n} images, batch {args.batch_size}, compile {args.compile}, "
        f"torch {torch.__version__}"
    )

    denoiser_flops, vae_flops = count_flops(renderer)
    peak = matmul_peak(device, model.resolved.dtype)
    work = steps * passes * denoiser_flops
    floor_denoiser, floor_all = work / peak, (work + vae_flops) / peak
    print(
        f"FLOPs: denoiser forward {denoiser_flops / 1e9:.3f} GFLOP/sample, VAE decode "
        f"{vae_flops / 1e9:.3f} GFLOP/image; {dtype_name} matmul {peak / 1e12:.2f} TFLOP/s"
    )
    print(
        f"compute floor: {floor_denoiser:.4f} s/image (denoiser), "
        f"{floor_all:.4f} s/image (denoiser + VAE)"
    )

    dev, dtype = model.resolved.device, model.resolved.dtype
    noise = [renderer.initial_latents(job.latent_seed).to(dev, dtype) for job in jobs]
    rows = [job.embedding.to(dev, dtype) for job in jobs]
    pooled = [None if job.pooled is None else job.pooled.to(dev, dtype) for job in jobs]

    def pipeline(first: int, count: int) -> list[np.ndarray]:
        part = slice(first, first + count)
        cond = Conditioning(
            torch.stack(rows[part]), None if pooled[0] is None else torch.stack(pooled[part])
        )
        out = pipe(
            **pipeline_kwargs(family, cond, renderer.negative, torch.cat(noise[part])),
            num_inference_steps=steps,
            guidance_scale=guidance,
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

    # (b) one call per path, optionally with a compiled channels-last denoiser
    part = family.denoiser_part
    base = getattr(pipe, part)
    if args.compile:
        setattr(
            pipe,
            part,
            torch.compile(base.to(memory_format=torch.channels_last), mode=args.compile_mode),
        )
    warm, _ = timed(device, lambda: pipeline(0, args.frames))
    reset_memory(device)
    seconds, images_b = timed(
        device,
        lambda: [im for p in range(args.paths) for im in pipeline(p * args.frames, args.frames)],
    )
    s_b = seconds / n
    print(
        f"(b) pipeline, {args.frames} frames/call{', compiled denoiser' if args.compile else ''}: "
        f"{s_b:.4f} s/image ({n} images; warm-up {warm:.1f} s){peak_memory(device)}"
    )
    setattr(pipe, part, base)
    torch._dynamo.reset()

    # (c) otpc's Renderer into an empty frame cache
    renderer = Renderer(model, settings)
    renderer.free_text_encoders()  # as the render stage does
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

    for label, images in (("b", images_b), ("c", images_c)):
        diff = np.abs(np.stack(images[:n_a]).astype(int) - np.stack(images_a).astype(int))
        print(f"pixels ({label}) vs (a): max |diff| {diff.max()}, mean {diff.mean():.4f}")
    print(f"ratio (a)/(c): {s_a / s_c:.3f}")
    print(f"ratio (b)/(c): {s_b / s_c:.3f}")
    print(
        f"(c) share of compute floor: {floor_denoiser / s_c:.1%} (denoiser), "
        f"{floor_all / s_c:.1%} (denoiser + VAE)"
    )


if __name__ == "__main__":
    main()
