"""The pre-registered analysis on small synthetic data: which pairs it keeps (degenerate pairs
out, spares in), the verdicts its adjusted tests allow, and a headline of nothing else."""

from __future__ import annotations

import math

import numpy as np
import polars as pl
import pytest

from otpc.models import pick_device
from otpc.params import AggregateParams, Params
from otpc.perceptual import load_lpips, step_distances
from otpc.stats import holm
from otpc.study.aggregate import select_pairs
from otpc.study.headline import headline
from otpc.study.prereg import preregistered
from otpc.toy import world

GROUPS = ["[0,1)", "[1,2)", "[2,3]"]
AGG = AggregateParams()


def candidates(end_lpips: dict[str, float], degenerate: tuple[str, ...] = ()) -> pl.DataFrame:
    """Scores of pairs named ``<group index><rank>`` (``"02"``: group 0, rank 2), two paths
    each (clip and ot), with the given distance between their end frames."""
    rows = [
        {
            "pair_id": pid,
            "group": GROUPS[int(pid[0])],
            "rank": int(pid[1]),
            "method": method,
            "path_kind": "linear",
            "degenerate": pid in degenerate,
            "end_lpips": ends,
        }
        for pid, ends in end_lpips.items()
        for method in ("clip", "ot")
    ]
    return pl.DataFrame(rows)


def kept(scores: pl.DataFrame) -> list[str]:
    return sorted(scores["pair_id"].unique().to_list())


def test_a_pair_whose_ends_are_the_same_image_is_dropped_and_a_spare_takes_its_place() -> None:
    """Pair 00's two end frames are one drawn scene: real LPIPS puts them 0 apart, below
    ``min_end_lpips``; it is left out and counted, and the group's spare (rank 2) fills in.
    Pair 11 embeds identically (degenerate) and is replaced too."""
    scene = world.Scene("square", "red", "large", "black", 0)
    other = world.Scene("wide bar", "blue", "small", "black", 0)
    metric = load_lpips("alex", pick_device("cpu"), "imagenet")
    same, apart = (
        step_distances(metric, np.stack([world.draw(scene)] * 2), 64)[0],
        float(step_distances(metric, np.stack([world.draw(scene), world.draw(other)]), 64)[0]),
    )
    assert same == 0 and apart > AGG.min_end_lpips
    ends = {"00": same, "01": apart, "02": apart, "10": apart, "11": apart, "12": apart}
    scores = candidates(ends, degenerate=("11",))
    out, counts = select_pairs(scores, 2, AGG)
    assert kept(out) == ["01", "02", "10", "12"]
    assert counts["sampled"] == 6 and counts["analysed"] == 4
    assert counts["degenerate"] == 1 and counts["perceptually_degenerate"] == 1
    assert counts["groups_short"] == {}
    # kept in, counted, when asked not to drop them: the first two of each group by rank
    out, counts = select_pairs(scores, 2, AGG.model_copy(update={"drop_degenerate": False}))
    assert kept(out) == ["00", "01", "10", "11"] and counts["perceptually_degenerate"] == 1


def test_a_group_without_enough_usable_pairs_is_reported_short() -> None:
    scores = candidates({"00": 0.0, "01": 0.3, "10": 0.3, "11": 0.3, "20": 0.01})
    out, counts = select_pairs(scores, 2, AGG)
    assert kept(out) == ["01", "10", "11"]
    assert counts["groups_short"] == {GROUPS[0]: 1, GROUPS[2]: 2}  # group 2: none usable


def per_pair_table(ratios: dict[str, np.ndarray]) -> pl.DataFrame:
    """One row per pair and method: clip and random have ppl 1 (length 1); OT's ppl is
    exp(r) of the method's ratio, its length exp(r / 2). Pairs spread over the groups."""
    n = len(next(iter(ratios.values())))
    rows = []
    for i in range(n):
        group = i % len(GROUPS)
        base = {"pair_id": f"p{i}", "group": GROUPS[group], "score": float(group)}
        for other in ratios:
            rows.append(base | {"method": other, "ppl": 1.0, "length": 1.0})
        r = ratios["clip"][i]
        rows.append(base | {"method": "ot", "ppl": math.exp(r), "length": math.exp(r / 2)})
    return pl.DataFrame(rows)


def test_equivalence_is_a_result_the_study_can_state() -> None:
    """OT within 0.1% of clip on 40 pairs: the TOST rejects at a 1% margin, the superiority
    test does not: "equivalent within 1%"."""
    r = np.linspace(-0.001, 0.0012, 40)
    out = preregistered(per_pair_table({"clip": r}), GROUPS, AGG)
    test = out["tests"]["ot_vs_clip/ppl"]
    assert test["verdict"] == "equivalent within 1%"
    assert test["tost_holm_p"] < 0.05 <= test["superiority_holm_p"]
    assert test["ratio_low"] <= test["ratio"] <= test["ratio_high"]
    assert out["tests"]["ot_vs_clip/length"]["verdict"] == "equivalent within 1%"


