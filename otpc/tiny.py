"""The offline default model: a tiny SD-1.x-shaped pipeline with deterministic random weights.

It is saved as a standard diffusers folder (``model_index.json``, ``unet/``, ``vae/``,
``text_encoder/``, ``tokenizer/``, ``scheduler/``) and loaded with the same
``from_pretrained`` code that loads Stable Diffusion 1.5. Its images carry no meaning:
every result made with it says it comes from random weights.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

import torch

TINY_VERSION = "1"
TINY_SEED = 20251117


def _byte_alphabet() -> list[str]:
    """CLIP's reversible byte-to-unicode alphabet (the same 256 symbols CLIP's BPE uses)."""
    printable = (list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1))
                 + list(range(ord("®"), ord("ÿ") + 1)))
    codes = printable[:]
    extra = 0
    for byte in range(256):
        if byte not in printable:
            codes.append(256 + extra)
            extra += 1
    return [chr(c) for c in codes]


def write_tokenizer_files(folder: Path) -> None:
    """A character-level CLIP BPE vocabulary (no merges): every word splits into letters."""
    alphabet = _byte_alphabet()
    vocab_list = alphabet + [c + "</w>" for c in alphabet] + ["<|startoftext|>", "<|endoftext|>"]
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.json").write_text(json.dumps({tok: i for i, tok in enumerate(vocab_list)}))
    (folder / "merges.txt").write_text("#version: 0.2\n")


def build_tiny_pipeline(folder: Path) -> None:
    """Create the tiny pipeline's diffusers folder at ``folder`` (deterministic weights)."""
    from diffusers import AutoencoderKL, PNDMScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    with tempfile.TemporaryDirectory() as vocab_dir:
        write_tokenizer_files(Path(vocab_dir))
        tokenizer = CLIPTokenizer(os.path.join(vocab_dir, "vocab.json"),
                                  os.path.join(vocab_dir, "merges.txt"),
                                  pad_token="<|endoftext|>", model_max_length=77)
    torch.manual_seed(TINY_SEED)
    text_encoder = CLIPTextModel(CLIPTextConfig(
        vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=4, max_position_embeddings=77,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id))
    torch.manual_seed(TINY_SEED + 1)
    unet = UNet2DConditionModel(
        sample_size=16, in_channels=4, out_channels=4, layers_per_block=1,
        block_out_channels=(32, 64), down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D"), cross_attention_dim=32,
        attention_head_dim=8, norm_num_groups=32)
    torch.manual_seed(TINY_SEED + 2)
    vae = AutoencoderKL(
        in_channels=3, out_channels=3, latent_channels=4, block_out_channels=(32, 64, 64),
        down_block_types=("DownEncoderBlock2D",) * 3, up_block_types=("UpDecoderBlock2D",) * 3,
        layers_per_block=1, sample_size=64, norm_num_groups=32)
    scheduler = PNDMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                              num_train_timesteps=1000, skip_prk_steps=True, steps_offset=1,
                              set_alpha_to_one=False)
    pipe = StableDiffusionPipeline(vae=vae, text_encoder=text_encoder, tokenizer=tokenizer,
                                   unet=unet, scheduler=scheduler, safety_checker=None,
                                   feature_extractor=None, requires_safety_checker=False)
    pipe.save_pretrained(folder, safe_serialization=True)
    (folder / "OTPC_TINY.json").write_text(json.dumps(
        {"version": TINY_VERSION, "seed": TINY_SEED, "weights": "random (untrained)"}))


def tiny_model_dir(root: Path | None = None) -> Path:
    """The tiny pipeline's folder, built once (atomically) under otpc's cache."""
    base = root or Path(os.environ.get("OTPC_HOME", Path.home() / ".cache" / "otpc"))
    folder = base / "models" / f"tiny-v{TINY_VERSION}"
    if (folder / "OTPC_TINY.json").exists():
        return folder
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".tiny-", dir=folder.parent))
    try:
        build_tiny_pipeline(tmp)
        try:
            os.replace(tmp, folder)
        except OSError:
            if not (folder / "OTPC_TINY.json").exists():  # not a concurrent builder's win
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return folder
