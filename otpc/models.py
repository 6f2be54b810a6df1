"""Model presets and loading: every model, the tiny default included, goes through
``DiffusionPipeline.from_pretrained``."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import torch


@dataclass(frozen=True)
class Preset:
    """A named model: hub id, pinned revision and the dtype it is run in on CUDA."""

    repo: str
    revision: str | None
    cuda_dtype: str
    note: str


PRESETS: dict[str, Preset] = {
    "tiny": Preset("tiny", None, "float32", "tiny SD-1.x-shaped pipeline, random weights"),
    "sd15": Preset("stable-diffusion-v1-5/stable-diffusion-v1-5", "main", "float16",
                   "Stable Diffusion 1.5, 77 x 768"),
    "sd21": Preset("stabilityai/stable-diffusion-2-1-base", "main", "float16",
                   "Stable Diffusion 2.1 base, 77 x 1024"),
    "sdxl": Preset("stabilityai/stable-diffusion-xl-base-1.0", "main", "float16",
                   "SDXL base: 77 x 2048 rows plus a pooled 1280 vector"),
}

DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


@dataclass(frozen=True)
class ModelSpec:
    """What to load: a preset name, hub id or local folder, and how."""

    name: str = "tiny"
    revision: str | None = None
    dtype: str = "auto"
    device: str = "auto"


@dataclass(frozen=True)
class Resolved:
    """A spec resolved to a concrete source, device and dtype."""

    source: str
    revision: str | None
    device: torch.device
    dtype: torch.dtype
    random_weights: bool

    @property
    def fingerprint(self) -> str:
        """Identifies the weights for caching: source, revision and dtype."""
        return f"{self.source}@{self.revision}:{self.dtype}"


def pick_device(name: str = "auto") -> torch.device:
    """CUDA, then MPS, then CPU, unless a device is named."""
    if name != "auto":
        return torch.device(name)
    if torch.cuda.is_available():
        return torch.device("cuda")
    if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def resolve(spec: ModelSpec) -> Resolved:
    """Turn a spec into a source folder or hub id, device and dtype."""
    device = pick_device(spec.device)
    preset = PRESETS.get(spec.name)
    if spec.name == "tiny":
        from otpc.tiny import tiny_model_dir

        source, revision, random_weights = str(tiny_model_dir()), None, True
    elif preset is not None:
        source, revision, random_weights = preset.repo, spec.revision or preset.revision, False
    elif Path(spec.name).is_dir():
        source, revision = str(Path(spec.name).resolve()), None
        random_weights = (Path(spec.name) / "OTPC_TINY.json").exists()
    elif "/" in spec.name:
        source, revision, random_weights = spec.name, spec.revision, False
    else:
        raise ValueError(f"model {spec.name!r} is not a preset ({', '.join(PRESETS)}), "
                         "a hub id (owner/name) or an existing local folder")
    if spec.dtype != "auto":
        dtype = DTYPES[spec.dtype]
    elif device.type == "cuda" and preset is not None:
        dtype = DTYPES[preset.cuda_dtype]
    elif device.type == "cuda":
        dtype = torch.float16
    else:
        dtype = torch.float32
    return Resolved(source, revision, device, dtype, random_weights)


def load_pipeline(spec: ModelSpec):  # -> diffusers.DiffusionPipeline
    """Load the pipeline for ``spec`` with ``from_pretrained`` and move it to its device."""
    from diffusers import DiffusionPipeline

    res = resolve(spec)
    try:
        pipe = DiffusionPipeline.from_pretrained(
            res.source, revision=res.revision, dtype=res.dtype, safety_checker=None,
            requires_safety_checker=False)
    except (OSError, ValueError) as err:
        offline = os.environ.get("HF_HUB_OFFLINE", "0") not in ("", "0", "false", "False")
        hint = (f"Hugging Face offline mode is on and {res.source!r} (revision {res.revision}) is "
                "not in the cache" if offline else f"could not load {res.source!r}")
        raise RuntimeError(
            f"{hint}: {err}\nFetch it on a machine with network access with "
            f"`huggingface-cli download {res.source}` (it lands in the cache at "
            f"{os.environ.get('HF_HOME', '~/.cache/huggingface')}), or set model.name to a "
            "local diffusers folder.") from err
    pipe.set_progress_bar_config(disable=True)
    pipe.to(res.device)
    pipe.otpc_resolved = res
    return pipe
