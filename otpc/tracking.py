"""Log a finished study to MLflow: params, tags, metrics, tables, images and figures.

The DVC stage ``log`` does it after ``aggregate`` (``stages/log.py``). Logging reads only files
already written by the pipeline, and only if they are present and are the ones ``dvc.lock``
records, so it can run again later (``otpc log``) if the tracking server was down. A
results-hash tag prevents duplicate runs; a run is FINISHED only when everything is logged:
an attempt that fails is marked FAILED, and one that was killed (left RUNNING) is marked
FAILED by the next attempt, which logs a complete new run.

Store: ``MLFLOW_TRACKING_URI`` if set (a relative ``sqlite:///`` path counts from the project
root), else ``sqlite:///<project root>/mlflow.db`` with artifacts in ``<project root>/mlartifacts``.
The project root is ``DVC_ROOT`` under DVC, so ``dvc exp run --temp`` / ``--queue`` runs, which
work in a temporary copy, land in the same store.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import tempfile
from pathlib import Path
from typing import Any

import yaml
from filelock import FileLock

from otpc.errors import NotReady
from otpc.params import Params, flatten
from otpc.project import project_root
from otpc.quiet import quiet_logger
from otpc.study.layout import INDEX, MLFLOW_LOCK, RESULT_FILES, SUMMARY
from otpc.tables import FRAMES

RESULTS_TAG = "otpc.results_hash"
ABANDONED_TAG = "otpc.abandoned"
LOG_STAGE = "log"
SQLITE = "sqlite:///"


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
    for section, key in (
        ("methods", lambda m, n, g: metric_key(n, m, g)),
        ("paired", lambda c, n, g: metric_key(c, n, g)),
    ):
        for head, groups in summary[section].items():
            for group, stats in groups.items():
                for name, value in stats.items():
                    if value is not None:
                        out[key(head, name, group)] = float(value)
    return out


def lock_entries(workdir: Path) -> dict[str, Any]:
    """dvc.lock's entries of the study's stages (all but ``log``, which runs last)."""
    path = workdir / "dvc.lock"
    entries = (yaml.safe_load(path.read_text()) or {}).get("stages", {}) if path.exists() else {}
    return {name: entry for name, entry in entries.items() if name != LOG_STAGE}


def missing_or_stale(workdir: Path, metrics_dir: Path, outputs: dict[str, Path]) -> list[str]:
    """What keeps the results in ``workdir`` from being logged: files that are missing, or
    whose md5 is not the one dvc.lock records (results of another experiment)."""
    recorded = {
        out["path"]: out.get("md5")
        for entry in lock_entries(workdir).values()
        for out in entry.get("outs", [])
    }
    problems = []
    for path in [metrics_dir / name for name in RESULT_FILES] + list(outputs.values()):
        if not path.exists():
            problems.append(f"{path} is missing")
        elif (
            path.is_file()
            and path.as_posix() in recorded
            and _md5(path) != recorded[path.as_posix()]
        ):
            problems.append(f"{path} is not the file dvc.lock records")
    render = outputs.get("render")
    if render is not None and render.is_dir() and not (render / INDEX).is_file():
        problems.append(f"{render / INDEX} is missing")
    return problems


def _md5(path: Path) -> str:
    with open(path, "rb") as fh:
        return hashlib.file_digest(fh, "md5").hexdigest()


def stage_hash(entry: dict[str, Any]) -> str:
    """A short hash of one stage's dvc.lock entry."""
    return hashlib.sha256(json.dumps(entry, sort_keys=True).encode()).hexdigest()[:12]


def git_commit(cwd: Path) -> str:
    """The commit checked out in ``cwd`` (the baseline of a DVC experiment)."""
    try:
        return subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True, check=True
        ).stdout.strip()
    except (subprocess.CalledProcessError, FileNotFoundError):
        return "unknown"


def results_hash(params: Params, summary_path: Path) -> str:
    """Identifies a study's results: its params and its summary."""
    h = hashlib.sha256(json.dumps(params.model_dump(mode="json"), sort_keys=True).encode())
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