def test_a_clear_advantage_is_superiority_not_equivalence() -> None:
    r = -0.2 + np.linspace(-0.01, 0.01, 30)
    test = preregistered(per_pair_table({"clip": r}), GROUPS, AGG)["tests"]["ot_vs_clip/ppl"]
    assert test["verdict"] == "OT smoother" and test["superiority_method"] != "undefined"
    assert test["ratio"] == pytest.approx(math.exp(float(np.median(r))))


def test_holm_runs_over_the_declared_families_in_their_order() -> None:
    """Superiority: primary, co-primary, every other comparison, then the trend test;
    equivalence: the same comparisons. Each adjusted p is Holm's over its family."""
    rng = np.random.default_rng(0)
    r = rng.normal(-0.01, 0.02, 45)
    out = preregistered(per_pair_table({"clip": r, "random": r}), GROUPS, AGG)
    names = ["ot_vs_clip/ppl", "ot_vs_clip/length", "ot_vs_random/ppl"]
    assert out["declared"]["superiority_family"] == [*names, "trend/ot_vs_clip/ppl"]
    assert list(out["tests"]) == names
    trend = out["trend"]["trend/ot_vs_clip/ppl"]
    raw = [out["tests"][n]["superiority_p"] for n in names] + [trend["p"]]
    adjusted = [out["tests"][n]["superiority_holm_p"] for n in names] + [trend["holm_p"]]
    assert adjusted == pytest.approx(holm(raw))
    tost = [out["tests"][n]["tost_holm_p"] for n in names]
    assert tost == pytest.approx(holm([out["tests"][n]["tost_p"] for n in names]))


def test_the_trend_test_sees_an_advantage_that_grows_with_similarity() -> None:
    """r falls from 0 (group 0) to -0.3 (group 2): the JT z < 0, the Theil-Sen slope < 0,
    and the verdict says the advantage grows; reversed, it shrinks."""
    r = np.array([-0.15 * (i % 3) + 0.001 * i for i in range(30)])
    falling = preregistered(per_pair_table({"clip": r}), GROUPS, AGG)["trend"]
    (trend,) = falling.values()
    assert trend["jt_z"] < 0 and trend["slope"] < 0 and trend["holm_p"] < 0.05
    assert trend["verdict"] == "OT's advantage grows with similarity"
    (rising,) = preregistered(per_pair_table({"clip": -r}), GROUPS, AGG)["trend"].values()
    assert rising["verdict"] == "OT's advantage shrinks with similarity"


def test_the_headline_holds_the_pre_registered_numbers_only() -> None:
    r = np.linspace(-0.001, 0.0012, 30)
    prereg = preregistered(per_pair_table({"clip": r, "random": r - 0.1}), GROUPS, AGG)
    top = headline({"preregistered": prereg, "n_pairs": 30, "frames": 9})
    assert list(top) == [
        "vs_clip",
        "vs_clip_length",
        "vs_random",
        "trend_p",
        "trend_slope",
        "pairs",
        "frames",
    ]
    test = prereg["tests"]["ot_vs_clip/ppl"]
    assert top["vs_clip"]["p"] == pytest.approx(test["superiority_holm_p"], rel=1e-3)
    assert top["vs_clip"]["equiv_p"] == pytest.approx(test["tost_holm_p"], rel=1e-3)


def test_the_design_is_checked_before_any_work() -> None:
    """Scored frames off the rendered grid, and a primary comparison the study does not
    make, are errors naming the key."""
    from otpc.params import design_problems

    params = Params.model_validate(
        {
            "render": {"frames": 9},
            "score": {"frames": 4, "robustness": [{"frames": 5}, {"frames": 6}]},
            "aggregate": {"primary": "slerp"},
        }
    )
    found = "\n".join(design_problems(params))
    assert "score.frames = 4" in found and "score.robustness.1.frames = 6" in found
    assert "score.robustness.0" not in found
    assert "aggregate.primary = 'slerp'" in found


def test_power_is_the_share_of_simulated_studies_that_reject() -> None:
    """A pilot whose OT paths are within 0.1% of clip's, centred on 0: every simulated study
    of 10 pairs per group shows equivalence, few a (false) superiority; the draws are
    seeded."""
    from otpc.study.power import power

    pilot = per_pair_table({"clip": np.linspace(-0.001, 0.0012, 12)})
    agg = AGG.model_copy(update={"permutations": 200})
    out = power(pilot, GROUPS, agg, [10], 20, seed=0)
    assert out["n=10"]["pairs"] == 30
    shares = out["n=10"]["power"]
    assert shares["ot_vs_clip/ppl/equivalence"] == 1.0
    assert shares["ot_vs_clip/ppl/superiority"] <= 0.2
    assert power(pilot, GROUPS, agg, [10], 20, seed=0) == out
