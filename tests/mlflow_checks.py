"""Checks of what otpc logged to MLflow, shared by the tracking and fresh-clone tests."""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

import polars as pl
import pytest
import yaml

EXPERIMENT = "otpc-demo"
STUDY_STAGES = ["sample", "embed", "couple", "render", "score", "aggregate"]
RESULT_FILES = {
    "summary.json",
    "headline.json",
    "ppl_by_group.csv",
    "fig_ppl_cost.png",
    "fig_effect_trend.png",
    "fig_strips.png",
}


def runs(uri: str, experiment: str = EXPERIMENT) -> list:
    """Every run of ``experiment`` at ``uri``."""
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    found = client.get_experiment_by_name(experiment)
    return [] if found is None else client.search_runs([found.experiment_id])


def md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


def logged_frames(images: Path) -> dict[str, set[int]]:
    """Image key -> steps, from the files `mlflow.log_image(key=, step=)` writes."""
    out: dict[str, set[int]] = {}
    for f in images.iterdir():
        m = re.fullmatch(r"(.+)\+step\+(\d+)\+timestamp\+.+(?<!compressed)\.png", f.name)
        if m:
            out.setdefault(m[1], set()).add(int(m[2]))
    return out


def assert_complete(uri: str, run, lock: dict, summary: dict, dest: Path) -> None:
    """Every metric, table, strip, frame, figure and tag of ``run`` matches the study's files."""
    import mlflow

    from otpc.tracking import metric_key, stage_hash

    tags, metrics = run.data.tags, run.data.metrics
    assert run.info.status == "FINISHED"
    assert {t: tags[f"dvc.stage.{t}"] for t in STUDY_STAGES} == {
        t: stage_hash(lock["stages"][t]) for t in STUDY_STAGES
    }
    for method, groups in summary["methods"].items():
        for group, stats in groups.items():
            for name in (
                "ppl_mean",
                "ppl_median",
                "cost_mean",
                "cost_median",
                "ppl_ci_low",
                "ppl_ci_high",
                "cost_ci_low",
                "cost_ci_high",
            ):
                if stats[name] is not None:
                    assert metrics[metric_key(name, method, group)] == pytest.approx(stats[name])
    for name in ("ppl_ci_low", "ppl_ci_high", "cost_ci_low", "cost_ci_high"):
        assert f"{name}/ot/all" in metrics and f"{name}/clip/all" in metrics
    assert set(summary["paired"]) == {"ot_vs_clip", "ot_vs_random"}
    for comparison, groups in summary["paired"].items():
        for group, stats in groups.items():
            for name, value in stats.items():
                if value is not None:
                    assert metrics[metric_key(comparison, name, group)] == pytest.approx(value)
    assert "ot_vs_random/share_smoother/all" in metrics

    root = Path(
        mlflow.artifacts.download_artifacts(
            run_id=run.info.run_id, tracking_uri=uri, dst_path=str(dest)
        )
    )
    assert {p.name for p in (root / "results").iterdir()} == RESULT_FILES
    assert json.loads((root / "results/summary.json").read_text()) == summary
    study_lock = {t: lock["stages"][t] for t in STUDY_STAGES}  # log runs after it is logged
    assert yaml.safe_load((root / "dvc.lock").read_text()) == {
        "schema": lock["schema"],
        "stages": study_lock,
    }
    outs = {o["path"]: o["md5"] for stage in lock["stages"].values() for o in stage.get("outs", [])}
    for table in ("couplings.parquet", "scores.parquet"):
        assert md5(root / "tables" / table) == outs[f"outputs/{table}"]
    path_ids = set(pl.read_parquet(root / "tables/scores.parquet")["path_id"].to_list())
    assert len(path_ids) >= 15
    assert {p.name for p in (root / "strips").iterdir()} == (
        {f"{p}.png" for p in path_ids} | {f"{p}.gif" for p in path_ids}
    )
    frames = lock["stages"]["render"]["params"]["params.yaml"]["render.frames"]
    assert logged_frames(root / "images") == {p: set(range(frames)) for p in path_ids}
