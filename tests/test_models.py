"""Model presets and loading: the Hugging Face cache and offline mode, errors that say what
to do, prompt truncation, and a tiny SD-2-shaped model through otpc's renderer."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from diffusers import StableDiffusionPipeline

from otpc import embeddings
from otpc.errors import InputError
from otpc.models import PRESETS, ModelSpec, load_pipeline, pick_device, resolve
from otpc.params import RenderSettings
from otpc.render import Renderer
from otpc.tiny import tiny_model_dir

ROOT = Path(__file__).resolve().parents[1]
COMMIT = "0123456789abcdef0123456789abcdef01234567"

# Runs in a fresh interpreter, because huggingface_hub reads HF_HOME and HF_HUB_OFFLINE at import.
LOAD_BOTH = """
import json
from otpc.models import ModelSpec, load_pipeline
out = {}
pipe = load_pipeline(ModelSpec("otpc-test/tiny-sd2"))
out["cached"] = [type(pipe.pipe).__name__, pipe.resolved.revision, pipe.resolved.fingerprint]
for name in ("sd15", "flux-dev"):
    try:
        load_pipeline(ModelSpec(name))
    except RuntimeError as err:
        out[name] = str(err)
print("RESULT" + json.dumps(out))
"""


@pytest.fixture(scope="module")
def offline_hf(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    """An HF cache holding one model (a copy of tiny-sd2 as 'otpc-test/tiny-sd2' at a known
    commit) and nothing else, used by a fresh interpreter in offline mode."""
    home = tmp_path_factory.mktemp("hf_home")
    repo = home / "hub" / "models--otpc-test--tiny-sd2"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(COMMIT)
    shutil.copytree(
        tiny_model_dir(kind="tiny-sd2"),
        repo / "snapshots" / COMMIT,
        ignore=shutil.ignore_patterns("OTPC_TINY.json"),
    )
    env = {**os.environ, "HF_HOME": str(home), "HF_HUB_OFFLINE": "1"}
    env.pop("HF_HUB_CACHE", None)
    proc = subprocess.run(
        [sys.executable, "-c", LOAD_BOTH],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT")]
    assert proc.returncode == 0 and lines, proc.stderr[-3000:]
    return home, json.loads(lines[0][len("RESULT") :])


def test_cached_hub_model_loads_offline_at_its_commit(offline_hf: tuple[Path, dict]) -> None:
    kind, revision, fingerprint = offline_hf[1]["cached"]
    assert kind == "StableDiffusionPipeline"
    assert revision == COMMIT  # 'main' resolved to the commit actually loaded
    assert fingerprint == f"otpc-test/tiny-sd2@{COMMIT}#None:torch.float64:cpu"


def test_uncached_model_offline_says_which_and_how_to_fetch(offline_hf: tuple[Path, dict]) -> None:
    home, result = offline_hf
    message = result["sd15"]
    repo = PRESETS["sd15"].repo
    assert f"offline mode is on and model '{repo}' (revision main) is not in the cache" in message
    assert f"P.download('{repo}', revision='main')" in message
    assert str(home / "hub") in message
    assert "gated" not in message


def test_gated_model_says_to_accept_the_licence_and_set_a_token(offline_hf) -> None:
    message = offline_hf[1]["flux-dev"]
    assert "'black-forest-labs/FLUX.1-dev' (revision main) is not in the cache" in message
    assert "black-forest-labs/FLUX.1-dev is gated: accept its licence at" in message
    assert "https://huggingface.co/black-forest-labs/FLUX.1-dev" in message
    assert "HF_TOKEN" in message


def test_unknown_preset_is_an_error_listing_presets() -> None:
    with pytest.raises(InputError, match=r"'sd4' is not a preset.*sd15, sd21, sdxl, sd3-medium"):
        resolve(ModelSpec("sd4"))
    with pytest.raises(ValueError, match="unknown tiny model 'tiny-sd4'"):
        tiny_model_dir(kind="tiny-sd4")


BF16 = ("sd3-medium", "sd35-medium", "sd35-large", "flux-dev", "flux-schnell")
HALF = {"sd15": "float16", "sd21": "float16", "sdxl": "float16"} | dict.fromkeys(BF16, "bfloat16")


@pytest.mark.parametrize("name", sorted(HALF))
def test_presets_run_half_precision_on_cuda_and_float64_on_cpu(name: str) -> None:
    cuda = resolve(ModelSpec(name, device="cuda"))
    assert (cuda.source, cuda.revision) == (PRESETS[name].repo, "main")
    assert cuda.dtype == getattr(torch, HALF[name]) and not cuda.random_weights
    assert resolve(ModelSpec(name, device="cpu")).dtype == torch.float64
    assert resolve(ModelSpec(name, device="mps")).dtype == torch.float32
    assert resolve(ModelSpec(name, dtype="float32", device="cpu")).dtype == torch.float32
    pinned = resolve(ModelSpec(name, revision="abc123", dtype="bfloat16", device="cuda"))
    assert (pinned.revision, pinned.dtype) == ("abc123", torch.bfloat16)


@pytest.mark.parametrize("name", ["tiny", "tiny-sd2", "tiny-sdxl", "tiny-sd3", "tiny-flux"])
def test_tiny_models_are_local_float32_on_cuda_random_weights(name: str) -> None:
    res = resolve(ModelSpec(name, device="cuda"))
    assert res.dtype == torch.float32 and res.random_weights
    assert (Path(res.source) / "model_index.json").is_file()


def test_device_order_cuda_mps_cpu(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert pick_device() == torch.device("cuda")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert pick_device() == torch.device("mps")
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    assert pick_device() == torch.device("cpu")
    assert pick_device("cuda:1") == torch.device("cuda:1")


def words(n: int) -> str:
    """``n`` one-letter words: exactly one token each with the tiny tokenizer."""
    return " ".join("abcdefghijklmnopqrstuvwxyz"[i % 26] for i in range(n))


def test_long_prompts_are_truncated_as_the_pipeline_does_and_recorded(tiny, tmp_path: Path) -> None:
    fits, over, long = words(75), words(76), words(120)
    out = {e.prompt: e for e in embeddings.encode(tiny, [fits, over, long])}
    assert (out[fits].n_tokens, out[fits].truncated) == (77, False)
    assert (out[over].n_tokens, out[over].truncated) == (78, True)
    assert (out[long].n_tokens, out[long].truncated) == (122, True)
    # what the U-Net sees: the first 75 tokens between the start and end tokens
    torch.testing.assert_close(out[long].embeds, out[fits].embeds, rtol=0, atol=0)
    direct, _ = tiny.pipe.encode_prompt(long, torch.device("cpu"), 1, False)
    torch.testing.assert_close(out[long].embeds, direct[0].float(), rtol=0, atol=0)
    embeddings.save(tmp_path, out[long])
    back = embeddings.load(tmp_path, out[long].key)
    assert (back.n_tokens, back.truncated) == (122, True)


def test_sd2_shaped_model_renders_like_its_pipeline() -> None:
    model = load_pipeline(ModelSpec("tiny-sd2"))
    pipe = model.pipe
    assert pipe.scheduler.config.prediction_type == "v_prediction"
    assert pipe.tokenizer.pad_token == "!"
    emb = embeddings.encode(model, ["a lighthouse on a cliff at dusk"])[0]
    assert emb.embeds.shape == (77, 48) and emb.pooled is None
    settings = RenderSettings(steps=3, guidance=6.0)
    renderer = Renderer(model, settings)
    latents = renderer.initial_latents(5)
    ours = renderer.render_batch(emb.embeds[None], latents).astype(np.float64)
    assert isinstance(pipe, StableDiffusionPipeline)
    ref = pipe(
        prompt_embeds=emb.embeds[None],
        latents=latents.to(pipe.unet.dtype),
        output_type="np",
        num_inference_steps=settings.steps,
        guidance_scale=settings.guidance,
    ).images
    assert np.abs(ours - ref.astype(np.float64) * 255).max() <= 0.51


def test_local_folder_fingerprint_follows_its_files(tiny, tmp_path) -> None:
    """Re-exported weights at the same path must not reuse frames rendered from the old ones."""
    folder = tmp_path / "model"
    tiny.pipe.save_pretrained(folder)
    before = resolve(ModelSpec(str(folder))).fingerprint
    assert resolve(ModelSpec(str(folder))).fingerprint == before
    copy = tmp_path / "elsewhere" / "model"
    shutil.copytree(folder, copy)
    assert resolve(ModelSpec(str(copy))).fingerprint == before  # same files, any path
    (folder / "README.md").write_text("a model card, and a training record beside the parts")
    assert resolve(ModelSpec(str(folder))).fingerprint == before  # from_pretrained reads neither
    shutil.move(folder / "scheduler/scheduler_config.json", folder / "scheduler_config.json")
    (folder / "scheduler").rmdir()  # a part diffusers reads from the top level: all files count
    moved = resolve(ModelSpec(str(folder))).fingerprint
    (folder / "README.md").write_text("another model card")
    assert resolve(ModelSpec(str(folder))).fingerprint != moved
    (folder / "scheduler").mkdir()
    shutil.move(folder / "scheduler_config.json", folder / "scheduler/scheduler_config.json")
    assert resolve(ModelSpec(str(folder))).fingerprint == before
    config = folder / "scheduler/scheduler_config.json"
    config.write_text(config.read_text().replace('"steps_offset": 1', '"steps_offset": 0'))
    assert resolve(ModelSpec(str(folder))).fingerprint != before


def test_tiny_fingerprint_names_the_preset_not_its_folder() -> None:
    """The tiny folder's name carries a hash of the builder's code; frame keys must change
    only when the weights do."""
    res = resolve(ModelSpec("tiny"))
    assert Path(res.source).name != "tiny"
    assert res.fingerprint.startswith(f"tiny@None#{res.stamp}:")
