"""Image strips and animated GIFs of rendered paths."""

from __future__ import annotations

import io
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image

from otpc import png
from otpc.atomic import write_bytes


def strip(frames: Sequence[np.ndarray], gap: int = 2) -> np.ndarray:
    """Frames (H, W, 3) side by side, separated by white gaps."""
    h = frames[0].shape[0]
    sep = np.full((h, gap, 3), 255, np.uint8)
    parts: list[np.ndarray] = []
    for f in frames:
        parts += [f, sep]
    return np.concatenate(parts[:-1], axis=1)


def grid(rows: Sequence[np.ndarray], gap: int = 2) -> np.ndarray:
    """Strips of equal width stacked vertically with white gaps."""
    w = max(r.shape[1] for r in rows)
    padded = [np.pad(r, ((0, 0), (0, w - r.shape[1]), (0, 0)), constant_values=255) for r in rows]
    sep = np.full((gap, w, 3), 255, np.uint8)
    parts: list[np.ndarray] = []
    for r in padded:
        parts += [r, sep]
    return np.concatenate(parts[:-1], axis=0)


def save_png(path: Path, image: np.ndarray) -> None:
    """Write ``image`` as a PNG whose bytes depend only on its pixels (``otpc.png``)."""
    write_bytes(path, png.encode(image))


def save_gif(path: Path, frames: Sequence[np.ndarray], ms_per_frame: int = 120) -> None:
    """A looping GIF that plays the path forward and back."""
    seq = list(frames) + list(frames[-2:0:-1])
    images = [Image.fromarray(f) for f in seq]
    buf = io.BytesIO()
    images[0].save(
        buf, format="GIF", save_all=True, append_images=images[1:], duration=ms_per_frame, loop=0
    )
    write_bytes(path, buf.getvalue())