def log_study(
    params: Params,
    workdir: Path,
    metrics_dir: Path,
    outputs: dict[str, Path],
    exp_name: str | None = None,
) -> tuple[str, bool]:
    """Log the study found in ``workdir`` as one MLflow run: (run id, whether it is new).

    If a finished run with the same params and results exists, returns that one instead.
    ``exp_name`` (default ``DVC_EXP_NAME``) names the DVC experiment the results belong to.
    Raises ``NotReady`` (naming the files) if outputs are missing or stale.
    """
    problems = missing_or_stale(workdir, metrics_dir, outputs)
    if problems:
        raise NotReady(
            f"cannot log these results: {'; '.join(problems)}. Run `dvc repro` "
            "(or `dvc pull`) first, so that they are this workspace's results."
        )
    import mlflow  # noqa: F401 - configures its loggers on import, so before quieting them

    uri = tracking_uri()
    with _project_lock(), quiet_logger("mlflow"):
        return _log_study(
            uri, params, workdir, metrics_dir, outputs, exp_name or os.environ.get("DVC_EXP_NAME")
        )


def _project_lock() -> FileLock:
    """Loggers of one project take turns (parallel `dvc queue` workers): a SQLite store is
    one file, and the duplicate check, the clean-up of abandoned runs and the new run must
    be one step."""
    path = project_root() / MLFLOW_LOCK
    path.parent.mkdir(parents=True, exist_ok=True)
    return FileLock(str(path))


def _abandon(client: Any, experiment_id: str, digest: str) -> None:
    """Mark FAILED the runs of these results that a killed attempt left RUNNING (under the
    project lock, no other attempt of this project is alive)."""
    left = client.search_runs(
        [experiment_id],
        filter_string=f"tags.`{RESULTS_TAG}` = '{digest}' and attributes.status = 'RUNNING'",
    )
    for run in left:
        client.set_tag(run.info.run_id, ABANDONED_TAG, "an earlier logging attempt did not finish")
        client.set_terminated(run.info.run_id, status="FAILED")


def _log_study(
    uri: str,
    params: Params,
    workdir: Path,
    metrics_dir: Path,
    outputs: dict[str, Path],
    exp_name: str | None,
) -> tuple[str, bool]:
    import mlflow

    mlflow.set_tracking_uri(uri)
    summary_path = metrics_dir / SUMMARY
    summary = json.loads(summary_path.read_text())
    digest = results_hash(params, summary_path)
    experiment_id = _experiment_id(mlflow, params.study, uri)
    mlflow.set_experiment(experiment_id=experiment_id)
    existing = mlflow.search_runs(
        [experiment_id],
        output_format="list",
        filter_string=f"tags.`{RESULTS_TAG}` = '{digest}' and attributes.status = 'FINISHED'",
    )
    if existing:
        return existing[0].info.run_id, False
    _abandon(mlflow.MlflowClient(), experiment_id, digest)
    lock = lock_entries(workdir)
    tags = {
        RESULTS_TAG: digest,
        "git_commit": git_commit(workdir),
        "dvc_experiment": exp_name or "workspace",
        "random_weights": str(summary["random_weights"]),
        "lpips": summary["lpips"],
        "notes": "; ".join(summary["notes"]) or "none",
    }
    tags |= {f"dvc.stage.{name}": stage_hash(entry) for name, entry in lock.items()}
    with mlflow.start_run(run_name=exp_name, tags=tags) as run:  # FAILED if anything raises
        mlflow.log_params(flatten(params))
        mlflow.log_metrics(summary_metrics(summary))
        for name in RESULT_FILES:
            mlflow.log_artifact(str(metrics_dir / name), "results")
        for path in outputs.values():
            if path.is_file():
                mlflow.log_artifact(str(path), "tables")
        with tempfile.TemporaryDirectory() as tmp:
            lock_path = Path(tmp) / "dvc.lock"
            lock_path.write_text(yaml.safe_dump({"schema": "2.0", "stages": lock}, sort_keys=False))
            mlflow.log_artifact(str(lock_path))
        render_dir = outputs.get("render")
        if render_dir is not None and render_dir.is_dir():
            mlflow.log_artifacts(str(render_dir / "strips"), "strips")
            _log_frames(mlflow, render_dir)
        return run.info.run_id, True


def _log_frames(mlflow: Any, render_dir: Path) -> None:
    """Each frame as an MLflow image keyed by path, with its frame index as the step."""
    from PIL import Image

    index = FRAMES.read(render_dir / INDEX)
    for path_id, k, file in index.select("path_id", "k", "file").iter_rows():
        with Image.open(render_dir / file) as img:
            mlflow.log_image(img.copy(), key=path_id, step=int(k))


def logged_line(run_id: str, new: bool, experiment: str) -> str:
    """What to tell the user about a logged (or already logged) study."""
    what = "run" if new else "already logged as run"
    return f"mlflow: {what} {run_id} in experiment {experiment!r} at {tracking_uri()}"
