"""The schema of ``params.yaml``: every setting's one definition and one default.

The sections are what the library takes too (``ModelSpec`` tells ``otpc.models`` what to
load, ``RenderSettings`` tells ``otpc.render`` how to render); ``params.yaml`` holds the
study's values. ``load_params`` reports every problem at once, each with its dotted key, the
bad value (quoted shortly) and what is allowed. The file must be UTF-8 YAML without duplicate
keys or aliases (``*name``: a few bytes of them can stand for gigabytes). Checks
that need ``dvc.yaml``, a registry, the model's configuration or this machine (keys stages
depend on, coupling methods, model names, sizes, steps, device, writable caches) are in
``otpc.preflight``.

This module imports no torch: every stage reads it, and it must not make them depend on the
rest of the library.
"""

from __future__ import annotations

import itertools
import re
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
)
from pydantic.dataclasses import dataclass as validated

from otpc.errors import ParamsError
from otpc.text import read_utf8, shorten

LpipsNet = Literal["alex", "vgg", "squeeze"]
LpipsBackbone = Literal["imagenet", "untrained"]
Dtype = Literal["auto", "float64", "float32", "float16", "bfloat16"]
DEVICE = r"auto|cpu|mps|cuda(:\d+)?"
FRAME_CACHE = ".otpc_cache/frames"  # under the project root, shared by experiments
VALUE_CHARS = 200  # a bad value is quoted to this many characters (a path fits)
LISTED = 40  # problems listed in one error; the rest are counted
TOY_ATTRIBUTES = ("shape", "colour", "size", "background")  # of a toy scene
# Those the committed toy model draws: held-out accuracy above chance (its OTPC_TOY.json;
# a test keeps the two in agreement).
TOY_DRAWN = ("shape", "colour", "size", "background")

# Marks a setting that changes speed or memory, not what a frame shows: not part of a
# frame's key, and not a parameter the render stage depends on. On the CPU in float64 it
# does not change a frame's bytes either; on a GPU, which frames share a batch can move a
# pixel by a level, and the frame cache keeps whichever was rendered first.
SPEED_ONLY: dict[str, Any] = {"pixels": False}


def speed_only(model: type[BaseModel]) -> set[str]:
    """The fields of ``model`` marked ``SPEED_ONLY``."""
    return {
        name for name, field in model.model_fields.items() if field.json_schema_extra == SPEED_ONLY
    }


def _not_blank(value: str, what: str) -> str:
    if not value.strip():
        raise ValueError(f"must not be empty: it is {what}")
    return value


@validated(frozen=True, config=ConfigDict(extra="forbid"))
class ModelSpec:
    """What to load: a preset (``otpc methods`` lists them), hub id (owner/name) or local
    diffusers folder, and how."""

    name: str = "toy"
    revision: str | None = None  # None: the preset's default (its branch, e.g. main)
    dtype: Dtype = "auto"  # auto: float16 on CUDA (presets), float64 on the CPU
    device: str = "auto"  # auto: cuda, then mps, then cpu

    @field_validator("device")
    @classmethod
    def _device(cls, v: str) -> str:
        if not re.fullmatch(DEVICE, v):
            raise ValueError("not a device: use auto, cpu, cuda, cuda:<index> or mps")
        return v


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class RenderSettings(_Section):
    """Everything besides the model and the embedding that decides a frame's pixels, plus how
    frames are batched and whether the denoiser is compiled (``SPEED_ONLY``)."""

    steps: int | None = Field(
        None, ge=1, le=1000, description="denoising steps; unset: the model's own"
    )
    guidance: float | None = Field(
        None,
        ge=0,
        le=100,
        description="guidance scale: CFG for SD and SD3 (at most 1: none), embedded for "
        "FLUX.1-dev; unset: the model's own",
    )
    height: int | None = Field(None, ge=8, le=8192, description="None: the model's default")
    width: int | None = Field(None, ge=8, le=8192, description="None: the model's default")
    batch_size: int = Field(
        16,
        ge=1,
        le=4096,
        json_schema_extra=SPEED_ONLY,
        description="frames per denoiser batch (CFG doubles it)",
    )
    decode_batch_size: int = Field(
        8, ge=1, le=4096, json_schema_extra=SPEED_ONLY, description="latents per VAE decode"
    )
    compile: bool = Field(
        False,
        json_schema_extra=SPEED_ONLY,
        description="torch.compile the denoiser (worth it on a GPU)",
    )
    compile_mode: Literal[
        "default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs"
    ] = Field("default", json_schema_extra=SPEED_ONLY)


