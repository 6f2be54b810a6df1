"""The trained toy model otpc ships: a standard Stable-Diffusion-1.x folder that loads like
any other, draws what its captions say, and is remade by one command; and the toy world's
prompt pairs the demo study runs on."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner
from diffusers import (
    AutoencoderKL,
    DDIMScheduler,
    StableDiffusionPipeline,
    UNet2DConditionModel,
)
from transformers import CLIPTextModel, CLIPTokenizer

from otpc.cli import main
from otpc.embeddings import encode
from otpc.models import describe
from otpc.params import RenderSettings
from otpc.render import FrameJob, Renderer
from otpc.toy import MODEL_DIR, world
from otpc.toy.config import TrainConfig
from otpc.toy.detector import detect
from otpc.toy.pairs import ATTRIBUTES, FULL_TEMPLATES, shared, toy_pairs
from otpc.toy.train import LOSS_LOG, RECORD, code_version


def test_the_toy_folder_is_stable_diffusion_1_shaped_and_loads_with_the_standard_loader(
    toy,
) -> None:
    pipe = toy.pipe
    assert type(pipe) is StableDiffusionPipeline
    assert isinstance(pipe.text_encoder, CLIPTextModel)
    assert isinstance(pipe.unet, UNet2DConditionModel)
    assert isinstance(pipe.vae, AutoencoderKL) and isinstance(pipe.scheduler, DDIMScheduler)
    assert isinstance(pipe.tokenizer, CLIPTokenizer) and len(pipe.tokenizer) == 49408
    assert pipe.tokenizer.model_max_length == 77
    assert pipe.tokenizer.pad_token == pipe.tokenizer.eos_token == "<|endoftext|>"
    assert pipe.unet.config.cross_attention_dim == pipe.text_encoder.config.hidden_size
    assert not toy.resolved.random_weights
    assert "not Stable Diffusion" in describe(toy.resolved)
    # diffusers alone loads it too, and its own pipeline draws an image of the world's size
    plain = StableDiffusionPipeline.from_pretrained(MODEL_DIR, safety_checker=None)
    image = plain("a large red circle", num_inference_steps=2, output_type="np").images[0]
    assert image.shape == (world.SIZE, world.SIZE, 3)


def test_the_weights_come_with_their_record() -> None:
    record = json.loads((MODEL_DIR / RECORD).read_text())
    assert record["command"].startswith("otpc toy train")
    assert {"seed", "vae_steps", "unet_steps"} <= set(record["config"])
    # the record names the code at hand: code that decides the weights changed means retrain
    # (or show, as for a move of code, that it trains the same bytes) and update the record
    assert record["code_version"] == code_version()
    assert record["quality"]["captions"] >= 200
    assert record["quality"]["morphing"]["visible"] >= 60  # the floor on paths
    log = (MODEL_DIR / LOSS_LOG).read_text().splitlines()
    assert log[0] == "phase,step,loss"
    steps = record["config"]["vae_steps"] + record["config"]["unet_steps"]
    assert len(log) == 1 + steps
    weights = sum(p.stat().st_size for p in MODEL_DIR.rglob("*.safetensors"))
    assert weights <= 25 * 2**20


def test_the_toy_model_draws_what_held_out_captions_say(toy) -> None:
    """On captions of the held-out split (phrasing or colour-shape combination never seen
    in training), the detector reads every attribute back from most images (chance: 1 in 3,
    1 in 8, 1 in 3, 1 in 3): the model draws what it is told. (The benchmark measures every
    attribute on 300 captions, and the morphing of paths.)"""
    scenes = world.scenes(12, 5, "test")
    renderer = Renderer(toy, RenderSettings(steps=6, guidance=1.0, batch_size=12))
    embeds = encode(toy, [world.caption(s) for s in scenes])
    images = renderer.render([FrameJob(e.embeds, 100 + i) for i, e in enumerate(embeds)])
    found = [detect(image) for image in images]
    right = {
        name: sum(dict(d)[name] == getattr(s, name) for s, d in zip(scenes, found, strict=True))
        for name in ATTRIBUTES
    }
    assert all(hits >= 9 for hits in right.values()), right


def test_toy_pairs_share_as_many_attributes_as_their_score_says() -> None:
    pairs = toy_pairs(6, 3)
    assert pairs.equals(toy_pairs(6, 3)) and not pairs.equals(toy_pairs(6, 4))
    scores = range(len(ATTRIBUTES))
    assert sorted(pairs["score"].to_list()) == sorted(float(s) for s in scores for _ in range(6))
    assert pairs["pair_id"].n_unique() == len(pairs)
    said = {world.caption(s): s for s in _every_full_caption()}
    for row in pairs.iter_rows(named=True):
        a, b = said[row["prompt_a"]], said[row["prompt_b"]]
        assert shared(a, b) == row["score"] < len(ATTRIBUTES)
        assert not a.held_out and not b.held_out


def _every_full_caption() -> list[world.Scene]:
    """Every scene said with a training template (each names all four attributes)."""
    return [
        world.Scene(shape, colour, size, bg, template)
        for shape in world.SHAPES
        for colour in world.COLOURS
        for size in world.SIZES
        for bg in world.BACKGROUNDS
        for template in FULL_TEMPLATES
    ]


@pytest.mark.slow
def test_toy_train_writes_a_loadable_folder_and_refuses_to_overwrite(tmp_path: Path) -> None:
    out = tmp_path / "toy"
    args = ["toy", "train", "--out", str(out), "--vae-steps", "2", "--unet-steps", "2"]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    record = json.loads((out / RECORD).read_text())
    assert record["config"]["vae_steps"] == record["config"]["unet_steps"] == 2
    assert len((out / LOSS_LOG).read_text().splitlines()) == 1 + 4
    pipe = StableDiffusionPipeline.from_pretrained(out, safety_checker=None)
    assert pipe.vae.config.scaling_factor == pytest.approx(record["scaling_factor"])
    again = CliRunner().invoke(main, args)
    assert again.exit_code != 0 and "pass --overwrite" in again.output
    assert not list(tmp_path.glob(".toy.*"))  # no temporary folder left behind
    # the same command trains the same weights, byte for byte (on this machine)
    retrained = tmp_path / "again"
    args[args.index(str(out))] = str(retrained)
    assert CliRunner().invoke(main, args).exit_code == 0
    for weights in sorted(out.rglob("*.safetensors")):
        assert weights.read_bytes() == (retrained / weights.relative_to(out)).read_bytes()


@pytest.mark.slow
def test_a_stopped_training_continues_from_its_checkpoint_to_the_same_bytes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import otpc.toy.train as toy_train

    cfg = TrainConfig(vae_steps=5, unet_steps=6, batch_size=4, embed_noise=0.1)
    toy_train.train(tmp_path / "whole", cfg, "otpc toy train", checkpoint_every=2)
    lr = toy_train._lr

    def stop_at(total: int, at: int) -> None:
        def stopping(step: int, steps: int, peak: float, warmup: int) -> float:
            if steps == total and step == at:
                raise KeyboardInterrupt
            return lr(step, steps, peak, warmup)

        monkeypatch.setattr(toy_train, "_lr", stopping)
        with pytest.raises(KeyboardInterrupt):
            toy_train.train(tmp_path / "stopped", cfg, "otpc toy train", checkpoint_every=2)
        assert (toy_train.checkpoint_folder(tmp_path / "stopped") / "checkpoint.pt").exists()

    stop_at(cfg.vae_steps, 3)  # in the autoencoder's phase
    stop_at(cfg.unet_steps, 5)  # in the denoiser's, after a checkpoint of its own
    monkeypatch.setattr(toy_train, "_lr", lr)
    toy_train.train(tmp_path / "stopped", cfg, "otpc toy train", checkpoint_every=2)
    whole, stopped = tmp_path / "whole", tmp_path / "stopped"
    files = sorted(p.relative_to(whole) for p in whole.rglob("*") if p.suffix != ".json")
    assert any(f.suffix == ".safetensors" for f in files) and Path(LOSS_LOG) in files
    for name in files:
        if (whole / name).is_file():
            assert (whole / name).read_bytes() == (stopped / name).read_bytes(), name
    assert not toy_train.checkpoint_folder(stopped).exists()
