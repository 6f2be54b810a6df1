"""Checks of the params against the registries, the model's configuration and this machine,
before any work.

``otpc check`` and every stage run ``check``: the schema (``otpc.params``) and the registered
names (coupling methods; model presets where the model is checked) first, all problems at
once; then, if those pass, the checks below, so that a study that would fail part-way fails
before its first stage writes anything. What they read:

- the model's configuration files, never its weights (``otpc.models.config_folder``: the local
  folder, or the hub snapshot's JSON files in the Hugging Face cache): its model family, what
  ``render.height``/``width`` must be multiples of (the VAE's downsampling factor, times the
  denoiser's patch or packing), the scheduler's training steps for ``render.steps``,
  whether the scheduler draws noise in its steps (the study needs a deterministic one; it is
  built from its configuration and probed, see ``otpc.render.scheduler_draws_noise``), and
  whether the model can be had at all (``model.name``, ``model.revision``);
- this machine: whether ``model.device`` exists here, whether the data files exist,
  whether the frame cache (a folder or a URL) and the score cache can be written, and, where
  a stage's backend is ``ray``, whether Ray is installed and ``ray.address`` is well formed.
"""

from __future__ import annotations

import importlib.util
import json
import re
import tempfile
import uuid
from collections.abc import Collection
from pathlib import Path
from typing import Any

import torch
import yaml

from otpc.couplings import METHODS
from otpc.errors import OtpcError
from otpc.families import family_class
from otpc.frame_cache import is_url
from otpc.models import PRESETS, config_folder
from otpc.params import Params, raise_problems, read_params, schema_problems
from otpc.params import problem as _problem
from otpc.project import shared_path
from otpc.quiet import quiet_libraries
from otpc.render import scheduler_draws_noise, stochastic_scheduler_message
from otpc.study.layout import SCORE_CACHE


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


def dvc_key_problems(raw: dict[str, Any], path: Path) -> list[str]:
    """Keys that ``dvc.yaml`` beside ``path`` lists as stage parameters but ``raw`` lacks
    (DVC would stop at that stage, after the earlier ones ran)."""
    dvc_yaml = path.parent / "dvc.yaml"
    if not dvc_yaml.is_file():
        return []
    return [
        _problem(key, None, f"missing (dvc.yaml's stage {stage!r} depends on it)")
        for key, stage in dvc_param_keys(dvc_yaml, path.name).items()
        if not _has_key(raw, key)
    ]


def registry_problems(raw: dict[str, Any], model_name: bool = True) -> list[str]:
    """Names in the raw params that nothing registers: coupling methods and, if
    ``model_name``, the model (a preset, a hub id or a folder on this machine)."""
    problems = []
    couple, model = raw.get("couple"), raw.get("model")
    methods = couple.get("methods") if isinstance(couple, dict) else None
    if isinstance(methods, list):
        unknown = [m for m in methods if isinstance(m, str) and m not in METHODS]
        if unknown:
            problems.append(
                _problem(
                    "couple.methods",
                    methods,
                    f"unknown method(s) {unknown}; registered: {sorted(METHODS)}",
                )
            )
    name = model.get("name") if isinstance(model, dict) else None
    if (
        model_name
        and isinstance(name, str)
        and not (name in PRESETS or "/" in name or Path(name).is_dir())
    ):
        problems.append(
            _problem(
                "model.name",
                name,
                f"unknown model preset; use one of "
                f"{sorted(PRESETS)}, a hub id (owner/name) or a local "
                "diffusers folder",
            )
        )
    return problems


def device_problems(name: str) -> list[str]:
    """``model.device`` must exist on this machine."""
    if name in ("auto", "cpu"):
        return []
    device = torch.device(name)
    if device.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if (device.index is not None and device.index >= count) or count == 0:
            return [
                _problem(
                    "model.device",
                    name,
                    f"this machine has {count} CUDA device(s); use auto or cpu",
                )
            ]
    elif device.type == "mps":
        if not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
            return [_problem("model.device", name, "MPS is not available here; use auto or cpu")]
    elif device.type != "cpu":
        return [
            _problem("model.device", name, f"otpc renders on cpu, cuda or mps, not {device.type}")
        ]
    return []


