"""Same params, same bytes; seeds from pair ids, so adding or reordering pairs changes nothing
that was already there."""

from __future__ import annotations

import filecmp
import shutil
from pathlib import Path

import polars as pl
import pytest

from tests.project import RATING_BINS, make_project, ran_stages, run, set_params

pytestmark = pytest.mark.slow
TABLES = [
    "outputs/pairs.parquet",
    "outputs/couplings.parquet",
    "outputs/scores.parquet",
    "metrics/summary.json",
    "metrics/ppl_by_group.csv",
    "metrics/fig_ppl_cost.png",
    "metrics/fig_strips.png",
]


def snapshot(project: Path, dest: Path) -> Path:
    for rel in [*TABLES, "outputs/render"]:
        src = project / rel
        (dest / rel).parent.mkdir(parents=True, exist_ok=True)
        (shutil.copytree if src.is_dir() else shutil.copy2)(src, dest / rel)
    return dest


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    # CxC's example pairs from a CSV, whose rows the tests reorder and extend
    path = make_project(
        tmp_path_factory.mktemp("det") / "study", {"data": {"source": "csv", "bins": RATING_BINS}}
    )
    run(["dvc", "repro"], path)
    return path


def test_same_params_twice_give_identical_bytes(project: Path, tmp_path: Path) -> None:
    first = snapshot(project, tmp_path / "first")
    for rel in ("outputs", ".otpc_cache", "metrics"):
        shutil.rmtree(project / rel, ignore_errors=True)
    run(["dvc", "repro", "--force"], project)
    for rel in TABLES:
        assert filecmp.cmp(first / rel, project / rel, shallow=False), rel
    frames = sorted(
        p.relative_to(first / "outputs/render") for p in (first / "outputs/render").rglob("*.png")
    )
    assert frames
    _, mismatch, errors = filecmp.cmpfiles(
        first / "outputs/render",
        project / "outputs/render",
        [str(f) for f in frames],
        shallow=False,
    )
    assert not mismatch and not errors


def test_adding_and_reordering_pairs_keeps_existing_paths(project: Path) -> None:
    before = pl.read_parquet(project / "outputs/scores.parquet")
    keys_before = pl.read_parquet(project / "outputs/render/index.parquet")
    csv = project / "data/cxc/readme_examples.csv"
    header, *rows = csv.read_text().splitlines()
    csv.write_text("\n".join([header, *reversed(rows), "A red kite.,A blue kite.,4.5"]) + "\n")
    # Keep every pair: one more per group than any group has.
    set_params(project, {"data": {"n_per_group": 4}})
    proc = run(["dvc", "repro"], project)
    assert "render" in ran_stages(proc.stdout)
    after = pl.read_parquet(project / "outputs/scores.parquet")
    keys_after = pl.read_parquet(project / "outputs/render/index.parquet")
    # Every path that existed before has the same frames (same cache keys) and the same score.
    merged = keys_before.join(keys_after, on=["path_id", "k"], suffix="_after")
    assert len(merged) == len(keys_before)
    assert (merged["key"] == merged["key_after"]).all()
    common = before.join(after, on="path_id", suffix="_after")
    assert len(common) == len(before)
    assert (common["ppl"] == common["ppl_after"]).all()
    assert (common["cost"] == common["cost_after"]).all()
    assert after["pair_id"].n_unique() > before["pair_id"].n_unique()
