"""The ground truth of the metric on hand-drawn paths: frames drawn by the toy world, written
as PNG files, read back by the real detector; detours, extra changes and monotonicity known
by construction."""

from __future__ import annotations

from pathlib import Path

import polars as pl
import pytest

from otpc.images import save_png
from otpc.toy import world
from otpc.toy.detector import detect
from otpc.toy.path_truth import detect_paths, path_truth, truth_agreement, truth_by_method

ATTRS = ("shape", "colour", "size")


def scene(shape: str, colour: str, size: str = "large") -> world.Scene:
    return world.Scene(shape, colour, size, "middle", "center", "black", 0, 0)


A, B = scene("circle", "red"), scene("square", "red")
DETOUR = scene("circle", "blue")  # a colour of neither end
PATHS = {
    "clean": [A, A, B, B],
    "detour": [A, DETOUR, B],
    "back_and_forth": [A, B, A, B],
    "two_attributes": [A, scene("circle", "green", "small"), scene("square", "green", "small")],
}


def test_path_measures_on_hand_drawn_paths(tmp_path: Path) -> None:
    rows = []
    for path_id, scenes in PATHS.items():
        for k, s in enumerate(scenes):
            file = f"{path_id}/{k}.png"
            save_png(tmp_path / file, world.draw(s))
            rows.append({"path_id": path_id, "k": k, "file": file})
    truth = detect_paths(tmp_path, pl.DataFrame(rows), detect, ATTRS)
    got = {r["path_id"]: r for r in truth.iter_rows(named=True)}
    assert got["clean"] | {"path_id": None} == {
        "path_id": None,
        "detours": 0,
        "changes": 1,
        "min_changes": 1,
        "extra_changes": 0,
        "monotone_share": 1.0,
        "monotone": True,
        "clean": True,
    }
    assert got["detour"]["detours"] == 1 and got["detour"]["extra_changes"] == 2
    assert not got["detour"]["monotone"] and not got["detour"]["clean"]
    assert got["detour"]["monotone_share"] == pytest.approx(2 / 3)  # colour leaves and returns
    back = got["back_and_forth"]
    assert back["detours"] == 0 and back["changes"] == 3 and back["extra_changes"] == 2
    assert not back["monotone"] and back["monotone_share"] == pytest.approx(2 / 3)
    two = got["two_attributes"]  # colour and size change at frame 1, shape at frame 2
    assert two["min_changes"] == 3 and two["extra_changes"] == 0 and two["clean"]


def test_an_attribute_equal_at_both_ends_is_monotone_only_if_constant() -> None:
    frames = [{"shape": "circle"}, {"shape": "square"}, {"shape": "circle"}]
    out = path_truth(frames, ["shape"])
    assert out["detours"] == 1 and out["min_changes"] == 0 and not out["monotone"]
    assert path_truth(frames[:1] * 3, ["shape"])["monotone"]


def paths_table(ppl: dict[str, tuple[float, float]], badness: dict[str, tuple[int, int]]):
    rows = []
    for pair in ppl:
        for j, method in enumerate(("ot", "clip")):
            rows.append(
                {
                    "pair_id": pair,
                    "method": method,
                    "replicate": 0,
                    "ppl": ppl[pair][j],
                    "detours": badness[pair][j],
                    "extra_changes": 0,
                    "monotone": badness[pair][j] == 0,
                    "clean": badness[pair][j] == 0,
                }
            )
    return pl.DataFrame(rows)


def test_agreement_of_ppl_with_the_frames() -> None:
    """Pairs 1-3: the path with more detours has the larger ppl (ppl agrees); pair 4: the
    two paths are equally clean (not decided)."""
    badness = {"p1": (0, 2), "p2": (1, 0), "p3": (0, 1), "p4": (0, 0)}
    agreeing = paths_table(
        {"p1": (0.1, 0.5), "p2": (0.6, 0.2), "p3": (0.2, 0.3), "p4": (1, 2)}, badness
    )
    out = truth_agreement(agreeing, "ot", "clip")
    assert out["same_winner_share"] == 1.0 and out["pairs_decided"] == 3 and out["pairs_tied"] == 1
    flipped = paths_table(
        {"p1": (0.5, 0.1), "p2": (0.2, 0.6), "p3": (0.3, 0.2), "p4": (1, 2)}, badness
    )
    assert truth_agreement(flipped, "ot", "clip")["same_winner_share"] == 0.0
    by = truth_by_method(agreeing)
    assert by["ot"]["detour_share"] == 0.25 and by["clip"]["detour_share"] == 0.5
    assert by["ot"]["clean_share"] == 0.75 and by["ot"]["n"] == 4
