"""The ground truth of the metric on hand-drawn paths: frames drawn by the toy world, written
as PNG files, read back by the real detector; detours, extra changes and monotonicity known
by construction, on the attributes' scales."""

from __future__ import annotations

from pathlib import Path

import polars as pl
import pytest

from otpc.images import save_png
from otpc.toy import world
from otpc.toy.detector import detect
from otpc.toy.path_truth import detect_paths, path_truth, steps, truth_agreement, truth_by_method

ATTRS = ("shape", "colour", "size")


def scene(shape: str, colour: str, size: str = "large") -> world.Scene:
    return world.Scene(shape, colour, size, "black", 0)


A, B = scene("square", "red"), scene("wide block", "red")  # one step apart on the shape scale
DETOUR = scene("square", "blue")  # a colour of neither end
PATHS = {
    "clean": [A, A, B, B],
    "detour": [A, DETOUR, B],
    "back_and_forth": [A, B, A, B],
    "two_attributes": [A, scene("square", "green", "small"), scene("wide block", "green", "small")],
    # tall to wide through the square: the forms between are on the way, not detours
    "morph": [scene("tall bar", "red"), scene("tall box", "red"), A, B, scene("wide bar", "red")],
    "jump": [scene("tall bar", "red"), scene("wide bar", "red")],
    "past_the_end": [A, scene("wide bar", "red"), B],
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
    # red -> blue -> red: four hues each way round the wheel (red, pink, magenta, violet, blue)
    assert got["detour"]["detours"] == 1 and got["detour"]["extra_changes"] == 8
    assert not got["detour"]["monotone"] and not got["detour"]["clean"]
    assert got["detour"]["monotone_share"] == pytest.approx(2 / 3)  # colour leaves and returns
    back = got["back_and_forth"]
    assert back["detours"] == 0 and back["changes"] == 3 and back["extra_changes"] == 2
    assert not back["monotone"] and back["monotone_share"] == pytest.approx(2 / 3)
    two = got["two_attributes"]  # red -> green: four hues; large -> small: four sizes
    assert two["min_changes"] == 9 and two["extra_changes"] == 0 and two["clean"]
    for graded in ("morph", "jump"):  # eight shape steps, either way: both clean
        assert got[graded]["min_changes"] == got[graded]["changes"] == 8 and got[graded]["clean"]
    past = got["past_the_end"]  # square -> wide bar -> wide block: overshoots B
    assert past["detours"] == 1 and past["extra_changes"] == 6 and not past["monotone"]


def test_an_attribute_equal_at_both_ends_is_monotone_only_if_constant() -> None:
    frames = [{"shape": "square"}, {"shape": "wide box"}, {"shape": "square"}]
    out = path_truth(frames, ["shape"])
    assert out["detours"] == 1 and out["min_changes"] == 0 and not out["monotone"]
    assert path_truth(frames[:1] * 3, ["shape"])["monotone"]


def test_scale_steps_go_the_short_way_round_the_hue_wheel_and_nothing_is_far() -> None:
    assert steps("colour", "red", "pink") == 1 and steps("colour", "red", "magenta") == 2
    assert steps("colour", "red", "cyan") == 6 and steps("colour", "orange", "azure") == 6
    assert steps("shape", "tall bar", "wide bar") == 8 and steps("size", "small", "large") == 4
    assert steps("shape", "square", None) == 9 and steps("size", None, None) == 0


def test_a_blank_frame_is_a_detour_and_never_a_short_cut() -> None:
    """Between a tall bar and a wide bar, a frame with nothing drawn is off the way (not a
    shorter one): a detour with extra changes, never a negative count."""
    a = {"shape": "tall bar", "colour": "red"}
    b = {"shape": "wide bar", "colour": "cyan"}
    blank = {"shape": None, "colour": None}
    out = path_truth([a, blank, b], ["shape", "colour"])
    assert out["detours"] == 1 and out["min_changes"] == 8 + 6
    assert out["extra_changes"] == 2 * (9 + 12) - (8 + 6)
    assert not out["monotone"] and not out["clean"]


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