class DataParams(_Section):
    # toy: pairs from the toy world (score: attributes shared); csv: two prompt columns and a
    # score; cxc: CxC STS
    source: Literal["toy", "csv", "cxc"] = "toy"
    path: str = "data/cxc/readme_examples.csv"
    prompt_a: str = "caption1"
    prompt_b: str = "caption2"
    score: str = "rating"
    id_column: str | None = None  # None: ids derived from the prompts' text
    captions: str | None = None  # cxc: Karpathy's dataset_coco.json or its zip (None: download)
    split: Literal["val", "test"] = "val"
    sampling_method: Literal["c2c_cocaption", "c2c_isim", "both"] = "both"
    bins: list[float] = Field(default_factory=lambda: [0.0, 1.0, 2.0, 3.0, 4.0, 5.0])
    n_per_group: int = Field(3, ge=1, le=100_000, description="pairs analysed per group")
    spare_per_group: int = Field(
        0,
        ge=0,
        le=100_000,
        description="candidates drawn beyond n_per_group per group, in order: they fill the "
        "places of pairs left out as degenerate (aggregate.drop_degenerate)",
    )
    toy_attributes: list[str] = Field(
        default_factory=lambda: list(TOY_DRAWN),
        description="toy source: the attributes a pair's score counts and its two scenes may "
        "differ in (the others are the same in A and B); the ones the toy model draws",
    )
    seed: int = Field(0, ge=0)

    @field_validator("toy_attributes")
    @classmethod
    def _toy_attributes(cls, v: list[str]) -> list[str]:
        if not v or any(a not in TOY_ATTRIBUTES for a in v) or len(set(v)) != len(v):
            raise ValueError(
                f"must be distinct attributes of the toy world {list(TOY_ATTRIBUTES)}, got {v}"
            )
        return v

    @field_validator("bins")
    @classmethod
    def _increasing(cls, v: list[float]) -> list[float]:
        if len(v) < 2 or any(b <= a for a, b in itertools.pairwise(v)):
            raise ValueError("bins must be at least two strictly increasing edges")
        return v


class CoupleParams(_Section):
    methods: list[str] = Field(default_factory=lambda: ["clip", "ot", "random"])
    random_replicates: int = Field(3, ge=1, le=1000)
    sinkhorn_reg: float = Field(
        0.05, gt=0, le=100, description="entropic regularisation, relative to the mean cost"
    )
    seed: int = Field(0, ge=0)
    blocks: Literal["joint", "per_encoder"] = Field(
        "joint",
        description="joint: all rows one cloud (the paper's reading); per_encoder: each text "
        "encoder's rows coupled on their own",
    )

    @field_validator("methods")
    @classmethod
    def _distinct(cls, v: list[str]) -> list[str]:
        if not v or len(set(v)) != len(v):
            raise ValueError("methods must be a non-empty list without repeats")
        return v


BACKEND = "local: this process; ray: workers of the Ray cluster `ray` names"


class RenderParams(RenderSettings):
    """``RenderSettings`` plus where paths are sampled (``frames``), the noise seed and the
    frame cache."""

    frames: int = Field(9, ge=2, le=1000, description="frames per path, ends included")
    seed: int = Field(0, ge=0, description="noise seed (with the pair id)")
    cache_dir: str = Field(FRAME_CACHE, json_schema_extra=SPEED_ONLY)
    backend: Literal["local", "ray"] = Field(
        "local",
        json_schema_extra=SPEED_ONLY,
        description=f"{BACKEND}, writing to cache_dir, which they must all reach "
        "(a folder every node mounts, or a URL)",
    )

    _cache_dir = field_validator("cache_dir")(lambda v: _not_blank(v, "a folder for frames"))

    @classmethod
    def pixel_keys(cls) -> list[str]:
        """The fields that decide a frame's pixels (what the render stage depends on)."""
        return [name for name in cls.model_fields if name not in speed_only(cls)]


class ScoreVariant(_Section):
    """A robustness re-scoring of the same rendered frames; an unset field is ``score``'s."""

    frames: int | None = Field(None, ge=2, le=1000)
    net: LpipsNet | None = None
    min_size: int | None = Field(None, ge=1, le=4096)

    def name(self) -> str:
        """``frames=17``, ``net=vgg,min_size=128``: what the variant changes."""
        return ",".join(f"{k}={v}" for k, v in self.model_dump().items() if v is not None)


