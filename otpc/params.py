"""The schema of ``params.yaml``, checked before any stage does work.

Every problem is reported at once, each with its dotted key, the bad value and what is
allowed.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from otpc.couplings import METHODS
from otpc.models import PRESETS
from otpc.perceptual import BACKBONE_WEIGHTS


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ModelParams(_Section):
    name: str = "tiny"
    revision: str | None = None
    dtype: Literal["auto", "float64", "float32", "float16", "bfloat16"] = "auto"
    device: str = "auto"

    @field_validator("name")
    @classmethod
    def _known(cls, v: str) -> str:
        if v in PRESETS or "/" in v or Path(v).is_dir():
            return v
        raise ValueError(f"unknown model preset {v!r}; use one of {sorted(PRESETS)}, "
                         "a hub id (owner/name) or a local diffusers folder")


class DataParams(_Section):
    source: Literal["csv", "cxc"] = "csv"
    path: str = "data/cxc/readme_examples.csv"
    prompt_a: str = "caption1"
    prompt_b: str = "caption2"
    score: str = "rating"
    id_column: str | None = None
    captions: str | None = None
    split: Literal["val", "test"] = "val"
    sampling_method: Literal["c2c_cocaption", "c2c_isim", "both"] = "both"
    bins: list[float] = Field(default_factory=lambda: [0, 1, 2, 3, 4, 5])
    n_per_group: int = Field(3, ge=1)
    seed: int = Field(0, ge=0)

    @field_validator("bins")
    @classmethod
    def _increasing(cls, v: list[float]) -> list[float]:
        if len(v) < 2 or any(b <= a for a, b in zip(v, v[1:])):
            raise ValueError(f"bins must be at least two strictly increasing edges, got {v}")
        return v


class CoupleParams(_Section):
    methods: list[str] = Field(default_factory=lambda: ["clip", "ot", "random"])
    random_replicates: int = Field(3, ge=1)
    sinkhorn_reg: float = Field(0.05, gt=0)
    seed: int = Field(0, ge=0)

    @field_validator("methods")
    @classmethod
    def _registered(cls, v: list[str]) -> list[str]:
        unknown = [m for m in v if m not in METHODS]
        if unknown:
            raise ValueError(f"unknown method(s) {unknown}; registered: {sorted(METHODS)}")
        if not v or len(set(v)) != len(v):
            raise ValueError(f"methods must be a non-empty list without repeats, got {v}")
        return v


class RenderParams(_Section):
    frames: int = Field(7, ge=2)
    steps: int = Field(20, ge=1)
    guidance: float = Field(7.5, ge=0)
    height: int | None = Field(None, ge=8)
    width: int | None = Field(None, ge=8)
    seed: int = Field(0, ge=0)
    batch_size: int = Field(32, ge=1)
    decode_batch_size: int = Field(8, ge=1)
    compile: bool = False
    compile_mode: Literal["default", "reduce-overhead", "max-autotune",
                          "max-autotune-no-cudagraphs"] = "default"
    cache_dir: str = ".otpc_cache/frames"


class ScoreParams(_Section):
    net: str = "alex"
    batch_size: int = Field(64, ge=1)

    @field_validator("net")
    @classmethod
    def _net(cls, v: str) -> str:
        if v not in BACKBONE_WEIGHTS:
            raise ValueError(f"LPIPS net {v!r} does not exist; choose one of {sorted(BACKBONE_WEIGHTS)}")
        return v


class AggregateParams(_Section):
    bootstrap: int = Field(2000, ge=100)
    confidence: float = Field(0.95, gt=0, lt=1)
    seed: int = Field(0, ge=0)
    strip_pairs: int = Field(4, ge=1)


class Params(_Section):
    study: str = "otpc"
    model: ModelParams = Field(default_factory=ModelParams)
    data: DataParams = Field(default_factory=DataParams)
    couple: CoupleParams = Field(default_factory=CoupleParams)
    render: RenderParams = Field(default_factory=RenderParams)
    score: ScoreParams = Field(default_factory=ScoreParams)
    aggregate: AggregateParams = Field(default_factory=AggregateParams)


class ParamsError(ValueError):
    """``params.yaml`` is invalid; the message lists every problem."""


def load_params(path: str | Path = "params.yaml") -> Params:
    """Read and validate ``path``; raises ``ParamsError`` listing every problem."""
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except FileNotFoundError as err:
        raise ParamsError(f"{path}: not found") from err
    except yaml.YAMLError as err:
        raise ParamsError(f"{path}: not valid YAML ({err})") from err
    try:
        return Params.model_validate(raw)
    except ValidationError as err:
        lines = [f"{path}: {err.error_count()} problem(s):"]
        for e in err.errors():
            key = ".".join(str(p) for p in e["loc"])
            value = e.get("input")
            lines.append(f"  {key} = {value!r}: {e['msg']}")
        raise ParamsError("\n".join(lines)) from None


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
