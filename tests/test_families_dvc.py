"""The whole study under a real `dvc repro` on the SD3- and FLUX.1-shaped stand-ins (tiny,
random weights): few pairs, few steps, every stage, every method."""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl
import pytest

from tests.project import make_project, ran_stages, run

pytestmark = pytest.mark.slow
ALL = ["sample", "embed", "couple", "render", "score", "aggregate", "log"]


@pytest.mark.parametrize("model", ["tiny-sd3", "tiny-flux"])
def test_study_runs_end_to_end(tmp_path: Path, model: str) -> None:
    project = make_project(tmp_path / "study", {"model": {"name": model}})
    proc = run(["dvc", "repro"], project)
    assert ran_stages(proc.stdout) == ALL
    summary = json.loads((project / "metrics/summary.json").read_text())
    assert summary["model"].startswith(f"{model}: ") and summary["random_weights"] is True
    assert set(summary["methods"]) == {"clip", "ot", "random"}
    frames = pl.read_parquet(project / "outputs/render/index.parquet")
    assert set(frames["model"]) == {summary["model"]}
    assert frames["key"].n_unique() > 0
    for fig in ("fig_ppl_cost.png", "fig_strips.png"):
        assert (project / "metrics" / fig).stat().st_size > 0
    assert ran_stages(run(["dvc", "repro"], project).stdout) == []
