"""Read a toy scene's attributes back from its pixels: what the quality benchmark checks a
generated image against.

The background is the palette colour nearest the median border pixel; the shape is the set
of pixels nearer the object's colour than the background's, where the object's colour is
the palette colour nearest the mean of the pixels far from the background. From that set's
bounding box, ``w`` x ``h``: the shape and size are those whose drawn box (``world.mask``,
whole pixels) is nearest ``(w, h)`` on a log scale, ``(log w - log w')^2 + (log h - log h')^2``.
"""

from __future__ import annotations

import itertools
from typing import TypedDict

import numpy as np

from otpc.toy.world import BACKGROUNDS, COLOURS, SHAPES, SIZES, mask

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


def _extent(pixels: np.ndarray) -> tuple[int, int]:
    """Width and height in whole pixels of the bounding box of a boolean image's true pixels."""
    rows, cols = np.nonzero(pixels)
    return int(np.ptp(cols)) + 1, int(np.ptp(rows)) + 1


_BOXES = {  # (shape, size) -> log of the width and height of the box ``world.draw`` fills
    key: np.log(_extent(mask(*key))) for key in itertools.product(SHAPES, SIZES)
}


def _nearest_box(width: int, height: int) -> tuple[str, str]:
    """The (shape, size) whose drawn box is nearest ``width`` x ``height`` on a log scale."""
    seen = np.log([width, height])
    return min(_BOXES, key=lambda key: float(((_BOXES[key] - seen) ** 2).sum()))


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
    shape, size = _nearest_box(*_extent(body))
    return Detected(shape=shape, colour=colour, size=size, background=background)
