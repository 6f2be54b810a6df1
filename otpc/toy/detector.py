"""Read a toy scene's attributes back from its pixels: what the quality benchmark checks a
generated image against.

The background is the palette colour nearest the median border pixel; the shape is the set
of pixels nearer the object's colour than the background's, where the object's colour is
the palette colour nearest the mean of the pixels far from the background. From that set's
bounding box, ``w`` x ``h``: the size is the one whose side is nearest ``sqrt(w h)`` and the
shape the one whose aspect is nearest ``w / h`` on a log scale.
"""

from __future__ import annotations

import math
from typing import TypedDict

import numpy as np

from otpc.toy.world import ASPECTS, BACKGROUNDS, COLOURS, SIZES

FAR = 60.0  # RGB distance from the background above which a pixel is the object's


class Detected(TypedDict):
    """Attributes read from an image; ``None`` where nothing stands out of the background."""

    shape: str | None
    colour: str | None
    size: str | None
    background: str


def _nearest(colour: np.ndarray, palette: dict[str, tuple[int, int, int]]) -> str:
    """The palette name whose RGB is nearest ``colour``."""
    names = list(palette)
    rgb = np.array([palette[n] for n in names], float)
    return names[int(np.argmin(((rgb - colour) ** 2).sum(axis=1)))]


def _closest(value: float, scale: dict[str, float]) -> str:
    """The name on ``scale`` whose value is nearest ``value``."""
    return min(scale, key=lambda name: abs(scale[name] - value))


def detect(image: np.ndarray) -> Detected:
    """The attributes of the scene in ``image`` (H x W x 3 uint8, the world's size)."""
    pixels = image.astype(float)
    border = np.concatenate([pixels[0], pixels[-1], pixels[:, 0], pixels[:, -1]])
    background = _nearest(np.median(border, axis=0), BACKGROUNDS)
    bg = np.array(BACKGROUNDS[background], float)
    far = np.sqrt(((pixels - bg) ** 2).sum(axis=-1)) > FAR
    if not far.any():
        return Detected(shape=None, colour=None, size=None, background=background)
    colour = _nearest(pixels[far].mean(axis=0), COLOURS)
    fg = np.array(COLOURS[colour], float)
    body = ((pixels - fg) ** 2).sum(axis=-1) < ((pixels - bg) ** 2).sum(axis=-1)
    if not body.any():  # a generated smudge nearer the background than any colour
        body = far
    rows, cols = np.nonzero(body)
    height, width = rows.max() + 1 - rows.min(), cols.max() + 1 - cols.min()
    size = _closest(math.sqrt(width * height), {k: float(v) for k, v in SIZES.items()})
    shape = _closest(math.log(width / height), {k: math.log(v) for k, v in ASPECTS.items()})
    return Detected(shape=shape, colour=colour, size=size, background=background)
