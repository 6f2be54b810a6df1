"""Prompt pairs from the toy world, scored by how many attributes their scenes share.

A pair's score is the number of the four attributes (shape, colour, size, background) that
its two scenes have in common: 0 to 3 (two scenes that share all four are one scene said
twice, a question of phrasing, and are not drawn). It plays the part of CxC's 0-5
similarity rating, so the study's ``data.bins`` [0, 1, 2, 3, 4, 5] make one group per
score. Both captions use training templates (every template names all four attributes), so
the score is what the words say, and no held-out combination appears.
"""

from __future__ import annotations

import numpy as np
import polars as pl

from otpc.pairs import pair_id_for
from otpc.toy import world

ATTRIBUTES = ("shape", "colour", "size", "background")
SCORES = range(len(ATTRIBUTES))  # 0 .. 3 shared attributes
# The training templates (each states every attribute).
FULL_TEMPLATES = tuple(i for i in range(len(world.TEMPLATES)) if i not in world.HELD_OUT_TEMPLATES)
CHOICES: dict[str, tuple[str, ...]] = {
    "shape": world.SHAPES,
    "colour": tuple(world.COLOURS),
    "size": tuple(world.SIZES),
    "background": tuple(world.BACKGROUNDS),
}


def shared(a: world.Scene, b: world.Scene) -> int:
    """How many of the four attributes scenes ``a`` and ``b`` have in common."""
    return sum(getattr(a, name) == getattr(b, name) for name in ATTRIBUTES)


def _scene(rng: np.random.Generator, values: dict[str, str]) -> world.Scene:
    """A scene with ``values`` said by a random training template."""
    return world.Scene(
        shape=values["shape"],
        colour=values["colour"],
        size=values["size"],
        background=values["background"],
        template=FULL_TEMPLATES[rng.integers(len(FULL_TEMPLATES))],
    )


def _pair(rng: np.random.Generator, score: int) -> tuple[world.Scene, world.Scene]:
    """Two scenes sharing exactly ``score`` attributes: A at random, B keeping ``score`` of
    A's attributes and changing the others."""
    a_values = {name: str(rng.choice(options)) for name, options in CHOICES.items()}
    kept = set(rng.choice(ATTRIBUTES, size=score, replace=False).tolist())
    b_values = {
        name: value if name in kept else str(rng.choice([o for o in CHOICES[name] if o != value]))
        for name, value in a_values.items()
    }
    return _scene(rng, a_values), _scene(rng, b_values)


def scene_pairs(per_score: int, seed: int) -> list[tuple[world.Scene, world.Scene]]:
    """``per_score`` pairs of scenes for each score 0-3 (distinct captions), from ``seed``."""
    out: list[tuple[world.Scene, world.Scene]] = []
    ids: set[str] = set()
    for score in SCORES:
        rng = np.random.default_rng([seed, score])
        found = 0
        while found < per_score:
            a, b = _pair(rng, score)
            if any((s.colour, s.shape) in world.HELD_OUT_COMBOS for s in (a, b)):
                continue
            pid = pair_id_for(world.caption(a), world.caption(b))
            if pid not in ids:
                ids.add(pid)
                out.append((a, b))
                found += 1
    return out


def toy_pairs(per_score: int, seed: int) -> pl.DataFrame:
    """``per_score`` distinct pairs for each score 0-3, drawn from ``seed``: ``pair_id``,
    ``prompt_a``, ``prompt_b``, ``score`` and a null ``sampling_method``."""
    rows = []
    for a, b in scene_pairs(per_score, seed):
        text_a, text_b = world.caption(a), world.caption(b)
        rows.append(
            {
                "pair_id": pair_id_for(text_a, text_b),
                "prompt_a": text_a,
                "prompt_b": text_b,
                "score": float(shared(a, b)),
            }
        )
    return pl.DataFrame(rows).with_columns(pl.lit(None, pl.String).alias("sampling_method"))
