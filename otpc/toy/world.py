"""A procedural world for the trained toy model: one centred shape on a plain background,
and captions of it in varied phrasing that state every attribute.

A scene is four attributes: ``shape`` (circle, square, triangle), ``colour`` (eight hues
around the colour wheel), ``size`` (small, medium, large) and ``background`` (black, gray,
white). The attributes are graded (neighbouring hues, sizes and backgrounds are near each
other in pixels) so that a path between two scenes has in-between pictures to pass through.
There is no position: the shape is always centred, and every caption names all four
attributes, so that everything a caption says is drawn and everything drawn is said (the
first world's 3 x 3 position grid, and backgrounds left unsaid by most captions, were what
its model never learned). ``draw`` renders a scene exactly (no anti-aliasing) at ``SIZE`` x
``SIZE`` pixels; ``caption`` phrases it with one of ``TEMPLATES``. Everything is a function
of a seed: ``scenes(n, seed, split)`` draws the same scenes and captions on every machine.

Held out of training (``split="test"`` draws only these, ``"train"`` never does): the
templates in ``HELD_OUT_TEMPLATES`` and the (colour, shape) combinations in
``HELD_OUT_COMBOS``, so the quality benchmark measures phrasing and composition the model
never saw.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

SIZE = 32  # pixels per side
SHAPES = ("circle", "square", "triangle")
COLOURS: dict[str, tuple[int, int, int]] = {  # around the hue wheel
    "red": (230, 30, 30),
    "orange": (245, 140, 20),
    "yellow": (240, 230, 30),
    "green": (40, 190, 50),
    "cyan": (30, 210, 220),
    "blue": (40, 70, 230),
    "purple": (150, 50, 210),
    "pink": (240, 80, 180),
}
BACKGROUNDS: dict[str, tuple[int, int, int]] = {
    "black": (0, 0, 0),
    "gray": (128, 128, 128),
    "white": (255, 255, 255),
}
SIZES: dict[str, int] = {"small": 10, "medium": 16, "large": 22}  # side of the shape's box
CENTRE = SIZE / 2  # the shape's centre, in pixels

TEMPLATES = (
    "a {size} {colour} {shape} on a {background} background",
    "there is a {size} {colour} {shape} on a {background} background",
    "{background} background, {size} {colour} {shape}",
    "a {colour} {shape}, {size}, {background} background",
    "one {size} {colour} {shape} in front of a {background} background",
    "a {size} {shape} in {colour} on a {background} background",
    "a picture of a {size} {colour} {shape} on a {background} background",
    "{background} background with a {size} {colour} {shape}",
)
HELD_OUT_TEMPLATES = frozenset({6, 7})  # indices into TEMPLATES
HELD_OUT_COMBOS = frozenset({("purple", "triangle"), ("yellow", "square"), ("cyan", "circle")})

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


def mask(shape: str, size: str) -> np.ndarray:
    """The shape's pixels, a ``SIZE`` x ``SIZE`` boolean array."""
    half = SIZES[size] / 2
    y, x = np.mgrid[0:SIZE, 0:SIZE] + 0.5  # pixel centres
    dy, dx = y - CENTRE, x - CENTRE
    if shape == "circle":
        return dy**2 + dx**2 <= half**2
    if shape == "square":
        return (np.abs(dy) <= half) & (np.abs(dx) <= half)
    if shape == "triangle":  # apex up, base at the bottom of the box
        inside_rows = (dy >= -half) & (dy <= half)
        return inside_rows & (np.abs(dx) <= (dy + half) / 2)
    raise ValueError(f"unknown shape {shape!r}")


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
