"""A procedural world for the trained toy model: one shape on a plain background, and
captions of it in varied phrasing.

A scene is five attributes: ``shape`` (circle, square, triangle), ``colour`` (five
saturated colours), ``size`` (small, large), ``position`` (a 3 x 3 grid) and
``background`` (black, gray, white). ``draw`` renders it exactly (no anti-aliasing) at
``SIZE`` x ``SIZE`` pixels; ``caption`` phrases it with one of ``TEMPLATES``. Everything is a
function of a seed: ``scenes(n, seed, split)`` draws the same scenes and captions on every
machine.

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
COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (220, 30, 30),
    "green": (30, 180, 40),
    "blue": (40, 70, 230),
    "yellow": (240, 220, 30),
    "purple": (150, 40, 190),
}
BACKGROUNDS: dict[str, tuple[int, int, int]] = {
    "black": (0, 0, 0),
    "gray": (128, 128, 128),
    "white": (255, 255, 255),
}
SIZES: dict[str, int] = {"small": 8, "large": 14}  # side of the shape's bounding box
ROWS = ("top", "middle", "bottom")
COLUMNS = ("left", "center", "right")
CENTRES = (7, 16, 25)  # pixel centre of each grid row / column


def _phrases(row: str, column: str) -> tuple[str, ...]:
    """The ways a grid cell is said (the middle row and center column have no word)."""
    if (row, column) == ("middle", "center"):
        return ("in the center", "in the middle")
    if row == "middle":
        return (f"on the {column}", f"at the {column} side")
    if column == "center":
        return (f"at the {row}", f"along the {row} edge")
    return (f"in the {row} {column} corner", f"at the {row} {column}")


POSITION_PHRASES = {(r, c): _phrases(r, c) for r in ROWS for c in COLUMNS}
TEMPLATES = (
    "a {size} {colour} {shape} {where}",
    "there is a {size} {colour} {shape} {where}",
    "a {size} {colour} {shape} {where} on a {background} background",
    "{where_cap} is a {size} {colour} {shape}",
    "a {colour} {shape}, {size}, {where}",
    "one {size} {colour} {shape} {where}, {background} background",
    "a picture of a {size} {colour} {shape} {where}",
    "{background} background with a {size} {colour} {shape} {where}",
)
HELD_OUT_TEMPLATES = frozenset({6, 7})  # indices into TEMPLATES
HELD_OUT_COMBOS = frozenset({("purple", "triangle"), ("yellow", "square")})

Split = Literal["train", "test"]


@dataclass(frozen=True)
class Scene:
    """One picture of the world, and how it is said."""

    shape: str
    colour: str
    size: str
    row: str
    column: str
    background: str
    template: int
    phrase: int  # which of the position's phrasings

    @property
    def position(self) -> str:
        """``top left``, ``middle center``, ..."""
        return f"{self.row} {self.column}"

    @property
    def held_out(self) -> bool:
        """Whether training never sees this scene's phrasing or colour-shape combination."""
        return self.template in HELD_OUT_TEMPLATES or (self.colour, self.shape) in HELD_OUT_COMBOS


def caption(scene: Scene) -> str:
    """The scene in words, with its template and position phrasing."""
    where = POSITION_PHRASES[(scene.row, scene.column)][scene.phrase]
    return TEMPLATES[scene.template].format(
        size=scene.size,
        colour=scene.colour,
        shape=scene.shape,
        where=where,
        where_cap=where[0].upper() + where[1:],
        background=scene.background,
    )


def mask(shape: str, size: str, row: str, column: str) -> np.ndarray:
    """The shape's pixels, a ``SIZE`` x ``SIZE`` boolean array."""
    side = SIZES[size]
    cy, cx = CENTRES[ROWS.index(row)], CENTRES[COLUMNS.index(column)]
    y, x = np.mgrid[0:SIZE, 0:SIZE] + 0.5  # pixel centres
    dy, dx = y - cy, x - cx
    half = side / 2
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
    image[mask(scene.shape, scene.size, scene.row, scene.column)] = COLOURS[scene.colour]
    return image


def scenes(n: int, seed: int, split: Split) -> list[Scene]:
    """``n`` scenes drawn from ``seed``: ``train`` never holds a held-out template or
    combination, ``test`` holds only scenes with at least one of them."""
    rng = np.random.default_rng([seed, 0 if split == "train" else 1])
    out: list[Scene] = []
    while len(out) < n:
        row, column = ROWS[rng.integers(3)], COLUMNS[rng.integers(3)]
        scene = Scene(
            shape=SHAPES[rng.integers(len(SHAPES))],
            colour=list(COLOURS)[rng.integers(len(COLOURS))],
            size=list(SIZES)[rng.integers(len(SIZES))],
            row=row,
            column=column,
            background=list(BACKGROUNDS)[rng.integers(len(BACKGROUNDS))],
            template=int(rng.integers(len(TEMPLATES))),
            phrase=int(rng.integers(len(POSITION_PHRASES[(row, column)]))),
        )
        if scene.held_out == (split == "test"):
            out.append(scene)
    return out
