"""The six stages under a real `dvc repro` in a temporary git repo."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from tests.mlflow_checks import study_statuses
from tests.project import make_project, ran_stages, run, set_params

pytestmark = pytest.mark.slow
ALL = ["sample", "embed", "couple", "render", "score", "aggregate", "log"]


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = make_project(tmp_path_factory.mktemp("dvc") / "study")
    proc = run(["dvc", "repro"], path)
    assert ran_stages(proc.stdout) == ALL
    return path


def test_full_run_writes_every_method_and_group(project: Path) -> None:
    summary = json.loads((project / "metrics/summary.json").read_text())
    groups = {"[0,1)", "[1,2)", "[2,3)", "[3,4]"}  # TOY_BINS: 0-3 attributes shared
    assert set(summary["methods"]) == {"clip", "ot", "random"}
    for method, by_group in summary["methods"].items():
        assert groups <= set(by_group), method
        assert all(stats["ppl_mean"] > 0 for stats in by_group.values())
    assert summary["random_weights"] is False  # the trained toy model, said plainly
    assert summary["model"].startswith("toy: ") and "not Stable Diffusion" in summary["model"]
    for fig in ("fig_ppl_cost.png", "fig_strips.png", "ppl_by_group.csv"):
        assert (project / "metrics" / fig).stat().st_size > 0
    assert study_statuses(project / "mlflow.db") == ["FINISHED"]


def test_second_repro_runs_nothing(project: Path) -> None:
    proc = run(["dvc", "repro"], project)
    assert ran_stages(proc.stdout) == []
    assert study_statuses(project / "mlflow.db") == ["FINISHED"]


def test_score_param_reruns_only_score_and_aggregate(project: Path) -> None:
    set_params(project, {"score": {"net": "squeeze"}})
    assert ran_stages(run(["dvc", "repro"], project).stdout) == ["score", "aggregate", "log"]
    summary = json.loads((project / "metrics/summary.json").read_text())
    assert summary["lpips"].startswith("lpips-squeeze")


def test_unchanged_outputs_stop_the_cascade(project: Path) -> None:
    """A score parameter that does not change the scores re-runs score, and log (a run
    records every param), but not aggregate."""
    set_params(project, {"score": {"batch_size": 7}})
    assert ran_stages(run(["dvc", "repro"], project).stdout) == ["score", "log"]


def test_methods_change_does_not_resample_or_reembed(project: Path) -> None:
    set_params(project, {"couple": {"methods": ["clip", "ot"]}})
    ran = ran_stages(run(["dvc", "repro"], project).stdout)
    assert ran == ["couple", "render", "score", "aggregate", "log"]
    summary = json.loads((project / "metrics/summary.json").read_text())
    assert set(summary["methods"]) == {"clip", "ot"}


def test_render_param_rerenders_from_cache_when_reverted(project: Path) -> None:
    before = yaml.safe_load((project / "params.yaml").read_text())["render"]["guidance"]
    set_params(project, {"render": {"guidance": 3.0}})
    proc = run(["dvc", "repro"], project)
    assert ran_stages(proc.stdout) == ["render", "score", "aggregate", "log"]
    assert "render: 0 frame(s) rendered" not in proc.stdout
    set_params(project, {"render": {"guidance": before}})
    proc = run(["dvc", "repro"], project)
    # DVC's run-cache restores the earlier outputs: render does not run again.
    assert "render" not in ran_stages(proc.stdout)
    assert "Stage 'render' is cached" in proc.stdout
