"""Log a finished study to MLflow: params, tags, metrics, tables, images and figures.

Logging reads only files already written by the pipeline, so it can run again later
(``otpc log``) if the tracking server was down; a results-hash tag prevents duplicate runs.

Store: ``MLFLOW_TRACKING_URI`` if set (a relative ``sqlite:///`` path counts from the project
root), else ``sqlite:///<project root>/mlflow.db`` with artifacts in ``<project root>/mlartifacts``.
The project root is ``DVC_ROOT`` under DVC, so ``dvc exp run --temp`` / ``--queue`` runs, which
work in a temporary copy, land in the same store.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import subprocess
import tempfile
from pathlib import Path
from typing import Any

import polars as pl
import yaml
from filelock import FileLock

from otpc.params import Params, flatten
from otpc.project import project_root

RESULTS_TAG = "otpc.results_hash"
SQLITE = "sqlite:///"
RESULT_FILES = ("summary.json", "ppl_by_group.csv", "fig_ppl_cost.png", "fig_strips.png")


def tracking_uri() -> str:
    """``MLFLOW_TRACKING_URI``, else a SQLite file at the project root."""
    uri = os.environ.get("MLFLOW_TRACKING_URI") or f"{SQLITE}mlflow.db"
    if uri.startswith(SQLITE) and not Path(uri.removeprefix(SQLITE)).is_absolute():
        return f"{SQLITE}{project_root() / uri.removeprefix(SQLITE)}"
    return uri


def artifact_location(uri: str) -> str | None:
    """Where a new experiment keeps artifacts: beside a SQLite store; else the server decides."""
    if uri.startswith(SQLITE):
        return (Path(uri.removeprefix(SQLITE)).parent / "mlartifacts").as_uri()
    return None


def metric_key(*parts: str) -> str:
    """An MLflow-safe metric name: '[0,1)' -> '0-1'."""
    cleaned = [re.sub(r"[^A-Za-z0-9_.\-/ ]+", "-", p).strip("-") for p in parts]
    return "/".join(cleaned)


def summary_metrics(summary: dict) -> dict[str, float]:
    """Flatten summary.json's numbers into metric name -> value (NaN dropped)."""
    out: dict[str, float] = {}
    for section, key in (("methods", lambda m, n, g: metric_key(n, m, g)),
                         ("paired", lambda c, n, g: metric_key(c, n, g))):
        for head, groups in summary[section].items():
            for group, stats in groups.items():
                for name, value in stats.items():
                    if value is not None:
                        out[key(head, name, group)] = float(value)
    return out


def lock_entries(workdir: Path) -> dict[str, Any]:
    """dvc.lock's stage entries as DVC will have written them when the running stage ends.

    While a stage runs (``DVC_STAGE`` is set), dvc.lock still holds its previous entry or
    none; that entry is computed here from the stage's current deps and outs, as DVC does.
    """
    path = workdir / "dvc.lock"
    entries = (yaml.safe_load(path.read_text()) or {}).get("stages", {}) if path.exists() else {}
    running = os.environ.get("DVC_STAGE")
    if running:
        from dvc.repo import Repo
        from dvc.stage.serialize import to_single_stage_lockfile

        with Repo(str(workdir)) as repo:
            stage = repo.stage.collect(running)[0]
            stage.save(run_cache=False)
            entries[stage.name] = json.loads(json.dumps(to_single_stage_lockfile(stage)))
    return entries


def stage_hash(entry: dict[str, Any]) -> str:
    """A short hash of one stage's dvc.lock entry."""
    return hashlib.sha256(json.dumps(entry, sort_keys=True).encode()).hexdigest()[:12]


def git_commit(cwd: Path) -> str:
    """The commit checked out in ``cwd`` (the baseline of a DVC experiment)."""
    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True,
                              text=True, check=True).stdout.strip()
    except (subprocess.CalledProcessError, FileNotFoundError):
        return "unknown"


def results_hash(params: Params, summary_path: Path) -> str:
    """Identifies a study's results: its params and its summary."""
    h = hashlib.sha256(params.model_dump_json().encode())
    h.update(summary_path.read_bytes())
    return h.hexdigest()[:16]


