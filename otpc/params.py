"""The schema of ``params.yaml``, checked before any stage does work.

Every problem is reported at once, each with its dotted key, the bad value and what is
allowed. The file must be UTF-8 YAML without duplicate keys, and must hold every key that
``dvc.yaml`` (beside it) lists as a stage parameter. Checks that need the model's
configuration or this machine (sizes, steps, device, writable caches) are in
``otpc.preflight``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import torch
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from otpc.couplings import METHODS
from otpc.models import PRESETS
from otpc.perceptual import BACKBONE_WEIGHTS


def _not_blank(value: str, what: str) -> str:
    if not value.strip():
        raise ValueError(f"must not be empty: it is {what}")
    return value


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ModelParams(_Section):
    name: str = "tiny"
    revision: str | None = None
    dtype: Literal["auto", "float64", "float32", "float16", "bfloat16"] = "auto"
    device: str = "auto"

    @field_validator("device")
    @classmethod
    def _device(cls, v: str) -> str:
        if v == "auto":
            return v
        try:
            torch.device(v)
        except RuntimeError:
            raise ValueError("not a device: use auto, cpu, cuda, cuda:<index> or mps") from None
        return v

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
    n_per_group: int = Field(3, ge=1, le=100_000)
    seed: int = Field(0, ge=0)

    @field_validator("bins")
    @classmethod
    def _increasing(cls, v: list[float]) -> list[float]:
        if len(v) < 2 or any(b <= a for a, b in zip(v, v[1:])):
            raise ValueError(f"bins must be at least two strictly increasing edges, got {v}")
        return v


class CoupleParams(_Section):
    methods: list[str] = Field(default_factory=lambda: ["clip", "ot", "random"])
    random_replicates: int = Field(3, ge=1, le=1000)
    sinkhorn_reg: float = Field(0.05, gt=0, le=100)
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
    frames: int = Field(7, ge=2, le=1000)
    steps: int = Field(20, ge=1, le=1000)
    guidance: float = Field(7.5, ge=0, le=100)
    height: int | None = Field(None, ge=8, le=8192)
    width: int | None = Field(None, ge=8, le=8192)
    seed: int = Field(0, ge=0)
    batch_size: int = Field(32, ge=1, le=4096)
    decode_batch_size: int = Field(8, ge=1, le=4096)
    compile: bool = False
    compile_mode: Literal["default", "reduce-overhead", "max-autotune",
                          "max-autotune-no-cudagraphs"] = "default"
    cache_dir: str = ".otpc_cache/frames"

    _cache_dir = field_validator("cache_dir")(lambda v: _not_blank(v, "a folder for frames"))


class ScoreParams(_Section):
    net: str = "alex"
    batch_size: int = Field(64, ge=1, le=4096)

    @field_validator("net")
    @classmethod
    def _net(cls, v: str) -> str:
        if v not in BACKBONE_WEIGHTS:
            raise ValueError(f"LPIPS net {v!r} does not exist; choose one of {sorted(BACKBONE_WEIGHTS)}")
        return v


class AggregateParams(_Section):
    bootstrap: int = Field(2000, ge=100, le=1_000_000)
    confidence: float = Field(0.95, gt=0, lt=1)
    seed: int = Field(0, ge=0)
    strip_pairs: int = Field(4, ge=1, le=100)


class Params(_Section):
    study: str = "otpc"

    _study = field_validator("study")(lambda v: _not_blank(v, "the MLflow experiment's name"))
    model: ModelParams = Field(default_factory=ModelParams)
    data: DataParams = Field(default_factory=DataParams)
    couple: CoupleParams = Field(default_factory=CoupleParams)
    render: RenderParams = Field(default_factory=RenderParams)
    score: ScoreParams = Field(default_factory=ScoreParams)
    aggregate: AggregateParams = Field(default_factory=AggregateParams)


class ParamsError(ValueError):
    """``params.yaml`` is invalid; the message lists every problem."""


class _UniqueKeyLoader(yaml.SafeLoader):
    """YAML's safe loader, refusing a key given twice in one mapping (PyYAML keeps the last)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict:
        lines: dict[object, int] = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            if key in lines:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key {key!r} (first on line {lines[key]})",
                    key_node.start_mark)
            lines[key] = key_node.start_mark.line + 1
        return super().construct_mapping(node, deep=deep)


def read_yaml(path: Path) -> object:
    """Parse a UTF-8 YAML file strictly; ``ParamsError`` naming the file and line."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError as err:
        raise ParamsError(f"{path}: not found") from err
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as err:
        line = raw[:err.start].count(b"\n") + 1
        raise ParamsError(f"{path}: line {line} is not valid UTF-8 ({err.reason})") from None
    try:
        return yaml.load(text, Loader=_UniqueKeyLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.MarkedYAMLError as err:
        mark = err.problem_mark or err.context_mark
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        raise ParamsError(f"{path}: {where}not valid YAML: {err.problem or err.context}") from None
    except yaml.YAMLError as err:
        raise ParamsError(f"{path}: not valid YAML ({err})") from None


def dvc_param_keys(dvc_yaml: Path, params_file: str = "params.yaml") -> dict[str, str]:
    """Dotted keys of ``params_file`` that ``dvc.yaml``'s stages depend on -> a stage."""
    stages = (yaml.safe_load(dvc_yaml.read_text(encoding="utf-8")) or {}).get("stages", {})
    keys: dict[str, str] = {}
    for name, stage in stages.items():
        for entry in stage.get("params", []) if isinstance(stage, dict) else []:
            listed = [entry] if isinstance(entry, str) else entry.get(params_file) or []
            for key in listed:
                keys.setdefault(key, name)
    return keys


def _has_key(raw: object, dotted: str) -> bool:
    for part in dotted.split("."):
        if not isinstance(raw, dict) or part not in raw:
            return False
        raw = raw[part]
    return True


def load_params(path: str | Path = "params.yaml") -> Params:
    """Read and validate ``path``; raises ``ParamsError`` listing every problem."""
    path = Path(path)
    raw = read_yaml(path)
    if raw is None:
        raise ParamsError(f"{path}: the file is empty; it must define the study's parameters "
                          "(study, model, data, couple, render, score, aggregate)")
    if not isinstance(raw, dict):
        raise ParamsError(f"{path}: must be a mapping of sections, got {type(raw).__name__}")
    problems: list[str] = []
    dvc_yaml = path.parent / "dvc.yaml"
    if dvc_yaml.is_file():
        problems += [f"  {key}: missing (dvc.yaml's stage {stage!r} depends on it)"
                     for key, stage in dvc_param_keys(dvc_yaml, path.name).items()
                     if not _has_key(raw, key)]
    try:
        params = Params.model_validate(raw)
    except ValidationError as err:
        for e in err.errors():
            key = ".".join(str(p) for p in e["loc"])
            message = e["msg"].removeprefix("Value error, ")
            problems.append(f"  {key} = {e.get('input')!r}: {message}")
    if problems:
        raise ParamsError("\n".join([f"{path}: {len(problems)} problem(s):", *problems]))
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
