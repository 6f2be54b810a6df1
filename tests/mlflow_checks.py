"""Checks of what otpc logged to MLflow, shared by the tracking and fresh-clone tests."""

from __future__ import annotations

import hashlib
import json
import re
import sqlite3
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
    "fig_truth.png",
    "fig_strips.png",
}


def study_statuses(db_path: Path) -> list[str]:
    """The statuses of the study runs (not the path runs) in a SQLite store, read directly
    (also while a logger writes to it); empty before the store exists."""
    if not db_path.exists():
        return []
    children = "select run_uuid from tags where key = 'mlflow.parentRunId'"
    with sqlite3.connect(db_path, timeout=30) as db:
        try:
            query = f"select status from runs where run_uuid not in ({children})"
            return [row[0] for row in db.execute(query)]
        except sqlite3.OperationalError:  # tables not created yet
            return []


def runs(uri: str, experiment: str = EXPERIMENT) -> list:
    """Every study run of ``experiment`` at ``uri`` (not the path runs under them)."""
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    found = client.get_experiment_by_name(experiment)
    every = [] if found is None else client.search_runs([found.experiment_id], max_results=50000)
    return [r for r in every if "mlflow.parentRunId" not in r.data.tags]


def path_runs(uri: str, run) -> dict[str, object]:
    """The child runs of study run ``run``, by path id."""
    from mlflow import MlflowClient

    children = MlflowClient(tracking_uri=uri).search_runs(
        [run.info.experiment_id],
        filter_string=f"tags.`mlflow.parentRunId` = '{run.info.run_id}'",
        max_results=50000,
    )
    return {c.data.tags["otpc.path_id"]: c for c in children}


def md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


def logged_frames(names: list[str]) -> dict[str, set[int]]:
    """Image key -> steps, from the names of the files `log_image(key=, step=)` writes."""
    out: dict[str, set[int]] = {}
    for name in names:
        m = re.fullmatch(r"(.+)\+step\+(\d+)\+timestamp\+.+(?<!compressed)\.png", name)
        if m:
            out.setdefault(m[1], set()).add(int(m[2]))
    return out


def assert_paths_complete(uri: str, run, scores: pl.DataFrame, frames: int) -> None:
    """A finished child run per path with its params and measures, whose frames (steps 0 ..
    frames - 1) and strip are in it or in the finished run with the same frames digest."""
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    children = path_runs(uri, run)
    assert set(children) == set(scores["path_id"])
    for row in scores.iter_rows(named=True):
        child = children[row["path_id"]]
        assert child.info.status == "FINISHED"
        params = child.data.params
        assert (params["pair"], params["method"], params["group"]) == (
            row["pair_id"],
            row["method"],
            row["group"],
        )
        assert params["replicate"] == str(row["replicate"])
        for name in ("cost", "ppl", "length", "max_step"):
            assert child.data.metrics[name] == pytest.approx(row[name])
        holder_id = child.data.tags["otpc.frames_run"]
        holder = child if holder_id == "self" else client.get_run(holder_id)
        assert holder.info.status == "FINISHED"
        assert holder.data.tags["otpc.frames_digest"] == child.data.tags["otpc.frames_digest"]
        images = [Path(a.path).name for a in client.list_artifacts(holder.info.run_id, "images")]
        assert logged_frames(images) == {"frames": set(range(frames))}
        strip = f"{holder.data.tags['otpc.path_id']}.png"
        assert strip in {a.path for a in client.list_artifacts(holder.info.run_id)}


def assert_complete(uri: str, run, lock: dict, summary: dict, dest: Path) -> None:
    """Every metric, table, strip, frame, figure and tag of ``run`` matches the study's files."""
    import mlflow

    from otpc.tracking import headline_metrics, metric_key, stage_hash

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
                if isinstance(value, int | float):  # not None (NaN), not a method's name
                    assert metrics[metric_key(comparison, name, group)] == pytest.approx(value)
    assert "ot_vs_random/share_smoother/all" in metrics

    root = Path(
        mlflow.artifacts.download_artifacts(
            run_id=run.info.run_id, tracking_uri=uri, dst_path=str(dest)
        )
    )
    assert {p.name for p in (root / "results").iterdir()} == RESULT_FILES
    assert json.loads((root / "results/summary.json").read_text()) == summary
    headline = headline_metrics(json.loads((root / "results/headline.json").read_text()))
    assert headline and all(metrics[k] == pytest.approx(v) for k, v in headline.items())
    study_lock = {t: lock["stages"][t] for t in STUDY_STAGES}  # log runs after it is logged
    assert yaml.safe_load((root / "dvc.lock").read_text()) == {
        "schema": lock["schema"],
        "stages": study_lock,
    }
    outs = {o["path"]: o["md5"] for stage in lock["stages"].values() for o in stage.get("outs", [])}
    for table in ("couplings", "scores"):
        assert md5(root / "tables" / f"{table}.parquet") == outs[f"outputs/{table}.parquet"]
        csv = pl.read_csv(root / "tables" / f"{table}.csv")
        assert (
            csv["path_id"].to_list()
            == pl.read_parquet(root / "tables" / f"{table}.parquet")["path_id"].to_list()
        )
    scores = pl.read_parquet(root / "tables/scores.parquet").filter(pl.col("variant") == "primary")
    assert scores["path_id"].n_unique() >= 15
    frames = lock["stages"]["render"]["params"]["params.yaml"]["render.frames"]
    assert_paths_complete(uri, run, scores, frames)
