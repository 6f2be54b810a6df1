"""Schedulers whose steps draw noise are refused: a frame must be a function of its embedding
and noise seed, or the same frame renders differently each time and the frame cache keeps one
random draw under a deterministic key. The check runs each scheduler (no list of names)."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from click.testing import CliRunner
from diffusers import (
    DDIMScheduler,
    DDPMScheduler,
    DPMSolverMultistepScheduler,
    EulerAncestralDiscreteScheduler,
    EulerDiscreteScheduler,
    PNDMScheduler,
    SchedulerMixin,
    StableDiffusionPipeline,
)

from otpc.cli import main as otpc_main
from otpc.errors import InputError
from otpc.models import LoadedModel, ModelSpec, load_pipeline
from otpc.params import RenderSettings
from otpc.render import Renderer, scheduler_draws_noise
from otpc.tiny import tiny_model_dir
from tests.project import RATING_BINS, ROOT

pytestmark = pytest.mark.usefixtures("one_thread")

SETTINGS = RenderSettings(steps=3, guidance=7.5, batch_size=2)


def own_scheduler(kind: str, cls: type) -> Callable[[SchedulerMixin], SchedulerMixin]:
    """The scheduler of tiny model ``kind`` (of class ``cls``), loaded from its folder."""

    def make(_: SchedulerMixin) -> SchedulerMixin:
        folder = tiny_model_dir(kind=kind)
        index = json.loads((folder / "model_index.json").read_text())
        assert index["scheduler"] == ["diffusers", cls.__name__]  # the class that loads
        return cls.from_pretrained(folder / "scheduler")

    return make


DETERMINISTIC = {
    "tiny's PNDM": own_scheduler("tiny", PNDMScheduler),
    "tiny-sd2's DDIM (v-prediction)": own_scheduler("tiny-sd2", DDIMScheduler),
    "tiny-sdxl's Euler": own_scheduler("tiny-sdxl", EulerDiscreteScheduler),
    "DDIM (eta=0)": lambda s: DDIMScheduler.from_config(s.config),
    "DPM-Solver++ multistep": lambda s: DPMSolverMultistepScheduler.from_config(s.config),
}
STOCHASTIC = {
    "Euler ancestral": lambda s: EulerAncestralDiscreteScheduler.from_config(s.config),
    "DDPM": lambda s: DDPMScheduler.from_config(s.config),
    "SDE-DPM-Solver++": lambda s: DPMSolverMultistepScheduler.from_config(
        s.config, algorithm_type="sde-dpmsolver++"
    ),
}


def with_scheduler(tiny: LoadedModel, scheduler: SchedulerMixin) -> LoadedModel:
    """The tiny model with another scheduler (a new pipeline: the session's stays as it is)."""
    pipe = StableDiffusionPipeline(**{**tiny.pipe.components, "scheduler": scheduler})
    return LoadedModel(pipe, tiny.resolved)


@pytest.mark.parametrize("make", DETERMINISTIC.values(), ids=DETERMINISTIC.keys())
def test_deterministic_schedulers_render(tiny, make) -> None:
    scheduler = make(tiny.pipe.scheduler)
    assert not scheduler_draws_noise(scheduler)
    Renderer(with_scheduler(tiny, scheduler), SETTINGS)  # no error


@pytest.mark.parametrize("make", STOCHASTIC.values(), ids=STOCHASTIC.keys())
def test_schedulers_that_draw_noise_are_refused(tiny, make) -> None:
    scheduler = make(tiny.pipe.scheduler)
    assert scheduler_draws_noise(scheduler)
    name = type(scheduler).__name__
    with pytest.raises(InputError) as err:
        Renderer(with_scheduler(tiny, scheduler), SETTINGS)
    message = str(err.value)
    assert message.startswith(f"model 'tiny': scheduler {name} draws random noise in its steps")
    for part in (
        "the study needs a deterministic sampler",
        "DDIMScheduler (eta=0), EulerDiscreteScheduler, PNDMScheduler",
        "model_index.json",
        "scheduler/scheduler_config.json",
        "model.name",
    ):
        assert part in message, part


def test_the_refused_schedulers_do_render_differently(tiny) -> None:
    """What the check guards against is real: with Euler ancestral (the check bypassed), the
    same embedding and noise give two different images under two RNG states; with the tiny
    model's PNDM they give the same image."""
    embeds = torch.zeros(1, 77, tiny.pipe.unet.config.cross_attention_dim, dtype=torch.float64)
    renderer = Renderer(tiny, SETTINGS)
    latents = renderer.initial_latents(5)

    def twice() -> list[np.ndarray]:
        images = []
        for seed in (1, 2):
            with torch.random.fork_rng(devices=[]):
                torch.default_generator.manual_seed(seed)
                images.append(renderer.render_batch(embeds, latents))
        return images

    same = twice()
    np.testing.assert_array_equal(same[0], same[1])
    renderer.pipe = with_scheduler(tiny, STOCHASTIC["Euler ancestral"](tiny.pipe.scheduler)).pipe
    first, second = twice()
    assert np.abs(first.astype(int) - second).max() > 0


@pytest.mark.parametrize("name", ["tiny's PNDM", "Euler ancestral"])
def test_the_check_leaves_the_callers_rng_alone(tiny, name: str) -> None:
    scheduler = (DETERMINISTIC | STOCHASTIC)[name](tiny.pipe.scheduler)
    torch.manual_seed(123)
    before = torch.get_rng_state()
    scheduler_draws_noise(scheduler)
    assert torch.equal(torch.get_rng_state(), before)


def test_the_check_probes_steps_before_the_last(tiny) -> None:
    """Ancestral samplers add no noise on their last step: a one-step schedule is probed
    with three steps, so that it still finds the noise."""
    scheduler = STOCHASTIC["Euler ancestral"](tiny.pipe.scheduler)
    assert scheduler_draws_noise(scheduler, steps=1)


# ``otpc check``: the scheduler a model folder would load is refused before any work.


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    shutil.copy(ROOT / "params.yaml", tmp_path / "params.yaml")
    shutil.copy(ROOT / "dvc.yaml", tmp_path / "dvc.yaml")
    shutil.copy(ROOT / "data/cxc/readme_examples.csv", tmp_path / "pairs.csv")
    monkeypatch.chdir(tmp_path)
    return tmp_path


def model_folder(workdir: Path, scheduler: str | None) -> Path:
    """The tiny model's configuration files (no weights: the check reads none) in a folder
    whose model_index.json and scheduler_config.json name ``scheduler`` (None: as built)."""
    folder = workdir / "model"
    source = tiny_model_dir()
    for path in source.rglob("*.json"):
        target = folder / path.relative_to(source)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(path, target)
    if scheduler is not None:
        for path, key in (
            (folder / "model_index.json", "scheduler"),
            (folder / "scheduler" / "scheduler_config.json", "_class_name"),
        ):
            config = json.loads(path.read_text())
            config[key] = ["diffusers", scheduler] if key == "scheduler" else scheduler
            path.write_text(json.dumps(config))
    use_model(workdir, folder)
    return folder


def use_model(workdir: Path, folder: Path) -> None:
    """Point the params' model.name at ``folder``."""
    params = yaml.safe_load((workdir / "params.yaml").read_text())
    params["model"]["name"] = str(folder)
    params["data"] |= {"source": "csv", "path": "pairs.csv", "bins": RATING_BINS}
    (workdir / "params.yaml").write_text(yaml.safe_dump(params))


def check() -> tuple[int, str]:
    result = CliRunner().invoke(otpc_main, ["check"])
    if result.exit_code:
        assert isinstance(result.exception, SystemExit)  # a one-line error, not a crash
        assert "Traceback" not in result.output
    return result.exit_code, result.output


def test_check_accepts_a_folder_with_a_deterministic_scheduler(workdir: Path) -> None:
    model_folder(workdir, None)
    code, output = check()
    assert code == 0, output


def test_check_refuses_a_folder_whose_scheduler_draws_noise(workdir: Path) -> None:
    folder = model_folder(workdir, "EulerAncestralDiscreteScheduler")
    code, output = check()
    assert code == 1
    assert (
        f"model.name = {str(folder)!r}: {folder / 'model_index.json'}: scheduler "
        "EulerAncestralDiscreteScheduler draws random noise in its steps"
    ) in output, output
    assert "the study needs a deterministic sampler" in output
    assert "1 problem(s)" in output


def test_check_refuses_a_scheduler_diffusers_does_not_have(workdir: Path) -> None:
    folder = model_folder(workdir, "TeleportScheduler")
    code, output = check()
    assert code == 1
    assert f"{folder / 'model_index.json'} names scheduler 'TeleportScheduler'" in output, output


def test_check_reads_the_class_that_loading_makes(workdir: Path) -> None:
    """diffusers builds the class named in model_index.json, not scheduler_config.json's
    _class_name: a folder whose config alone names Euler ancestral loads (and renders with)
    PNDM, and the check accepts it."""
    folder = workdir / "model"
    shutil.copytree(tiny_model_dir(), folder)
    config_file = folder / "scheduler" / "scheduler_config.json"
    config = json.loads(config_file.read_text())
    config_file.write_text(json.dumps(config | {"_class_name": "EulerAncestralDiscreteScheduler"}))
    use_model(workdir, folder)
    code, output = check()
    assert code == 0, output
    loaded = load_pipeline(ModelSpec(str(folder)))
    assert type(loaded.pipe.scheduler) is PNDMScheduler
    Renderer(loaded, SETTINGS)  # no error