def _experiment_id(mlflow: Any, name: str, uri: str) -> str:
    """The experiment's id, created (artifacts beside a SQLite store) if missing."""
    from mlflow.exceptions import MlflowException

    client = mlflow.MlflowClient()
    experiment = client.get_experiment_by_name(name)
    if experiment is not None:
        return experiment.experiment_id
    try:
        return client.create_experiment(name, artifact_location=artifact_location(uri))
    except MlflowException:  # created meanwhile by a parallel `dvc queue` worker
        return client.get_experiment_by_name(name).experiment_id


def log_study(params: Params, workdir: Path, metrics_dir: Path, outputs: dict[str, Path],
              exp_name: str | None = None) -> str:
    """Log the study found in ``workdir`` as one MLflow run; returns its id.

    If a finished run with the same params and results exists, returns that one instead.
    ``exp_name`` (default ``DVC_EXP_NAME``) names the DVC experiment the results belong to.
    """
    uri = tracking_uri()
    with _store_lock(uri):
        return _log_study(uri, params, workdir, metrics_dir, outputs,
                          exp_name or os.environ.get("DVC_EXP_NAME"))


def _store_lock(uri: str) -> contextlib.AbstractContextManager:
    """A SQLite store is one file: writers (parallel `dvc queue` workers) take turns, which
    also makes the duplicate check and the new run one step. Servers handle their own."""
    if not uri.startswith(SQLITE):
        return contextlib.nullcontext()
    path = project_root() / ".otpc_cache" / "mlflow.lock"
    path.parent.mkdir(parents=True, exist_ok=True)
    return FileLock(str(path))


def _log_study(uri: str, params: Params, workdir: Path, metrics_dir: Path,
               outputs: dict[str, Path], exp_name: str | None) -> str:
    import mlflow

    mlflow.set_tracking_uri(uri)
    summary_path = metrics_dir / "summary.json"
    summary = json.loads(summary_path.read_text())
    digest = results_hash(params, summary_path)
    experiment_id = _experiment_id(mlflow, params.study, uri)
    mlflow.set_experiment(experiment_id=experiment_id)
    existing = mlflow.search_runs([experiment_id], output_format="list",
                                  filter_string=f"tags.`{RESULTS_TAG}` = '{digest}' "
                                                "and attributes.status = 'FINISHED'")
    if existing:
        return existing[0].info.run_id
    lock = lock_entries(workdir)
    tags = {RESULTS_TAG: digest, "git_commit": git_commit(workdir),
            "dvc_experiment": exp_name or "workspace",
            "random_weights": str(summary["random_weights"]), "lpips": summary["lpips"],
            "notes": "; ".join(summary["notes"]) or "none"}
    tags |= {f"dvc.stage.{name}": stage_hash(entry) for name, entry in lock.items()}
    with mlflow.start_run(run_name=exp_name, tags=tags) as run:
        mlflow.log_params(flatten(params))
        mlflow.log_metrics(summary_metrics(summary))
        for name in RESULT_FILES:
            mlflow.log_artifact(str(metrics_dir / name), "results")
        for path in outputs.values():
            if path.is_file():
                mlflow.log_artifact(str(path), "tables")
        with tempfile.TemporaryDirectory() as tmp:
            lock_path = Path(tmp) / "dvc.lock"
            lock_path.write_text(yaml.safe_dump({"schema": "2.0", "stages": lock},
                                                sort_keys=False))
            mlflow.log_artifact(str(lock_path))
        render_dir = outputs.get("render")
        if render_dir is not None and render_dir.is_dir():
            mlflow.log_artifacts(str(render_dir / "strips"), "strips")
            _log_frames(mlflow, render_dir)
        return run.info.run_id


def _log_frames(mlflow: Any, render_dir: Path) -> None:
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
        exp = os.environ.get("DVC_EXP_NAME")
        later = f"`dvc exp apply {exp}` then `otpc log --exp-name {exp}`" if exp else "`otpc log`"
        click.echo(f"mlflow: could not log to {tracking_uri()}: {type(err).__name__}: {err}\n"
                   f"mlflow: results are kept; run {later} when the server is reachable.",
                   err=True)
        return None
    click.echo(f"mlflow: run {run_id} in experiment {params.study!r} at {tracking_uri()}")
    return run_id
