"""Image strips and animated GIFs of rendered paths."""

from __future__ import annotations

import io
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

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


def grid(
    rows: Sequence[np.ndarray], gap: int = 2, labels: Sequence[str] | None = None
) -> np.ndarray:
    """Strips stacked vertically with white gaps; with ``labels``, each row's label is
    written in a white margin on its left."""
    w = max(r.shape[1] for r in rows)
    padded = [np.pad(r, ((0, 0), (0, w - r.shape[1]), (0, 0)), constant_values=255) for r in rows]
    if labels is not None:
        padded = [
            _label(r, text, _label_width(labels)) for r, text in zip(padded, labels, strict=True)
        ]
        w = padded[0].shape[1]
    sep = np.full((gap, w, 3), 255, np.uint8)
    parts: list[np.ndarray] = []
    for r in padded:
        parts += [r, sep]
    return np.concatenate(parts[:-1], axis=0)


def _label_width(labels: Sequence[str]) -> int:
    font = ImageFont.load_default()
    return (
        max(int(ImageDraw.Draw(Image.new("RGB", (1, 1))).textlength(t, font=font)) for t in labels)
        + 12
    )


def _label(row: np.ndarray, text: str, width: int) -> np.ndarray:
    """``row`` with a white margin ``width`` px wide on its left, ``text`` centred in it
    vertically."""
    margin = Image.new("RGB", (width, row.shape[0]), "white")
    draw = ImageDraw.Draw(margin)
    font = ImageFont.load_default()
    top, bottom = draw.textbbox((0, 0), text, font=font)[1::2]
    draw.text((6, (row.shape[0] - (bottom - top)) // 2 - top), text, fill="black", font=font)
    return np.concatenate([np.asarray(margin), row], axis=1)


def save_png(path: Path, image: np.ndarray) -> None:
    """Write ``image`` as a PNG whose bytes depend only on its pixels (``otpc.png``)."""
    write_bytes(path, png.encode(image))


def save_gif(path: Path, frames: Sequence[np.ndarray], ms_per_frame: int = 120) -> None:
    """A looping GIF that plays the path forward and back. Each frame gets its own 256-colour
    palette by fast octree quantisation, once (Pillow's default, median cut, takes 40 times
    as long: 0.17 s a 512 px frame)."""
    forward = [
        Image.fromarray(f).quantize(256, method=Image.Quantize.FASTOCTREE, dither=Image.Dither.NONE)
        for f in frames
    ]
    images = forward + forward[-2:0:-1]
    buf = io.BytesIO()
    images[0].save(
        buf, format="GIF", save_all=True, append_images=images[1:], duration=ms_per_frame, loop=0
    )
    write_bytes(path, buf.getvalue())
