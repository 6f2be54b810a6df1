"""Prompt pairs from the toy world, scored by how many attributes their scenes share.

A pair's score is the number of the five attributes (shape, colour, size, position,
background) that its two scenes have in common: 0 to 4 (two scenes that share all five are
one scene said twice, a question of phrasing, and are not drawn). It plays the part of
CxC's 0-5 similarity rating, so the study's ``data.bins`` [0, 1, 2, 3, 4, 5] make one group
per score. Both captions use training templates that name all five attributes, so the
score is what the words say, and no held-out combination appears.
"""

from __future__ import annotations

import numpy as np
import polars as pl

from otpc.pairs import pair_id_for
from otpc.toy import world

ATTRIBUTES = ("shape", "colour", "size", "position", "background")
SCORES = range(len(ATTRIBUTES))  # 0 .. 4 shared attributes
# Training templates that state every attribute (the others leave the background unsaid).
FULL_TEMPLATES = tuple(
    i
    for i, t in enumerate(world.TEMPLATES)
    if "{background}" in t and i not in world.HELD_OUT_TEMPLATES
)
_CHOICES: dict[str, tuple[str, ...]] = {
    "shape": world.SHAPES,
    "colour": tuple(world.COLOURS),
    "size": tuple(world.SIZES),
    "position": tuple(f"{r} {c}" for r in world.ROWS for c in world.COLUMNS),
    "background": tuple(world.BACKGROUNDS),
}


def shared(a: world.Scene, b: world.Scene) -> int:
    """How many of the five attributes scenes ``a`` and ``b`` have in common."""
    return sum(getattr(a, name) == getattr(b, name) for name in ATTRIBUTES)


def _scene(rng: np.random.Generator, values: dict[str, str]) -> world.Scene:
    """A scene with ``values`` said by a random full template and position phrasing."""
    row, column = values["position"].split()
    return world.Scene(
        shape=values["shape"],
        colour=values["colour"],
        size=values["size"],
        row=row,
        column=column,
        background=values["background"],
        template=FULL_TEMPLATES[rng.integers(len(FULL_TEMPLATES))],
        phrase=int(rng.integers(len(world.POSITION_PHRASES[(row, column)]))),
    )


def _pair(rng: np.random.Generator, score: int) -> tuple[world.Scene, world.Scene]:
    """Two scenes sharing exactly ``score`` attributes: A at random, B keeping ``score`` of
    A's attributes and changing the others."""
    a_values = {name: str(rng.choice(options)) for name, options in _CHOICES.items()}
    kept = set(rng.choice(ATTRIBUTES, size=score, replace=False).tolist())
    b_values = {
        name: value if name in kept else str(rng.choice([o for o in _CHOICES[name] if o != value]))
        for name, value in a_values.items()
    }
    return _scene(rng, a_values), _scene(rng, b_values)


def toy_pairs(per_score: int, seed: int) -> pl.DataFrame:
    """``per_score`` distinct pairs for each score 0-4, drawn from ``seed``: ``pair_id``,
    ``prompt_a``, ``prompt_b``, ``score`` and a null ``sampling_method``."""
    rows: dict[str, dict[str, object]] = {}
    for score in SCORES:
        rng = np.random.default_rng([seed, score])
        found = 0
        while found < per_score:
            a, b = _pair(rng, score)
            if any((s.colour, s.shape) in world.HELD_OUT_COMBOS for s in (a, b)):
                continue
            text_a, text_b = world.caption(a), world.caption(b)
            pid = pair_id_for(text_a, text_b)
            if pid not in rows:
                score_ab = float(shared(a, b))
                rows[pid] = {
                    "pair_id": pid,
                    "prompt_a": text_a,
                    "prompt_b": text_b,
                    "score": score_ab,
                }
                found += 1
    return pl.DataFrame(list(rows.values())).with_columns(
        pl.lit(None, pl.String).alias("sampling_method")
    )
