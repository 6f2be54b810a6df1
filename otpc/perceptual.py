"""LPIPS distances and the Perceptual Path Length of a rendered path."""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from otpc.params import LpipsNet

BACKBONE_WEIGHTS: dict[LpipsNet, str] = {
    "alex": "AlexNet_Weights",
    "vgg": "VGG16_Weights",
    "squeeze": "SqueezeNet1_1_Weights",
}


def backbone_checkpoint(net: str) -> Path:
    """Where torchvision keeps the ImageNet weights of LPIPS's ``net`` backbone."""
    import torchvision

    if net not in BACKBONE_WEIGHTS:
        raise ValueError(f"unknown LPIPS net {net!r}; choose one of {sorted(BACKBONE_WEIGHTS)}")
    weights = getattr(torchvision.models, BACKBONE_WEIGHTS[net]).IMAGENET1K_V1
    return Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(weights.url)


@dataclass
class Lpips:
    """An LPIPS metric; ``pretrained_backbone`` says whether ImageNet weights were found."""

    model: torch.nn.Module
    net: str
    pretrained_backbone: bool
    device: torch.device
    dtype: torch.dtype

    @torch.no_grad()
    def distance(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """LPIPS between image batches in [-1, 1], shape (B, 3, H, W) -> (B,) float64."""
        x, y = (t.to(self.device, self.dtype) for t in (x, y))
        return self.model(x, y).flatten().to("cpu", torch.float64)


def load_lpips(net: str = "alex", device: torch.device | str = "cpu") -> Lpips:
    """LPIPS with the package's linear heads; the ImageNet backbone if it is in the torch
    hub cache (``$TORCH_HOME/hub/checkpoints``), else an untrained backbone seeded with 0
    (the global RNG is left as it was), which the caller must report.

    It computes in float64 on the CPU (so that, rounded to float32, distances are the same
    on every machine; see ``otpc.models.auto_dtype``) and in float32 on accelerators.
    """
    import lpips

    device = torch.device(device)
    dtype = torch.float64 if device.type == "cpu" else torch.float32
    pretrained = backbone_checkpoint(net).exists()
    with torch.random.fork_rng(devices=[]), warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # lpips uses torchvision's old arguments
        torch.manual_seed(0)
        model = lpips.LPIPS(net=net, pretrained=True, pnet_rand=not pretrained, verbose=False)
    model.eval().to(device, dtype)
    return Lpips(model, net, pretrained, device, dtype)


def to_lpips_input(images: np.ndarray) -> torch.Tensor:
    """uint8 (B, H, W, 3) -> float (B, 3, H, W) in [-1, 1]."""
    x = torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).float()
    return x / 127.5 - 1.0


def step_distances(metric: Lpips, frames: np.ndarray, batch_size: int = 64) -> np.ndarray:
    """d_k = LPIPS(I_k, I_{k+1}) for frames (K, H, W, 3) uint8, rounded to float32 precision
    (returned as float64): the last bits of the computation vary between machines."""
    x = to_lpips_input(frames)
    first, second = x[:-1], x[1:]
    out = [
        metric.distance(first[i : i + batch_size], second[i : i + batch_size])
        for i in range(0, len(first), batch_size)
    ]
    return torch.cat(out).numpy().astype(np.float32).astype(np.float64)


def path_length(distances: np.ndarray) -> tuple[float, float]:
    """(ppl, normalised ppl): the sum of steps, and mean_k d_k / dt^2 with dt = 1/(K-1)."""
    steps = len(distances)
    return float(np.sum(distances)), float(np.mean(distances) * steps**2)
