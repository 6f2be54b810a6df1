"""A procedural world for the trained toy model: one shape in the middle of a plain
background, and captions of it in varied phrasing.

A scene is four attributes, each graded so that a model can pass *between* two values, and
each with words for the values between (captions that name them teach the model that the
space between two values is filled, so its paths morph instead of switching):

- ``shape``: a rectangle on a scale of nine aspect ratios (``tall bar`` 1:3, ``tall slab``
  1:2.25, ``tall box`` 1:1.7, ``tall block`` 1:1.3, ``square``, then the same wide), all of
  the same area, so a tall bar becomes a wide one through the forms between;
- ``colour``: twelve hues about 30 degrees apart around the hue wheel;
- ``size``: five sizes (the side of a square of the shape's area: 8 to 16 pixels by 2);
- ``background``: five grays from black to white, said in every caption.

(Version 1 of the world also placed the shape on a 3 x 3 grid: its model never learned where,
10% right, and those words said nothing the pictures showed. Position went. Version 2 had
five shapes, six hues, three sizes and three backgrounds: its model drew them, but its paths
switched from one named value to the next in a frame or two; version 3 named the values
between.)

``draw`` renders a scene exactly (no anti-aliasing) at ``SIZE`` x ``SIZE`` pixels;
``caption`` phrases it with one of ``TEMPLATES``. Everything is a function of a seed:
``scenes(n, seed, split)`` draws the same scenes and captions on every machine.

Held out of training (``split="test"`` draws only these, ``"train"`` never does): the
templates in ``HELD_OUT_TEMPLATES`` and the (colour, shape) combinations in
``HELD_OUT_COMBOS``, so the quality benchmark measures phrasing and composition the model
never saw.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import numpy as np

SIZE = 32  # pixels per side
ASPECTS: dict[str, float] = {  # width / height of each shape
    "tall bar": 1 / 3,
    "tall slab": 1 / 2.25,
    "tall box": 1 / 1.7,
    "tall block": 1 / 1.3,
    "square": 1.0,
    "wide block": 1.3,
    "wide box": 1.7,
    "wide slab": 2.25,
    "wide bar": 3.0,
}
SHAPES = tuple(ASPECTS)
COLOURS: dict[str, tuple[int, int, int]] = {  # hues about 30 degrees apart, round the wheel
    "red": (230, 40, 40),
    "orange": (230, 125, 35),
    "yellow": (230, 210, 30),
    "lime": (135, 195, 45),
    "green": (40, 180, 60),
    "teal": (40, 185, 130),
    "cyan": (40, 190, 200),
    "azure": (45, 135, 215),
    "blue": (50, 80, 230),
    "violet": (125, 65, 215),
    "magenta": (200, 50, 200),
    "pink": (215, 45, 120),
}
BACKGROUNDS: dict[str, tuple[int, int, int]] = {  # dark to light
    "black": (0, 0, 0),
    "dark gray": (64, 64, 64),
    "gray": (128, 128, 128),
    "light gray": (192, 192, 192),
    "white": (255, 255, 255),
}
SIZES: dict[str, int] = {  # side of a square as large
    "small": 8,
    "smallish": 10,
    "medium": 12,
    "biggish": 14,
    "large": 16,
}
TEMPLATES = (
    "a {size} {colour} {shape} on a {background} background",
    "there is a {size} {colour} {shape} on a {background} background",
    "a {colour} {shape}, {size}, on a {background} background",
    "{background} background with a {size} {colour} {shape}",
    "one {size} {colour} {shape}, {background} background",
    "a {size} {shape} in {colour} on a {background} background",
    "a picture of a {size} {colour} {shape} on a {background} background",
    "on a {background} background, a {colour} {shape} that is {size}",
)
HELD_OUT_TEMPLATES = frozenset({6, 7})  # indices into TEMPLATES
HELD_OUT_COMBOS = frozenset({("magenta", "tall bar"), ("yellow", "wide box")})

Split = Literal["train", "test"]


@dataclass(frozen=True)
class Scene:
    """One picture of the world, and how it is said."""

    shape: str
    colour: str
    size: str
    background: str
    template: int

    @property
    def held_out(self) -> bool:
        """Whether training never sees this scene's phrasing or colour-shape combination."""
        return self.template in HELD_OUT_TEMPLATES or (self.colour, self.shape) in HELD_OUT_COMBOS


def caption(scene: Scene) -> str:
    """The scene in words, with its template."""
    return TEMPLATES[scene.template].format(
        size=scene.size, colour=scene.colour, shape=scene.shape, background=scene.background
    )


def box(shape: str, size: str) -> tuple[float, float]:
    """The shape's width and height in pixels: area ``SIZES[size]**2``, aspect
    ``ASPECTS[shape]``."""
    side, aspect = SIZES[size], ASPECTS[shape]
    return side * math.sqrt(aspect), side / math.sqrt(aspect)


def mask(shape: str, size: str) -> np.ndarray:
    """The shape's pixels, a ``SIZE`` x ``SIZE`` boolean array (centred)."""
    width, height = box(shape, size)
    y, x = np.mgrid[0:SIZE, 0:SIZE] + 0.5  # pixel centres
    centre = SIZE / 2
    return (np.abs(x - centre) <= width / 2) & (np.abs(y - centre) <= height / 2)


def draw(scene: Scene) -> np.ndarray:
    """The scene as a ``SIZE`` x ``SIZE`` x 3 uint8 image."""
    image = np.empty((SIZE, SIZE, 3), np.uint8)
    image[:] = BACKGROUNDS[scene.background]
    image[mask(scene.shape, scene.size)] = COLOURS[scene.colour]
    return image


def scenes(n: int, seed: int, split: Split) -> list[Scene]:
    """``n`` scenes drawn from ``seed``: ``train`` never holds a held-out template or
    combination, ``test`` holds only scenes with at least one of them."""
    rng = np.random.default_rng([seed, 0 if split == "train" else 1])
    out: list[Scene] = []
    while len(out) < n:
        scene = Scene(
            shape=SHAPES[rng.integers(len(SHAPES))],
            colour=list(COLOURS)[rng.integers(len(COLOURS))],
            size=list(SIZES)[rng.integers(len(SIZES))],
            background=list(BACKGROUNDS)[rng.integers(len(BACKGROUNDS))],
            template=int(rng.integers(len(TEMPLATES))),
        )
        if scene.held_out == (split == "test"):
            out.append(scene)
    return out
