"""Model presets and loading: every model, the tiny ones included, goes through
``DiffusionPipeline.from_pretrained``. ``load_pipeline`` returns the pipeline together with
what it was resolved to (``LoadedModel``).

Hub models are fetched (or found in the Hugging Face cache; offline mode is honoured) with
diffusers' own ``DiffusionPipeline.download``, and the revision is recorded as the commit
that was actually loaded, so a moving branch such as ``main`` never reuses stale frames.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch

from otpc.errors import InputError, ModelError
from otpc.params import ModelSpec
from otpc.quiet import quiet_libraries


@dataclass(frozen=True)
class Preset:
    """A named model: hub id (None: local, otpc's own), default revision, the dtype it runs
    in on CUDA, and the render settings its makers recommend (None: its pipeline's
    defaults), used where ``render.steps``, ``guidance``, ``height`` and ``width`` are unset.
    ``gated``: the hub repository needs its licence accepted and a token."""

    repo: str | None
    revision: str | None
    cuda_dtype: str
    note: str
    steps: int | None = None
    guidance: float | None = None
    size: int | None = None
    gated: bool = False


TOY = "toy"
PRESETS: dict[str, Preset] = {
    TOY: Preset(
        None,
        None,
        "float32",
        "otpc's toy model, SD-1.x-shaped, trained on a world of coloured shapes "
        "(not Stable Diffusion)",
        steps=6,
        guidance=1.0,  # it draws best without CFG (benchmarks/toy_quality.py)
    ),
    "tiny": Preset(None, None, "float32", "tiny SD-1.x-shaped pipeline, random weights"),
    "tiny-sd2": Preset(
        None, None, "float32", "tiny SD-2-shaped pipeline (v-prediction, DDIM), random weights"
    ),
    "tiny-sdxl": Preset(
        None, None, "float32", "tiny SDXL-shaped pipeline (two text encoders), random weights"
    ),
    "tiny-sd3": Preset(
        None, None, "float32", "tiny SD3-shaped pipeline (CLIP + T5 rows, MMDiT), random weights"
    ),
    "tiny-flux": Preset(
        None,
        None,
        "float32",
        "tiny FLUX.1-dev-shaped pipeline (T5 rows, MMDiT), random weights",
        size=32,  # FluxPipeline's default, 128 latent cells a side, would be 512 px
    ),
    "sd15": Preset(
        "stable-diffusion-v1-5/stable-diffusion-v1-5",
        "main",
        "float16",
        "Stable Diffusion 1.5, 77 x 768",
        steps=50,
        guidance=7.5,
        size=512,
    ),
    "sd21": Preset(
        "stabilityai/stable-diffusion-2-1-base",
        "main",
        "float16",
        "Stable Diffusion 2.1 base (epsilon prediction, 512 px), 77 x 1024",
        steps=50,
        guidance=7.5,
        size=512,
    ),
    "sdxl": Preset(
        "stabilityai/stable-diffusion-xl-base-1.0",
        "main",
        "float16",
        "SDXL base: 77 x 2048 rows plus a pooled 1280 vector (VAE decodes in fp32)",
        steps=50,
        guidance=5.0,
        size=1024,
    ),
    "sd3-medium": Preset(
        "stabilityai/stable-diffusion-3-medium-diffusers",
        "main",
        "bfloat16",
        "Stable Diffusion 3 Medium: 77 CLIP rows (2048, zero-padded to 4096) then 256 T5 "
        "rows x 4096, a pooled 2048 vector; MMDiT, CFG",
        steps=28,
        guidance=7.0,
        size=1024,
        gated=True,
    ),
    "sd35-medium": Preset(
        "stabilityai/stable-diffusion-3.5-medium",
        "main",
        "bfloat16",
        "Stable Diffusion 3.5 Medium: 77 CLIP rows then 256 T5 rows x 4096, pooled 2048; "
        "MMDiT-X, CFG",
        steps=40,
        guidance=4.5,
        size=1024,
        gated=True,
    ),
    "sd35-large": Preset(
        "stabilityai/stable-diffusion-3.5-large",
        "main",
        "bfloat16",
        "Stable Diffusion 3.5 Large (8B): 77 CLIP rows then 256 T5 rows x 4096, pooled "
        "2048; MMDiT, CFG",
        steps=28,
        guidance=3.5,
        size=1024,
        gated=True,
    ),
    "flux-dev": Preset(
        "black-forest-labs/FLUX.1-dev",
        "main",
        "bfloat16",
        "FLUX.1 [dev] (12B): 512 T5 rows x 4096 and CLIP-L's pooled 768 vector; guidance "
        "embedded (distilled), no CFG",
        steps=50,
        guidance=3.5,
        size=1024,
        gated=True,
    ),
    "flux-schnell": Preset(
        "black-forest-labs/FLUX.1-schnell",
        "main",
        "bfloat16",
        "FLUX.1 [schnell] (12B, timestep-distilled): 512 T5 rows x 4096 and a pooled 768 "
        "vector; no guidance",
        steps=4,
        guidance=0.0,
        size=1024,
    ),
}

DTYPES = {
    "float64": torch.float64,
    "float32": torch.float32,
    "float16": torch.float16,
    "bfloat16": torch.bfloat16,
}


@dataclass(frozen=True)
class Resolved:
    """A spec resolved to a concrete source, device and dtype."""

    source: str
    revision: str | None
    device: torch.device
    dtype: torch.dtype
    random_weights: bool
    stamp: str | None = None
    label: str | None = None  # the name to show (default: hub id, or a folder's name)

    @property
    def fingerprint(self) -> str:
        """Identifies what decides the pixels: source, revision (or, for a local folder, a
        stamp of its files), dtype and device type (fp16 CUDA and fp32 CPU frames differ).
        It holds no machine path, and nothing that can change while the weights stay."""
        label = self.label or (Path(self.source).name if self.stamp else self.source)
        return f"{label}@{self.revision}#{self.stamp}:{self.dtype}:{self.device.type}"


def loaded_files(folder: Path) -> list[Path]:
    """The files ``from_pretrained`` may read from a local diffusers folder:
    ``model_index.json`` and every file in the folders of the components it names. Files
    beside them (a model card, otpc's training record and loss log) are not among them,
    unless a component has no folder of its own (diffusers then reads it from the top
    level): then every file in the folder."""
    index = json.loads((folder / "model_index.json").read_text())
    named = [k for k, v in index.items() if isinstance(v, list) and v and v[0] is not None]
    if any(not (folder / name).is_dir() for name in named):
        return sorted(p for p in folder.rglob("*") if p.is_file())
    parts = [folder / name for name in sorted(named)]
    inside = [p for part in parts for p in sorted(part.rglob("*")) if p.is_file()]
    return [folder / "model_index.json", *inside]


def folder_stamp(folder: Path) -> str:
    """A content hash of the files a local diffusers folder loads from (``loaded_files``;
    seconds for SD 1.5's weights), so that re-exported weights at the same path never reuse
    frames of the old ones, a record updated beside the same weights keeps them, and the same
    model gives the same cache keys on every machine."""
    h = hashlib.sha256()
    for path in loaded_files(folder):
        h.update(f"{path.relative_to(folder).as_posix()}\n".encode())
        with open(path, "rb") as fh:
            h.update(hashlib.file_digest(fh, "sha256").digest())
    return h.hexdigest()[:16]


def pick_device(name: str = "auto") -> torch.device:
    """CUDA, then MPS, then CPU, unless a device is named."""
    if name != "auto":
        return torch.device(name)
    if torch.cuda.is_available():
        return torch.device("cuda")
    if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def auto_dtype(device: torch.device, preset: Preset | None) -> torch.dtype:
    """``model.dtype: auto``: the preset's half type on CUDA (float16 for other models),
    float32 on MPS, float64 on the CPU.

    float64 on the CPU makes results the same bytes on any machine: CPU kernels round
    differently by instruction set and thread count (about 1e-16 in float64, 1e-7 in
    float32), and only float64's differences stay far below what is stored (uint8 pixels,
    float32 embeddings, LPIPS rounded to float32). It is about half as fast as float32.
    """
    if device.type == "cuda":
        return DTYPES[preset.cuda_dtype] if preset is not None else torch.float16
    return torch.float32 if device.type == "mps" else torch.float64


def _local_preset(name: str) -> tuple[str, None, bool]:
    """The folder of a preset otpc ships (``toy``) or builds (the tiny ones), no revision,
    and whether its weights are random."""
    if name != TOY:
        from otpc.tiny import tiny_model_dir

        return str(tiny_model_dir(kind=name)), None, True
    from otpc.toy import MODEL_DIR

    if not (MODEL_DIR / "model_index.json").is_file():
        raise ModelError(
            f"the toy model's weights are missing from {MODEL_DIR} (an install without "
            "package data?); reinstall otpc from its repository, or train them with "
            "`otpc toy train`"
        )
    return str(MODEL_DIR), None, False


def preset_name(res: Resolved) -> str | None:
    """The name of the preset ``res`` was resolved from, if any (local ones by name, hub
    ones by id)."""
    for name, preset in PRESETS.items():
        if res.label == name or (preset.repo is not None and preset.repo == res.source):
            return name
    return None


def describe(res: Resolved) -> str:
    """The model in words, for every place results appear: a preset's name and note, else
    the hub id or folder name (with "random weights" for otpc's tiny folders)."""
    preset = preset_name(res)
    if preset is not None:
        return f"{preset}: {PRESETS[preset].note}"
    name = Path(res.source).name if res.stamp else res.source
    return f"{name} (random weights)" if res.random_weights else name


def _source(spec: ModelSpec) -> tuple[str, str | None, bool]:
    """(local folder or hub id, revision, random weights) of a spec."""
    preset = PRESETS.get(spec.name)
    if preset is not None and preset.repo is None:
        return _local_preset(spec.name)
    if preset is not None and preset.repo is not None:
        return preset.repo, spec.revision or preset.revision, False
    if Path(spec.name).is_dir():
        folder = Path(spec.name).resolve()
        if not (folder / "model_index.json").is_file():
            raise InputError(
                f"{spec.name!r} is a folder but not a diffusers pipeline (it has no "
                "model_index.json); save one with pipe.save_pretrained(folder)"
            )
        return str(folder), None, (folder / "OTPC_TINY.json").exists()
    if "/" in spec.name:
        return spec.name, spec.revision, False
    raise InputError(
        f"model {spec.name!r} is not a preset ({', '.join(PRESETS)}), "
        "a hub id (owner/name) or an existing local folder"
    )


def config_folder(spec: ModelSpec) -> Path:
    """A folder with the model's configuration files (no weights): the local folder, or the
    hub snapshot's JSON files, fetched into (or, offline, found in) the Hugging Face cache.
    ``ModelError`` with the command that fetches the model if they cannot be had."""
    source, revision, _ = _source(spec)
    if Path(source).is_dir():
        return Path(source)
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(source, revision=revision, allow_patterns=["*.json"]))
    except Exception as err:
        res = Resolved(source, revision, torch.device("cpu"), torch.float32, False)
        where = "is not in the cache (offline)" if _offline() else "could not be fetched"
        raise ModelError(
            f"model {source!r} (revision {revision}) {where}: "
            f"{type(err).__name__}\n{fetch_hint(res)}"
        ) from err


def resolve(spec: ModelSpec) -> Resolved:
    """Turn a spec into a source folder or hub id, device and dtype."""
    device = pick_device(spec.device)
    preset = PRESETS.get(spec.name)
    source, revision, random_weights = _source(spec)
    dtype = DTYPES[spec.dtype] if spec.dtype != "auto" else auto_dtype(device, preset)
    stamp = folder_stamp(Path(source)) if Path(source).is_dir() else None
    # A tiny preset is named by the preset: its folder's name changes with the builder's code.
    label = spec.name if preset is not None and preset.repo is None else None
    return Resolved(source, revision, device, dtype, random_weights, stamp, label)


def _offline() -> bool:
    from huggingface_hub import constants

    return bool(constants.HF_HUB_OFFLINE)


def fetch_hint(res: Resolved) -> str:
    """How to put exactly the files ``from_pretrained`` needs into the Hugging Face cache."""
    from huggingface_hub import constants

    rev = f", revision={res.revision!r}" if res.revision else ""
    preset = preset_name(res)
    gated = (
        f"{res.source} is gated: accept its licence at https://huggingface.co/{res.source} "
        "(logged in), then set HF_TOKEN to a token of that account (or run `hf auth login`) "
        "where it is fetched.\n"
        if preset is not None and PRESETS[preset].gated
        else ""
    )
    return (
        f"{gated}Fetch it on a machine with network access with\n  python -c "
        f'"from diffusers import DiffusionPipeline as P; P.download({res.source!r}{rev})"\n'
        f"It lands in the Hugging Face cache (here {constants.HF_HUB_CACHE}; copy it over or "
        "point HF_HOME at it); or set model.name to a local diffusers folder."
    )


def _no_safety_checker(folder: str) -> dict[str, object]:
    """Keyword arguments that drop the NSFW checker, for pipelines that have one."""
    index = json.loads((Path(folder) / "model_index.json").read_text())
    if "safety_checker" not in index:
        return {}
    return {"safety_checker": None, "requires_safety_checker": False}


@dataclass(frozen=True)
class LoadedModel:
    """A diffusers pipeline on its device, and what its spec was resolved to."""

    pipe: Any  # diffusers.DiffusionPipeline (imported lazily: importing diffusers is slow)
    resolved: Resolved


def load_pipeline(spec: ModelSpec) -> LoadedModel:
    """Load the pipeline for ``spec`` with ``from_pretrained`` and move it to its device;
    ``ModelError`` (with the command that fetches it) if it cannot be loaded."""
    from diffusers import DiffusionPipeline

    res = resolve(spec)
    local = Path(res.source).is_dir()
    try:
        # safetensors only: weights are never unpickled.
        folder = (
            res.source
            if local
            else DiffusionPipeline.download(res.source, revision=res.revision, use_safetensors=True)
        )
        with quiet_libraries():
            pipe = DiffusionPipeline.from_pretrained(
                folder, dtype=res.dtype, use_safetensors=True, **_no_safety_checker(folder)
            )
    except (OSError, ValueError) as err:
        what = f"{res.source!r} (revision {res.revision})"
        hint = (
            f"Hugging Face offline mode is on and model {what} is not in the cache"
            if _offline() and not local
            else f"could not load model {what}"
        )
        raise ModelError(f"{hint}: {err}\n{fetch_hint(res)}") from err
    if not local:  # the snapshot folder is named by the commit that was loaded
        res = replace(res, revision=Path(folder).name)
    pipe.set_progress_bar_config(disable=True)
    pipe.to(res.device)
    return LoadedModel(pipe, res)