class ScoreParams(_Section):
    net: LpipsNet = "alex"
    batch_size: int = Field(64, ge=1, le=4096)
    backend: Literal["local", "ray"] = Field(
        "local", json_schema_extra=SPEED_ONLY, description=BACKEND
    )
    backbone: LpipsBackbone = Field(
        "imagenet", description="imagenet (an error where there are no weights) or untrained"
    )
    min_size: int = Field(
        64,
        ge=1,
        le=4096,
        description="frames smaller than this (px) are enlarged, each pixel repeated, for LPIPS",
    )
    frames: int | None = Field(
        None,
        ge=2,
        le=1000,
        description="frames of a scored path: every ((render.frames - 1) / (frames - 1))-th "
        "rendered frame (the frames a render with render.frames = frames draws); null: all",
    )
    robustness: list[ScoreVariant] = Field(
        default_factory=list,
        description="re-scorings of the same frames whose conclusions the robustness table "
        "reports beside the primary analysis's",
    )

    def variants(self) -> list[ScoreParams]:
        """The primary scoring, then each robustness variant, as whole score settings."""
        return [self] + [
            self.model_copy(
                update={k: v for k, v in variant.model_dump().items() if v is not None}
                | {"robustness": []}
            )
            for variant in self.robustness
        ]


PRIMARY = "primary"  # the scores table's variant of the pre-registered scoring


class AggregateParams(_Section):
    bootstrap: int = Field(2000, ge=100, le=1_000_000)
    confidence: float = Field(0.95, gt=0, lt=1)
    seed: int = Field(0, ge=0)
    strip_pairs: int = Field(4, ge=1, le=100)
    drop_degenerate: bool = Field(
        True,
        description="leave out pairs whose prompts embed identically or whose end frames "
        "are nearer than min_end_lpips (counted); spare pairs take their places",
    )
    min_end_lpips: float = Field(
        0.05,
        ge=0,
        description="a pair whose two end frames (A's and B's images) are nearer than this "
        "(LPIPS, the primary scoring) is perceptually degenerate: nothing to interpolate",
    )
    # The pre-registered analysis (docs/study.md, "Pre-registered analysis").
    primary: str = Field("clip", description="OT against this method is the primary comparison")
    measure: Literal["ppl", "length"] = Field("ppl", description="the primary measure")
    co_primary: Literal["ppl", "length"] = Field("length", description="its sensitivity twin")
    margin: float = Field(
        0.01,
        gt=0,
        lt=1,
        description="equivalence margin: OT and a method are equivalent when the median ratio "
        "of their path lengths lies within [1 / (1 + margin), 1 + margin] (TOST)",
    )
    alpha: float = Field(0.05, gt=0, lt=1, description="level of every pre-registered test")
    permutations: int = Field(
        10_000, ge=100, le=10_000_000, description="resamples where enumeration is too large"
    )
    stratify_by: Literal["sampling_method"] | None = Field(
        None, description="also split every statistic by this column of the pairs table"
    )


class RayParams(_Section):
    """The Ray cluster of the stages whose ``backend`` is ``ray``, and their workers."""

    address: str = Field(
        "auto",
        description="auto: the running cluster; local: start one in the stage; host:port "
        "(its head's GCS); ray://host:port (Ray Client)",
    )
    workers: int = Field(2, ge=1, le=10_000, description="workers (actors) per stage")
    cpus_per_worker: float = Field(1.0, ge=0, description="also each worker's torch threads")
    gpus_per_worker: float = Field(0.0, ge=0)

    _address = field_validator("address")(lambda v: _not_blank(v, "a Ray address"))


class Params(_Section):
    study: str = "otpc"  # the MLflow experiment

    _study = field_validator("study")(lambda v: _not_blank(v, "the MLflow experiment's name"))

    model: ModelSpec = Field(default_factory=lambda: ModelSpec())
    data: DataParams = Field(default_factory=DataParams)
    couple: CoupleParams = Field(default_factory=CoupleParams)
    render: RenderParams = Field(default_factory=RenderParams)
    score: ScoreParams = Field(default_factory=ScoreParams)
    aggregate: AggregateParams = Field(default_factory=AggregateParams)
    ray: RayParams = Field(default_factory=RayParams)


class _AliasRefused(yaml.MarkedYAMLError):
    """An alias (``*name``) in a params file, refused before it is expanded."""


class _UniqueKeyLoader(yaml.SafeLoader):
    """YAML's safe loader, refusing a key given twice in one mapping (PyYAML keeps the last)
    and any alias (``*name``), before it is expanded."""

    def compose_node(self, parent: yaml.Node | None, index: int) -> yaml.Node | None:
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()
            raise _AliasRefused(
                None,
                None,
                f"alias *{shorten(event.anchor)}: params files may not use YAML aliases "
                "(a few bytes of them can stand for gigabytes); write the value out",
                event.start_mark,
            )
        return super().compose_node(parent, index)

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict:
        lines: dict[object, int] = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            if key in lines:
                raise yaml.constructor.ConstructorError(
                    None,
                    None,
                    f"duplicate key {shorten(repr(key))} (first on line {lines[key]})",
                    key_node.start_mark,
                )
            lines[key] = key_node.start_mark.line + 1
        return super().construct_mapping(node, deep=deep)


