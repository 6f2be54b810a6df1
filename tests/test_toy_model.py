"""The trained toy model otpc ships: a standard Stable-Diffusion-1.x folder that loads like
any other, draws what its captions say, and is remade by one command; and the toy world's
prompt pairs the demo study runs on."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch
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
from otpc.params import TOY_DRAWN, RenderSettings, load_params
from otpc.render import FrameJob, Renderer
from otpc.toy import MODEL_DIR, world
from otpc.toy.detector import detect
from otpc.toy.pairs import ATTRIBUTES, scenes_by_caption, shared, toy_pairs
from otpc.toy.train import LOSS_LOG, RECORD, checkpoint_folder, code_version
from tests.project import ROOT, kill_when, run


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
    image = plain("a large red square", num_inference_steps=2, output_type="np").images[0]
    assert image.shape == (world.SIZE, world.SIZE, 3)


def test_the_weights_come_with_their_record() -> None:
    record = json.loads((MODEL_DIR / RECORD).read_text())
    assert record["command"].startswith("otpc toy train")
    assert {"seed", "vae_steps", "unet_steps"} <= set(record["config"])
    # the record names the code at hand: code that decides the weights changed means retrain
    # (or show, as for a move of code, that it trains the same bytes) and update the record
    assert record["code_version"] == code_version()
    assert record["quality"]["captions"] >= 200
    log = (MODEL_DIR / LOSS_LOG).read_text().splitlines()
    assert log[0] == "phase,step,loss"
    steps = record["config"]["vae_steps"] + record["config"]["unet_steps"]
    assert len(log) == 1 + steps
    weights = sum(p.stat().st_size for p in MODEL_DIR.rglob("*.safetensors"))
    assert weights <= 25 * 2**20


def test_the_toy_model_draws_what_held_out_captions_say(toy) -> None:
    """On captions of the held-out split (phrasing or colour-shape combination never seen
    in training), the detector reads the captions' colour and size back from most images
    (chance: 1 in 6 and 1 in 3): the model is not noise. (The benchmark measures every
    attribute on 300 captions.)"""
    scenes = world.scenes(12, 5, "test")
    renderer = Renderer(toy, RenderSettings(steps=6, guidance=1.0, batch_size=12))
    embeds = encode(toy, [world.caption(s) for s in scenes])
    images = renderer.render([FrameJob(e.embeds, 100 + i) for i, e in enumerate(embeds)])
    found = [detect(image) for image in images]
    colour = sum(d["colour"] == s.colour for s, d in zip(scenes, found, strict=True))
    size = sum(d["size"] == s.size for s, d in zip(scenes, found, strict=True))
    assert colour >= 8 and size >= 9, (colour, size)


@pytest.mark.parametrize("counted", [ATTRIBUTES, ("shape", "colour", "size"), ("background",)])
def test_toy_pairs_share_as_many_counted_attributes_as_their_score_says_and_all_others(
    counted: tuple[str, ...],
) -> None:
    pairs = toy_pairs(6, 3, counted)
    assert pairs.equals(toy_pairs(6, 3, counted)) and not pairs.equals(toy_pairs(6, 4, counted))
    scores = sorted(float(s) for s in range(len(counted)) for _ in range(6))
    assert sorted(pairs["score"].to_list()) == scores
    assert pairs["pair_id"].n_unique() == len(pairs)
    said = scenes_by_caption()
    for row in pairs.iter_rows(named=True):
        a, b = said[row["prompt_a"]], said[row["prompt_b"]]
        assert shared(a, b, counted) == row["score"] < len(counted)
        others = [n for n in ATTRIBUTES if n not in counted]
        assert shared(a, b, others) == len(others)  # what the score does not count is shared
        assert not a.held_out and not b.held_out


def test_the_attributes_a_study_counts_are_those_the_model_draws() -> None:
    """``data.toy_attributes``' default and the demo's are the attributes whose held-out
    accuracy (the model's record) is above chance by its Wilson interval."""
    quality = json.loads((MODEL_DIR / RECORD).read_text())["quality"]["all held-out"]
    choices = {
        "shape": world.SHAPES,
        "colour": world.COLOURS,
        "size": world.SIZES,
        "background": world.BACKGROUNDS,
    }
    drawn = [a for a in ATTRIBUTES if quality[a]["low"] > 1 / len(choices[a])]
    assert list(TOY_DRAWN) == drawn
    assert load_params(ROOT / "params.yaml").data.toy_attributes == drawn


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


TRAIN = """import sys
from pathlib import Path
from otpc.toy.config import TrainConfig
from otpc.toy.train import train
train(Path(sys.argv[1]), TrainConfig(vae_steps=4, unet_steps=30, batch_size=4), "t", every=2)
"""


@pytest.mark.slow
def test_a_stopped_training_continues_from_its_checkpoint_to_the_same_bytes(
    tmp_path: Path,
) -> None:
    """A training killed (SIGKILL) after a checkpoint in its second phase, started again,
    continues from that checkpoint and writes the weights and loss log of one never
    stopped; the checkpoint goes once it is done."""
    run([sys.executable, "-c", TRAIN, "whole"], tmp_path)
    state = checkpoint_folder(tmp_path / "stopped") / "state.pt"

    def in_second_phase() -> bool:
        try:
            return torch.load(state, weights_only=True)["phase"] == "denoiser"
        except FileNotFoundError:  # none yet (or the run ended, which the test then reports)
            return False

    kill_when([sys.executable, "-c", TRAIN, "stopped"], tmp_path, in_second_phase)
    saved = torch.load(state, weights_only=True)
    assert saved["phase"] == "denoiser" and 0 < saved["step"] < 30
    assert not (tmp_path / "stopped").exists()
    run([sys.executable, "-c", TRAIN, "stopped"], tmp_path)
    assert not state.parent.exists()
    for rel in (LOSS_LOG, "unet/diffusion_pytorch_model.safetensors"):
        assert (tmp_path / "whole" / rel).read_bytes() == (tmp_path / "stopped" / rel).read_bytes()
    for part in ("text_encoder/model.safetensors", "vae/diffusion_pytorch_model.safetensors"):
        assert (tmp_path / "whole" / part).read_bytes() == (
            tmp_path / "stopped" / part
        ).read_bytes()