def _read_json(path: Path) -> dict:
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}


def model_problems(params: Params) -> list[str]:
    """The model can be had, and the render sizes and steps suit it."""
    model, render = params.model, params.render
    try:
        folder = config_folder(model)
    except OtpcError as err:
        return [_problem("model.name", model.name, str(err))]
    index = _read_json(folder / "model_index.json")
    parts = {k: v[1] for k, v in index.items() if isinstance(v, list) and len(v) == 2 and v[1]}
    try:
        family = family_class(parts, str(index.get("_class_name")))
    except OtpcError as err:
        return [_problem("model.name", model.name, str(err))]
    vae = _read_json(folder / "vae" / "config.json")
    problems = []
    if vae.get("block_out_channels"):
        denoiser = _read_json(folder / family.denoiser_part / "config.json")
        multiple = family.size_multiple_of(vae, denoiser)
        for key in ("height", "width"):
            value = getattr(render, key)
            if value is not None and value % multiple:
                problems.append(
                    _problem(
                        f"render.{key}",
                        value,
                        f"must be a multiple of {multiple}, what the VAE's downsampling "
                        f"and the denoiser's patches of model {model.name!r} need",
                    )
                )
    scheduler = _read_json(folder / "scheduler" / "scheduler_config.json")
    train_steps = scheduler.get("num_train_timesteps")
    if train_steps is not None and render.steps is not None and render.steps > train_steps:
        problems.append(
            _problem(
                "render.steps",
                render.steps,
                f"model {model.name!r}'s "
                f"scheduler was trained with {train_steps} steps; use at most that",
            )
        )
    return problems + scheduler_problems(model.name, folder)


def scheduler_problems(name: str, folder: Path) -> list[str]:
    """The scheduler that loading the model at ``folder`` makes (the class named by
    model_index.json's "scheduler" entry, configured by scheduler/scheduler_config.json, as
    diffusers loads it) exists and draws no noise in its steps."""
    index_file = folder / "model_index.json"
    entry = _read_json(index_file).get("scheduler")
    if not (isinstance(entry, list) and len(entry) == 2 and entry[0] == "diffusers"):
        return []  # no scheduler, or another library's: nothing to build it from here
    import diffusers

    cls: Any = getattr(diffusers, str(entry[1]), None)
    is_scheduler = isinstance(cls, type) and issubclass(cls, diffusers.SchedulerMixin)
    if not is_scheduler:
        return [
            _problem(
                "model.name",
                name,
                f"{index_file} names scheduler {entry[1]!r}, which is not a scheduler of "
                f"diffusers {diffusers.__version__}",
            )
        ]
    with quiet_libraries():
        scheduler = cls.from_config(_read_json(folder / "scheduler" / "scheduler_config.json"))
        stochastic = scheduler_draws_noise(scheduler)
    if stochastic:
        return [
            _problem(
                "model.name", name, f"{index_file}: {stochastic_scheduler_message(cls.__name__)}"
            )
        ]
    return []


def metric_problems(params: Params) -> list[str]:
    """LPIPS loads for ``score``: its ImageNet weights are here, whole and the right ones (or
    the untrained backbone is asked for)."""
    from otpc.perceptual import load_lpips

    try:
        load_lpips(params.score.net, "cpu", params.score.backbone)
    except OtpcError as err:
        return [_problem("score.net", params.score.net, str(err))]
    return []


def data_problems(params: Params) -> list[str]:
    """The input files the ``sample`` stage reads exist, and have what ``aggregate`` needs."""
    data = params.data
    if params.aggregate.stratify_by == "sampling_method" and data.source != "cxc":
        return [
            _problem(
                "aggregate.stratify_by",
                "sampling_method",
                f"only CxC pairs have a sampling method (data.source is {data.source!r})",
            )
        ]
    if data.source == "csv" and not Path(data.path).is_file():
        return [_problem("data.path", data.path, "file not found")]
    if data.source == "cxc" and data.captions is not None and not Path(data.captions).is_file():
        return [_problem("data.captions", data.captions, "file not found")]
    return []


