"""The toy model's training settings (no heavy imports: the CLI reads their defaults)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class TrainConfig:
    """What decides the weights (with the code): seed, steps, batch and learning rates."""

    seed: int = 0
    vae_steps: int = 1200
    unet_steps: int = 9000
    batch_size: int = 32
    vae_lr: float = 2e-3
    unet_lr: float = 1e-3
    kl_weight: float = 1e-6
    foreground_weight: float = 10.0  # the shape's pixels weigh 1 + this in the autoencoder's loss
    uncond_rate: float = 0.1
    warmup: int = 100
    min_snr: float = 5.0
