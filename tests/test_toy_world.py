"""The toy world: scenes and captions are a function of the seed, held-out phrasing and
combinations stay out of training, and the detector reads every attribute back exactly."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from otpc.toy.detector import detect
from otpc.toy.world import (
    BACKGROUNDS,
    COLOURS,
    HELD_OUT_COMBOS,
    HELD_OUT_TEMPLATES,
    SHAPES,
    SIZE,
    SIZES,
    TEMPLATES,
    Scene,
    box,
    caption,
    draw,
    mask,
    scenes,
)


def test_scenes_and_images_are_a_function_of_the_seed() -> None:
    first, again = scenes(40, 3, "train"), scenes(40, 3, "train")
    assert first == again
    assert all(np.array_equal(draw(a), draw(b)) for a, b in zip(first, again, strict=True))
    assert scenes(40, 4, "train") != first
    assert draw(first[0]).shape == (SIZE, SIZE, 3) and draw(first[0]).dtype == np.uint8


def test_training_never_sees_held_out_phrasing_or_combinations() -> None:
    train, test = scenes(3000, 0, "train"), scenes(1000, 0, "test")
    assert not any(s.template in HELD_OUT_TEMPLATES for s in train)
    assert not any((s.colour, s.shape) in HELD_OUT_COMBOS for s in train)
    assert all(s.held_out for s in test)
    assert {s.template for s in train} == set(range(len(TEMPLATES))) - HELD_OUT_TEMPLATES
    assert {s.template for s in test} == set(range(len(TEMPLATES)))


def test_captions_say_every_attribute_in_words() -> None:
    for scene in scenes(500, 1, "train") + scenes(500, 1, "test"):
        text = caption(scene)
        assert "{" not in text and "  " not in text
        for word in (scene.shape, scene.colour, scene.size):
            assert word in text
        assert f"{scene.background} background" in text


def test_shapes_are_graded_rectangles_of_one_area_per_size() -> None:
    """Aspect ratio (width / height) rises along SHAPES; a size fixes the area (the drawn
    pixels are the box's, up to rounding at the edges)."""
    for size, side in SIZES.items():
        boxes = [box(shape, size) for shape in SHAPES]
        assert [w * h for w, h in boxes] == pytest.approx([side**2] * len(SHAPES))
        ratios = [w / h for w, h in boxes]
        assert ratios == sorted(ratios) and ratios[len(ratios) // 2] == 1.0
        for shape, (w, h) in zip(SHAPES, boxes, strict=True):
            rows, cols = np.nonzero(mask(shape, size))
            assert abs(np.ptp(cols) + 1 - w) <= 1 and abs(np.ptp(rows) + 1 - h) <= 1


def test_detector_reads_every_attribute_of_every_scene() -> None:
    for shape, colour, size, background in itertools.product(SHAPES, COLOURS, SIZES, BACKGROUNDS):
        scene = Scene(shape, colour, size, background, 0)
        assert detect(draw(scene)) == {
            "shape": shape,
            "colour": colour,
            "size": size,
            "background": background,
        }, caption(scene)


def test_detector_finds_nothing_on_a_blank_background() -> None:
    for name, rgb in BACKGROUNDS.items():
        blank = np.empty((SIZE, SIZE, 3), np.uint8)
        blank[:] = rgb
        found = detect(blank)
        assert found["background"] == name
        assert found["shape"] is found["colour"] is found["size"] is None