def read_yaml(path: Path) -> object:
    """Parse a UTF-8 YAML file strictly; ``ParamsError`` naming the file and line."""
    text = read_utf8(path, ParamsError)
    try:
        return yaml.load(text, Loader=_UniqueKeyLoader)
    except yaml.MarkedYAMLError as err:
        mark = err.problem_mark or err.context_mark
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        what = err.problem or err.context
        if not isinstance(err, _AliasRefused):
            what = f"not valid YAML: {what}"
        raise ParamsError(f"{path}: {where}{what}") from None
    except yaml.YAMLError as err:
        raise ParamsError(f"{path}: not valid YAML ({err})") from None
    except RecursionError:
        raise ParamsError(f"{path}: its values are nested too deeply to read") from None


def read_params(path: Path) -> dict[str, Any]:
    """The raw mapping in ``path``; ``ParamsError`` if it is not a non-empty YAML mapping."""
    raw = read_yaml(path)
    if raw is None:
        raise ParamsError(
            f"{path}: the file is empty; it must define the study's parameters "
            "(study, model, data, couple, render, score, aggregate)"
        )
    if not isinstance(raw, dict):
        raise ParamsError(f"{path}: must be a mapping of sections, got {type(raw).__name__}")
    return raw


def schema_problems(raw: dict[str, Any]) -> tuple[Params | None, list[str]]:
    """``raw`` validated (None if invalid), and every problem the schema finds."""
    problems: list[str] = []
    try:
        params = Params.model_validate(raw)
    except ValidationError as err:
        for e in err.errors():
            key = ".".join(str(p) for p in e["loc"])
            problems.append(problem(key, e.get("input"), e["msg"].removeprefix("Value error, ")))
        return None, problems
    return params, design_problems(params)


def design_problems(params: Params) -> list[str]:
    """What the schema cannot see key by key: the scored frames lie on the rendered grid,
    and the pre-registered comparison is one the study makes."""
    found = []
    rendered = params.render.frames - 1
    for key, frames in [("score.frames", params.score.frames)] + [
        (f"score.robustness.{i}.frames", v.frames) for i, v in enumerate(params.score.robustness)
    ]:
        if frames is not None and rendered % (frames - 1):
            found.append(
                problem(
                    key,
                    frames,
                    f"frames - 1 must divide render.frames - 1 = {rendered}: the scored frames "
                    "are every n-th rendered frame",
                )
            )
    methods = params.couple.methods
    if "ot" in methods and params.aggregate.primary not in [m for m in methods if m != "ot"]:
        found.append(
            problem(
                "aggregate.primary",
                params.aggregate.primary,
                f"must be one of couple.methods other than ot: {[m for m in methods if m != 'ot']}",
            )
        )
    return found


def problem(key: str, value: object, message: str) -> str:
    """One line of a problem list: the dotted key, the value (None: absent) and what is wrong;
    the key and value quoted shortly, whatever the file holds."""
    key = shorten(key)
    if value is None:
        return f"  {key}: {message}"
    return f"  {key} = {shorten(repr(value), VALUE_CHARS)}: {message}"


def raise_problems(path: Path, problems: list[str]) -> None:
    """``ParamsError`` listing ``problems`` of the params file ``path``, if there are any (the
    first ``LISTED`` of them)."""
    if problems:
        more = [f"  ... and {len(problems) - LISTED} more"] if len(problems) > LISTED else []
        lines = [f"{path}: {len(problems)} problem(s):", *problems[:LISTED], *more]
        raise ParamsError("\n".join(lines))


def load_params(path: str | Path = "params.yaml") -> Params:
    """Read and validate ``path``; raises ``ParamsError`` listing every problem."""
    path = Path(path)
    params, problems = schema_problems(read_params(path))
    raise_problems(path, problems)
    assert params is not None
    return params


def flatten(params: Params) -> dict[str, object]:
    """Dotted keys -> values (lists as comma-separated strings), for MLflow."""
    out: dict[str, object] = {}

    def walk(prefix: str, obj: object) -> None:
        if isinstance(obj, dict):
            for k, v in obj.items():
                walk(f"{prefix}.{k}" if prefix else k, v)
        elif isinstance(obj, list):
            out[prefix] = ",".join(map(str, obj))
        else:
            out[prefix] = obj

    walk("", params.model_dump())
    return out
