"""The study's statistics on real stage outputs (`dvc repro` in a temporary repo): the three
path measures, degenerate pairs, sinkhorn kept out of comparisons, every statistic in
summary.json and in the MLflow metrics, and strata of CxC pairs."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from otpc.tracking import summary_metrics
from tests.project import RATING_BINS, ROOT, make_project, run, set_params

pytestmark = pytest.mark.slow
GROUPS = ["[0,1)", "[1,2)", "[2,3)", "[3,4)", "[4,5]"]
# One pair per group, and in [4,5] a pair whose prompts differ only in case and spacing:
# CLIP's tokenizer lower-cases, so they embed identically.
CSV = """caption1,caption2,rating
A kite flying in the air over a sand castle.,Scattered people on a wide dry beach.,0.5
Giraffe watching a man push a wheelbarrow.,Two giraffes stand outside of a building.,1.5
A red bus parked at the curb.,A yellow taxi waiting at a light.,2.5
A cat sleeping on a blue sofa.,A kitten asleep on a couch.,3.5
A dog running on the grass.,A dog runs across a lawn.,4.5
A bowl of ripe peaches.,a bowl of  RIPE peaches.,5
"""
METHODS = ["clip", "ot", "random", "random_bos", "random_blocks", "ot_blocks", "sinkhorn"]


def summary(project: Path) -> dict:
    return json.loads((project / "metrics/summary.json").read_text())


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = make_project(
        tmp_path_factory.mktemp("stats") / "study",
        {
            "data": {"source": "csv", "path": "pairs.csv", "n_per_group": 2, "bins": RATING_BINS},
            "couple": {"methods": METHODS},
            "score": {"robustness": [{"min_size": 128}, {"frames": 2}]},
        },
    )
    (path / "pairs.csv").write_text(CSV)
    run(["dvc", "repro", "aggregate"], path)
    return path


def test_each_path_has_its_three_measures(project: Path) -> None:
    every = pl.read_parquet(project / "outputs/scores.parquet")
    assert sorted(every["variant"].unique().to_list()) == ["frames=2", "min_size=128", "primary"]
    ends = every.filter(pl.col("variant") == "frames=2")  # a path of its two end frames
    assert (ends["frames"] == 2).all() and ends["ppl"].to_list() == ends["end_lpips"].to_list()
    scores = every.filter(pl.col("variant") == "primary")
    for row in scores.iter_rows(named=True):
        steps = np.array(row["steps"])
        assert row["frames"] == len(steps) + 1 == 3
        assert row["ppl"] == pytest.approx(steps.sum())
        assert row["ppl_norm"] == pytest.approx(steps.mean() * len(steps) ** 2)
        assert row["length"] == pytest.approx(np.sqrt(steps).sum())
        assert row["max_step"] == pytest.approx(steps.max())
    assert summary(project)["frames"] == 3


def test_degenerate_pairs_are_flagged_counted_and_left_out(project: Path) -> None:
    couplings = pl.read_parquet(project / "outputs/couplings.parquet")
    flagged = couplings.filter(pl.col("degenerate"))
    stochastic = 3  # random, random_bos, random_blocks: 2 replicates each
    assert flagged["pair_id"].n_unique() == 1 and len(flagged) == len(METHODS) + stochastic
    still = flagged.filter(pl.col("method").is_in(["clip", "ot", "ot_blocks"]))
    assert len(still) == 3 and (still["cost"] == 0).all()
    assert (flagged.filter(pl.col("method") == "random")["cost"] > 0).all()  # a loop A -> A
    scores = pl.read_parquet(project / "outputs/scores.parquet").filter(pl.col("degenerate"))
    still = scores.filter(pl.col("method").is_in(["clip", "ot", "ot_blocks"]))
    assert (still["ppl"] == 0).all() and (still["length"] == 0).all()
    s = summary(project)
    counts = {k: s["pairs"][k] for k in ("sampled", "degenerate", "perceptually_degenerate")}
    assert counts == {"sampled": 6, "degenerate": 1, "perceptually_degenerate": 0}
    assert s["pairs"]["analysed"] == 5 and s["pairs"]["degenerate_dropped"]
    assert s["n_pairs"] == 5 and s["methods"]["clip"]["all"]["n"] == 5
    set_params(project, {"aggregate": {"drop_degenerate": False}})
    try:
        run(["dvc", "repro", "aggregate"], project)
        kept = summary(project)
        assert kept["n_pairs"] == 6 and kept["methods"]["clip"]["all"]["n"] == 6
        for comparison in ("ot_vs_clip", "ot_vs_random"):  # OT's path of length 0: no ratio
            assert kept["paired"][comparison]["all"]["n"] == 5
            assert kept["paired"][comparison]["all"]["n_undefined"] == 1
        assert kept["composition"]["all"]["n"] == 6
    finally:
        set_params(project, {"aggregate": {"drop_degenerate": True}})
        run(["dvc", "repro", "aggregate"], project)


def test_sinkhorn_is_described_but_never_compared(project: Path) -> None:
    s = summary(project)
    assert set(s["methods"]) == set(METHODS)
    assert set(s["not_compared"]) == {"sinkhorn"}
    others = [m for m in METHODS if m not in ("ot", "sinkhorn")]
    assert set(s["paired"]) == {f"ot_vs_{m}" for m in others}
    tests = {f"ot_vs_{m}/ppl" for m in others} | {"ot_vs_clip/length"}
    assert set(s["preregistered"]["tests"]) == tests
    assert set(s["robustness"]) == tests | {"trend/ot_vs_clip/ppl"}
    table = pl.read_csv(project / "metrics/ppl_by_group.csv")
    assert "sinkhorn" not in table["method"].to_list()


def test_every_statistic_is_in_the_summary_and_the_mlflow_metrics(project: Path) -> None:
    s = summary(project)
    comparison = s["paired"]["ot_vs_random"]
    assert set(comparison) == {*GROUPS, "all"}
    for group, values in comparison.items():
        assert values["share_ci_low"] <= values["share_smoother"] <= values["share_ci_high"]
        assert ("holm_p" in values) == (group != "all"), group  # over the groups
    everything = comparison["all"]
    assert everything["n"] == 5 and everything["wilcoxon_method"] == "exact"
    # 5 pairs: even (min, max) covers the median with probability 1 - 2/32 < 95%
    assert everything["log_ratio_ci_low"] is None and everything["log_ratio_ci_high"] is None
    primary = s["preregistered"]["tests"]["ot_vs_clip/ppl"]
    assert primary["n"] == 5 and primary["ci_coverage"] == pytest.approx(1 - 2 / 32)
    assert primary["superiority_method"] in ("exact", "undefined")  # 5 pairs: enumerated
    assert primary["verdict"] in ("inconclusive", "OT smoother", "OT rougher")
    for verdicts in s["robustness"].values():
        assert set(verdicts) == {"primary", "min_size=128", "frames=2", "survives"}
    assert set(s["k_scaling"]) == {"K=3", "K=2"}
    assert s["below_cost_line"]["all"]["n"] == 5
    assert set(s["tokens"]) == set(METHODS) - {"sinkhorn"}
    for method in ("clip", "random_bos", "random_blocks", "ot_blocks"):
        assert s["tokens"][method]["bos_fixed_share"] == 1.0
    assert (
        s["tokens"]["random_blocks"]["real_to_pad_mean"]
        <= s["tokens"]["random_bos"]["real_to_pad_mean"]
    )
    assert s["tokens"]["clip"]["rows_moved_tokens_mean"] == 0
    assert s["tokens"]["clip"]["rows_moved_padding_mean"] == 0
    assert s["tokens"]["random"]["rows_moved_padding_mean"] > 0
    assert s["composition"]["all"]["n"] == 5  # the analysed pairs
    assert s["composition"]["all"]["c2c_isim_share"] is None
    for stat in ("ppl", "ppl_norm", "length", "max_step", "cost"):
        assert f"{stat}_ci_high" in s["methods"]["ot"]["all"]
    metrics = summary_metrics(s)
    for key in (
        "ppl_mean/ot/all",
        "length_median/clip/4-5",
        "ot_vs_clip/wilcoxon_p/all",
        "preregistered/ot_vs_random/ppl/superiority_holm_p",
        "preregistered/trend/ot_vs_clip/ppl/holm_p",
        "k_scaling/K-3/ot/max_step",
        "below_cost_line/share_below/all",
        "tokens/real_to_pad_mean/random",
        "composition/tokens_mean/all",
        "pairs/degenerate",
        "frames",
    ):
        assert key in metrics, key
    assert any(k.startswith("ot_vs_random/holm_p/") for k in metrics)  # per group
    assert (project / "metrics/fig_effect_trend.png").stat().st_size > 0
    assert s["truth"] == {}  # CSV prompts: no detector


def test_strata_of_cxc_pairs(tmp_path_factory: pytest.TempPathFactory) -> None:
    """CxC pairs (stand-in captions for every id of the val split), every statistic also per
    sampling method."""
    sts = pl.read_csv(ROOT / "data/cxc/sts_val.csv")
    ids = sorted({int(c.rsplit(":", 1)[1]) for c in pl.concat([sts["caption1"], sts["caption2"]])})
    words = ["red", "blue", "green", "small", "large", "wooden", "striped", "shiny"]
    captions = {
        "images": [
            {"imgid": i, "sentences": [{"sentid": s, "raw": f"A {words[s % 8]} thing number {s}."}]}
            for i, s in enumerate(ids)
        ]
    }
    path = make_project(
        tmp_path_factory.mktemp("strata") / "study",
        {
            "data": {
                "source": "cxc",
                "captions": "captions.json",
                "n_per_group": 2,
                "bins": RATING_BINS,
            },
            "aggregate": {"stratify_by": "sampling_method"},
        },
    )
    (path / "captions.json").write_text(json.dumps(captions))
    shutil.copy(ROOT / "data/cxc/sts_val.csv", path / "data/cxc/sts_val.csv")
    run(["dvc", "repro", "aggregate"], path)
    s = summary(path)
    pairs = pl.read_parquet(path / "outputs/pairs.parquet")
    present = set(pairs["sampling_method"].to_list())
    assert present <= {"c2c_cocaption", "c2c_isim"} and set(s["strata"]) == present
    assert sum(part["n_pairs"] for part in s["strata"].values()) == s["n_pairs"]
    for group, values in s["composition"].items():
        sel = pairs if group == "all" else pairs.filter(pl.col("group") == group)
        share = float((sel["sampling_method"] == "c2c_isim").mean())
        assert values["c2c_isim_share"] == pytest.approx(share)
    metrics = summary_metrics(s)
    stratum = sorted(present)[0]
    assert f"strata/{stratum}/ppl_mean/ot/all" in metrics
