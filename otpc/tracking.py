"""Log a finished study to MLflow: params, tags, metrics, tables, images and figures.

Logging reads only files already written by the pipeline, so it can run again later
(``otpc log``) if the tracking server was down; a content tag prevents duplicate runs.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
from pathlib import Path

import polars as pl
import yaml

from otpc.params import Params, flatten
from otpc.project import project_root

RESULTS_TAG = "otpc.results_hash"


def tracking_uri() -> str:
    """``MLFLOW_TRACKING_URI``, else a SQLite file at the project root."""
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{project_root() / 'mlflow.db'}"


def metric_key(*parts: str) -> str:
    """An MLflow-safe metric name: '[0,1)' -> '0-1'."""
    cleaned = [re.sub(r"[^A-Za-z0-9_.\-/ ]+", "-", p).strip("-") for p in parts]
    return "/".join(cleaned)


def summary_metrics(summary: dict) -> dict[str, float]:
    """Flatten summary.json's numbers into metric name -> value (NaN dropped)."""
    out: dict[str, float] = {}
    for method, groups in summary["methods"].items():
        for group, stats in groups.items():
            for name, value in stats.items():
                if value is not None:
                    out[metric_key(name, method, group)] = float(value)
    for comparison, groups in summary["paired"].items():
        for group, stats in groups.items():
            for name, value in stats.items():
                if value is not None:
                    out[metric_key(comparison, name, group)] = float(value)
    return out


def stage_hashes(lock_path: Path) -> dict[str, str]:
    """A short hash of each stage's entry in dvc.lock."""
    if not lock_path.exists():
        return {}
    stages = (yaml.safe_load(lock_path.read_text()) or {}).get("stages", {})
    return {name: hashlib.sha256(json.dumps(entry, sort_keys=True).encode()).hexdigest()[:12]
            for name, entry in stages.items()}


def git_commit(cwd: Path) -> str:
    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True,
                              text=True, check=True).stdout.strip()
    except (subprocess.CalledProcessError, FileNotFoundError):
        return "unknown"


def results_hash(params: Params, summary_path: Path) -> str:
    h = hashlib.sha256(params.model_dump_json().encode())
    h.update(summary_path.read_bytes())
    return h.hexdigest()[:16]


def log_study(params: Params, workdir: Path, metrics_dir: Path, outputs: dict[str, Path],
              log_frames: bool = True) -> str:
    """Log the study found in ``workdir`` as one MLflow run; returns its id.

    If a run with the same params and results already exists, returns that one instead.
    """
    import mlflow

    uri = tracking_uri()
    mlflow.set_tracking_uri(uri)
    summary_path = metrics_dir / "summary.json"
    summary = json.loads(summary_path.read_text())
    digest = results_hash(params, summary_path)
    experiment = mlflow.set_experiment(params.study)
    existing = mlflow.search_runs([experiment.experiment_id], output_format="list",
                                  filter_string=f"tags.`{RESULTS_TAG}` = '{digest}'")
    if existing:
        return existing[0].info.run_id
    tags = {RESULTS_TAG: digest, "git_commit": git_commit(workdir),
            "dvc_experiment": os.environ.get("DVC_EXP_NAME", "workspace"),
            "random_weights": str(summary["random_weights"]), "lpips": summary["lpips"],
            "notes": "; ".join(summary["notes"]) or "none"}
    tags |= {f"dvc.stage.{k}": v for k, v in stage_hashes(workdir / "dvc.lock").items()}
    with mlflow.start_run(run_name=os.environ.get("DVC_EXP_NAME"), tags=tags) as run:
        mlflow.log_params(flatten(params))
        mlflow.log_metrics(summary_metrics(summary))
        for name in ("summary.json", "ppl_by_group.csv", "fig_ppl_cost.png", "fig_strips.png"):
            mlflow.log_artifact(str(metrics_dir / name), "results")
        for name, path in outputs.items():
            if path.is_file():
                mlflow.log_artifact(str(path), "tables" if path.suffix == ".parquet" else "")
        if (workdir / "dvc.lock").exists():
            mlflow.log_artifact(str(workdir / "dvc.lock"))
        render_dir = outputs.get("render")
        if render_dir is not None and render_dir.is_dir():
            mlflow.log_artifacts(str(render_dir / "strips"), "strips")
            if log_frames:
                _log_frames(mlflow, render_dir)
        return run.info.run_id


def _log_frames(mlflow, render_dir: Path) -> None:
    """Each frame as an MLflow image keyed by path, with its frame index as the step."""
    from PIL import Image

    index = pl.read_parquet(render_dir / "index.parquet")
    for path_id, k, file in index.select("path_id", "k", "file").iter_rows():
        with Image.open(render_dir / file) as img:
            mlflow.log_image(img.copy(), key=path_id, step=int(k))


def log_or_explain(params: Params, workdir: Path, metrics_dir: Path,
                   outputs: dict[str, Path]) -> str | None:
    """Log the study; if the tracking store fails, say which URI and how to log later.

    The pipeline's outputs are already written and stay valid either way.
    """
    import click

    try:
        run_id = log_study(params, workdir, metrics_dir, outputs)
    except Exception as err:  # noqa: BLE001 - any tracking failure must not lose results
        click.echo(f"mlflow: could not log to {tracking_uri()}: {type(err).__name__}: {err}\n"
                   "mlflow: results are kept; run `otpc log` when the server is reachable.",
                   err=True)
        return None
    click.echo(f"mlflow: run {run_id} in experiment {params.study!r} at {tracking_uri()}")
    return run_id