def writable_problem(key: str, value: str, folder: Path) -> list[str]:
    """``folder`` can be created and written (a file is made and removed)."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".otpc-check-"):
            pass
    except OSError as err:
        return [_problem(key, value, f"cannot write to {folder}: {err.strerror or err}")]
    return []


def url_writable_problem(key: str, url: str) -> list[str]:
    """The location ``url`` can be written through fsspec (an object is put and removed);
    a problem naming ``key`` and ``url`` if its scheme has no filesystem here, or if it
    cannot be reached or written."""
    import fsspec

    try:
        fs, root = fsspec.core.url_to_fs(url)
    except (ImportError, ValueError) as err:
        return [_problem(key, url, f"no filesystem for this URL here ({err})")]
    except Exception as err:  # a filesystem that connects when made (ftp)  # noqa: BLE001
        return [_problem(key, url, f"cannot reach it: {type(err).__name__}: {err}")]
    probe = f"{root.rstrip('/')}/.otpc-check-{uuid.uuid4().hex}"
    try:
        fs.pipe_file(probe, b"")
        fs.rm_file(probe)
    except Exception as err:  # each filesystem raises its own errors  # noqa: BLE001
        return [_problem(key, url, f"cannot write there: {type(err).__name__}: {err}")]
    return []


def cache_problems(params: Params) -> list[str]:
    """The frame cache (a folder or a URL) and the score cache can be written."""
    frames = params.render.cache_dir
    return (
        url_writable_problem("render.cache_dir", frames)
        if is_url(frames)
        else writable_problem("render.cache_dir", frames, shared_path(frames))
    ) + writable_problem("score cache", str(SCORE_CACHE), shared_path(str(SCORE_CACHE)))


RAY_ADDRESS = re.compile(r"auto|local|(ray://)?[\w.\-]+:\d+")


def ray_problems(params: Params) -> list[str]:
    """Where a stage's backend is ``ray``: Ray is installed and ``ray.address`` is one it
    takes (the cluster itself is reached when the stage starts)."""
    users = [f"{s}.backend" for s in ("render", "score") if getattr(params, s).backend == "ray"]
    if not users:
        return []
    found = []
    if importlib.util.find_spec("ray") is None:
        found.append(_problem(users[0], "ray", "Ray is not installed: pip install -e '.[ray]'"))
    if not RAY_ADDRESS.fullmatch(params.ray.address):
        found.append(
            _problem("ray.address", params.ray.address, "auto, local, host:port or ray://host:port")
        )
    return found


CHECKS = ("device", "data", "model", "metric", "caches", "ray")  # what ``preflight`` checks


def preflight(params: Params, checks: Collection[str] = CHECKS) -> list[str]:
    """Every problem the model's configuration or this machine finds with ``params``, among
    ``checks``: the device, the data files, the model (its configuration and sizes), the
    LPIPS weights, the frame and score caches, Ray where a backend uses it."""
    unknown = set(checks) - set(CHECKS)
    if unknown:
        raise ValueError(f"unknown preflight checks {sorted(unknown)}; known: {CHECKS}")
    found = []
    if "device" in checks:
        found += device_problems(params.model.device)
    if "data" in checks:
        found += data_problems(params)
    if "model" in checks:
        found += model_problems(params)
    if "metric" in checks:
        found += metric_problems(params)
    if "caches" in checks:
        found += cache_problems(params)
    if "ray" in checks:
        found += ray_problems(params)
    return found


def check(path: Path, checks: Collection[str] = CHECKS) -> Params:
    """The params in ``path``, checked by the schema, ``dvc.yaml`` and the registries, then
    by the preflight ``checks``; ``ParamsError`` listing every problem of the first phase
    that finds any."""
    raw = read_params(path)
    params, problems = schema_problems(raw)
    registries = registry_problems(raw, model_name="model" in checks)
    raise_problems(path, problems + dvc_key_problems(raw, path) + registries)
    assert params is not None
    raise_problems(path, preflight(params, checks))
    return params
