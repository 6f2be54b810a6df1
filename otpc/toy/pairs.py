"""Prompt pairs from the toy world, scored by how many drawn attributes their scenes share.

Of the four attributes (shape, colour, size, background), a study counts those the model
draws (``data.toy_attributes``): a pair's two scenes may differ only in them, and
share every other one, so every difference the words make is one the images can show. Its
score is the number of counted attributes the scenes have in common, 0 to n - 1 (scenes that
share all of them are one scene said twice, a question of phrasing, and are not drawn); it
plays the part of CxC's similarity rating, and ``data.bins`` [0, 1, ..., n] make one group
per score. Both captions use training templates (each names all four attributes), so the
score is what the words say, and no held-out combination appears.
"""

from __future__ import annotations

from collections.abc import Sequence
from itertools import product

import numpy as np
import polars as pl

from otpc.pairs import pair_id_for
from otpc.params import TOY_ATTRIBUTES
from otpc.toy import world

ATTRIBUTES = TOY_ATTRIBUTES
FULL_TEMPLATES = tuple(  # the training templates
    i for i in range(len(world.TEMPLATES)) if i not in world.HELD_OUT_TEMPLATES
)
_CHOICES: dict[str, tuple[str, ...]] = {
    "shape": world.SHAPES,
    "colour": tuple(world.COLOURS),
    "size": tuple(world.SIZES),
    "background": tuple(world.BACKGROUNDS),
}


def scenes_by_caption() -> dict[str, world.Scene]:
    """Every scene said with every training template, by its caption: all the captions a
    toy pair can have, and what each says."""
    scenes = (
        world.Scene(shape, colour, size, background, template)
        for shape, colour, size, background in product(*_CHOICES.values())
        for template in FULL_TEMPLATES
    )
    return {world.caption(scene): scene for scene in scenes}


def shared(a: world.Scene, b: world.Scene, counted: Sequence[str] = ATTRIBUTES) -> int:
    """How many of the ``counted`` attributes scenes ``a`` and ``b`` have in common."""
    return sum(getattr(a, name) == getattr(b, name) for name in counted)


def _scene(rng: np.random.Generator, values: dict[str, str]) -> world.Scene:
    """A scene with ``values`` said by a random training template."""
    return world.Scene(
        shape=values["shape"],
        colour=values["colour"],
        size=values["size"],
        background=values["background"],
        template=FULL_TEMPLATES[rng.integers(len(FULL_TEMPLATES))],
    )


def _pair(
    rng: np.random.Generator, score: int, counted: Sequence[str]
) -> tuple[world.Scene, world.Scene]:
    """Two scenes sharing exactly ``score`` of the ``counted`` attributes and every other
    one: A at random, B keeping ``score`` of A's counted attributes and changing the rest."""
    a_values = {name: str(rng.choice(options)) for name, options in _CHOICES.items()}
    kept = set(rng.choice(counted, size=score, replace=False).tolist())
    kept |= set(ATTRIBUTES) - set(counted)
    b_values = {
        name: value if name in kept else str(rng.choice([o for o in _CHOICES[name] if o != value]))
        for name, value in a_values.items()
    }
    return _scene(rng, a_values), _scene(rng, b_values)


def toy_pairs(per_score: int, seed: int, counted: Sequence[str] = ATTRIBUTES) -> pl.DataFrame:
    """``per_score`` distinct pairs for each score 0 .. len(counted) - 1, drawn from
    ``seed``: ``pair_id``, ``prompt_a``, ``prompt_b``, ``score`` and a null
    ``sampling_method``."""
    rows: dict[str, dict[str, object]] = {}
    for score in range(len(counted)):
        rng = np.random.default_rng([seed, score])
        found = 0
        while found < per_score:
            a, b = _pair(rng, score, counted)
            if any((s.colour, s.shape) in world.HELD_OUT_COMBOS for s in (a, b)):
                continue
            text_a, text_b = world.caption(a), world.caption(b)
            pid = pair_id_for(text_a, text_b)
            if pid not in rows:
                rows[pid] = {
                    "pair_id": pid,
                    "prompt_a": text_a,
                    "prompt_b": text_b,
                    "score": float(shared(a, b, counted)),
                }
                found += 1
    return pl.DataFrame(list(rows.values())).with_columns(
        pl.lit(None, pl.String).alias("sampling_method")
    )
