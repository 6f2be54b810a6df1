"""Log a finished study to MLflow: a run with the study's params, tags, metrics, tables and
figures, and a child run per path with its frames (``otpc.path_runs``).

The DVC stage ``log`` does it after ``aggregate`` (``stages/log.py``); ``otpc log`` does it by
hand, and only if ``dvc status`` finds the study's outputs up to date. Logging reads only
files already written by the pipeline. A results-hash tag prevents duplicate runs; a run is
FINISHED only when everything is logged: an attempt that fails is marked FAILED, and one that
was killed (left RUNNING) is marked FAILED by this project's next attempt (tag
``otpc.logger``: machine and project), which logs a complete new run.

Store: ``MLFLOW_TRACKING_URI`` if set (a relative ``sqlite:///`` path counts from the project
root), else ``sqlite:///<project root>/mlflow.db`` with artifacts in ``<project root>/mlartifacts``.
The project root is ``DVC_ROOT`` under DVC, so ``dvc exp run --temp`` / ``--queue`` runs, which
work in a temporary copy, land in the same store.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import socket
import subprocess
import tempfile
from pathlib import Path
from typing import Any, NamedTuple

import polars as pl
import yaml
from filelock import FileLock

from otpc.errors import NotReady, TrackingError
from otpc.params import PRIMARY, Params, flatten
from otpc.path_runs import NOTE_TAG, PathsLogged, log_paths, path_table
from otpc.project import project_root
from otpc.quiet import quiet_logger
from otpc.study.layout import HEADLINE, INDEX, MLFLOW_LOCK, RESULT_FILES, SUMMARY
from otpc.tables import FRAMES, PAIRS, SCORES
from otpc.timings import records, timing_metrics

RESULTS_TAG = "otpc.results_hash"
FRAMES_TAG = "otpc.frames"  # K: runs with different K have incomparable `ppl`
KIND_TAG, KIND = "mlflow.experimentKind", "custom_model_development"  # opens on its runs
UI_VIEW = "workflowType=machine_learning"  # MLflow 3's UI: the runs view, not GenAI's
VIEW_KEY = "otpc-headline"  # a view of the runs table with the headline metrics as columns
VIEW_TAG = f"mlflow.sharedViewState.{VIEW_KEY}"  # where MLflow's UI reads a shared view
LOGGER_TAG = "otpc.logger"
ABANDONED_TAG = "otpc.abandoned"
LOG_STAGE = "log"
log = logging.getLogger(__name__)
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
    """An MLflow-safe metric name: a group '[0,1)' becomes '0-1', '[-1,0.5)' '-1-0.5'
    (brackets dropped, the comma a dash, any other character MLflow refuses a dash)."""
    cleaned = [
        re.sub(r"[^A-Za-z0-9_.\-/ ]", "-", re.sub(r"[\[\]()]", "", p).replace(",", "-"))
        for p in parts
    ]
    return "/".join(cleaned)


def summary_metrics(summary: dict) -> dict[str, float]:
    """Flatten summary.json's numbers into metric name -> value (None and NaN dropped):
    ``<measure>/<method>/<group>`` (e.g. ``ppl_mean/ot/all``), ``<comparison>/<statistic>/
    <group>`` (``ot_vs_clip/share_smoother/all``), ``preregistered/...`` (the tests and
    trend by name, e.g. ``preregistered/ot_vs_clip/ppl/tost_holm_p``),
    ``below_cost_line/<statistic>/<group>``, ``composition/<statistic>/<group>``,
    ``tokens/<statistic>/<method>``, ``truth/...``, ``k_scaling/K=<k>/<method>/<measure>``,
    ``n_pairs``, ``pairs/<count>``, ``frames``; a stratum's analysis under
    ``strata/<value>/``."""
    out: dict[str, float] = {}

    def put(name: str, value: object) -> None:
        if isinstance(value, bool | int | float) and value == value:  # not NaN
            out[name] = float(value)

    def analysis(part: dict, prefix: str = "") -> None:
        for method, groups in part["methods"].items():
            for group, values in groups.items():
                for name, value in values.items():
                    put(prefix + metric_key(name, method, group), value)
        for comparison, groups in part["paired"].items():
            for group, values in groups.items():
                for name, value in values.items():
                    put(prefix + metric_key(comparison, name, group), value)
        nested(part["preregistered"].get("tests", {}), prefix + "preregistered")
        nested(part["preregistered"].get("trend", {}), prefix + "preregistered")
        for group, values in part["below_cost_line"].items():
            for name, value in values.items():
                put(prefix + metric_key("below_cost_line", name, group), value)
        for section in ("composition", "tokens"):
            for head, values in part[section].items():
                for name, value in values.items():
                    put(prefix + metric_key(section, name, head), value)
        put(prefix + "n_pairs", part["n_pairs"])

    def nested(part: dict, prefix: str) -> None:
        for key, value in part.items():
            if isinstance(value, dict):
                nested(value, metric_key(prefix, key))
            else:
                put(metric_key(prefix, key), value)

    analysis(summary)
    for name in ("sampled", "degenerate", "perceptually_degenerate", "analysed"):
        put(f"pairs/{name}", summary["pairs"][name])
    nested(summary["truth"], "truth")
    nested(summary["k_scaling"], "k_scaling")
    put("frames", summary["frames"])
    for value, part in summary["strata"].items():
        analysis(part, metric_key("strata", value) + "/")
    return out


def headline_metrics(headline: dict[str, Any], prefix: str = "") -> dict[str, float]:
    """``headline.json`` as metrics under DVC's names for its numbers (``ppl.ot``)."""
    out: dict[str, float] = {}
    for key, value in headline.items():
        if isinstance(value, dict):
            out |= headline_metrics(value, f"{prefix}{key}.")
        elif isinstance(value, bool | int | float) and value == value:
            out[prefix + key] = float(value)
    return out


def headline_view(columns: list[str]) -> str:
    """The runs table's view state (MLflow UI) showing ``columns`` (metric names)."""
    return json.dumps({"selectedColumns": [f"metrics.`{c}`" for c in columns]})


def lock_entries(workdir: Path) -> dict[str, Any]:
    """dvc.lock's entries of the study's stages (all but ``log``, which runs last)."""
    path = workdir / "dvc.lock"
    entries = (yaml.safe_load(path.read_text()) or {}).get("stages", {}) if path.exists() else {}
    return {name: entry for name, entry in entries.items() if name != LOG_STAGE}


def not_ready(problems: list[str]) -> NotReady:
    """The error for results that cannot be logged as this workspace's."""
    return NotReady(
        f"cannot log these results: {'; '.join(problems)}. Run `dvc repro` (or `dvc pull`) "
        "first, so that they are this workspace's results."
    )


def missing(metrics_dir: Path, outputs: dict[str, Path]) -> list[str]:
    """The result files that are not there."""
    paths = [metrics_dir / name for name in RESULT_FILES] + list(outputs.values())
    render = outputs.get("render")
    if render is not None:
        paths.append(render / INDEX)
    return [f"{path} is missing" for path in paths if not path.exists()]


def out_of_date(workdir: Path) -> list[str]:
    """The study's stages whose outputs are not what ``dvc.lock`` records for the current
    params and code (``dvc status`` of the pipeline in ``workdir``, not of others in the
    repository), so that other results are never logged as these."""
    if not (workdir / "dvc.lock").is_file():
        return [f"{workdir} has no dvc.lock"]
    from dvc.repo import Repo

    with Repo(str(workdir)) as repo:
        status = repo.status(targets=["dvc.yaml"])
    changed = [name.rsplit(":", 1)[-1] for name in status]
    return [f"stage {name!r} is not up to date" for name in changed if name != LOG_STAGE]


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
    """The experiment's id, created (artifacts beside a SQLite store) if missing, and marked
    as model development (``KIND_TAG``), not a GenAI experiment."""
    from mlflow.exceptions import MlflowException

    client = mlflow.MlflowClient()
    experiment = client.get_experiment_by_name(name)
    if experiment is None:
        try:
            experiment_id = client.create_experiment(
                name, artifact_location=artifact_location(uri), tags={KIND_TAG: KIND}
            )
        except MlflowException:  # created meanwhile by a parallel `dvc queue` worker
            experiment = client.get_experiment_by_name(name)
        else:
            return experiment_id
    if experiment.tags.get(KIND_TAG) != KIND:
        client.set_experiment_tag(experiment.experiment_id, KIND_TAG, KIND)
    return experiment.experiment_id


def log_study(
    params: Params,
    workdir: Path,
    metrics_dir: Path,
    outputs: dict[str, Path],
    exp_name: str | None = None,
) -> Logged:
    """Log the study found in ``workdir`` as one MLflow run (``Logged``).

    If a finished run with the same params and results exists, returns that one instead.
    ``exp_name`` (default ``DVC_EXP_NAME``) names the DVC experiment the results belong to.
    Raises ``NotReady`` (naming the files) if outputs are missing, and ``TrackingError`` if
    the store fails; the run of a failed attempt is marked FAILED.
    """
    problems = missing(metrics_dir, outputs)
    if problems:
        raise not_ready(problems)
    frames = FRAMES.read(outputs["render"] / INDEX)
    import mlflow  # noqa: F401 - configures its loggers on import, so before quieting them
    from mlflow.exceptions import MlflowException
    from requests import RequestException
    from sqlalchemy.exc import SQLAlchemyError

    uri = tracking_uri()
    with _project_lock(), quiet_logger("mlflow"):
        try:
            return _log_study(
                uri,
                params,
                workdir,
                metrics_dir,
                outputs,
                frames,
                exp_name or os.environ.get("DVC_EXP_NAME"),
            )
        except (MlflowException, RequestException, SQLAlchemyError, OSError) as err:
            # a store that is down, full or refuses: say which
            raise TrackingError(f"could not log to {uri}: {type(err).__name__}: {err}") from err


def _project_lock() -> FileLock:
    """Loggers of one project take turns (parallel `dvc queue` workers): a SQLite store is
    one file, and the duplicate check, the clean-up of abandoned runs and the new run must
    be one step."""
    path = project_root() / MLFLOW_LOCK
    path.parent.mkdir(parents=True, exist_ok=True)
    return FileLock(str(path))


def logger_id() -> str:
    """Who logs (tag ``otpc.logger``): a hash of this machine's name and the project's path."""
    return hashlib.sha256(f"{socket.gethostname()}:{project_root()}".encode()).hexdigest()[:16]


def _abandon(client: Any) -> None:
    """Mark FAILED the runs this project left RUNNING (a killed attempt), in any experiment:
    under the project lock no other attempt of this project is alive. Other projects' runs
    are not touched."""
    experiments = [e.experiment_id for e in client.search_experiments()]
    left = client.search_runs(
        experiments,
        filter_string=f"tags.`{LOGGER_TAG}` = '{logger_id()}' and attributes.status = 'RUNNING'",
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
    frames: pl.DataFrame,
    exp_name: str | None,
) -> Logged:
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
        return Logged(existing[0].info.run_id, False, experiment_id)
    _abandon(mlflow.MlflowClient())
    _warn_mixed_frames(mlflow, experiment_id, params.study, summary["frames"])
    lock = lock_entries(workdir)
    tags = {
        RESULTS_TAG: digest,
        LOGGER_TAG: logger_id(),
        "git_commit": git_commit(workdir),
        "dvc_experiment": exp_name or "workspace",
        "model": summary["model"],
        "random_weights": str(summary["random_weights"]),
        "lpips": summary["lpips"],
        "notes": "; ".join(summary["notes"]) or "none",
        FRAMES_TAG: str(summary["frames"]),
    }
    tags |= {f"dvc.stage.{name}": stage_hash(entry) for name, entry in lock.items()}
    headline = headline_metrics(json.loads((metrics_dir / HEADLINE).read_text()))
    client = mlflow.MlflowClient()
    client.set_experiment_tag(experiment_id, VIEW_TAG, headline_view(list(headline)))
    tags[NOTE_TAG] = description(summary)
    primary = SCORES.read(outputs["scores"]).filter(pl.col("variant") == PRIMARY)
    paths = path_table(PAIRS.read(outputs["pairs"]), primary, frames)
    children: list[str] = []
    with mlflow.start_run(run_name=exp_name, tags=tags) as run:  # FAILED if anything raises
        try:
            mlflow.log_params(flatten(params))
            mlflow.log_metrics(
                summary_metrics(summary) | headline | timing_metrics(records()), synchronous=True
            )
            for name in RESULT_FILES:
                mlflow.log_artifact(str(metrics_dir / name), "results")
            _log_tables(mlflow, outputs)
            with tempfile.TemporaryDirectory() as tmp:
                lock_path = Path(tmp) / "dvc.lock"
                lock_path.write_text(
                    yaml.safe_dump({"schema": "2.0", "stages": lock}, sort_keys=False)
                )
                mlflow.log_artifact(str(lock_path))
            child_tags = {LOGGER_TAG: tags[LOGGER_TAG], "dvc_experiment": tags["dvc_experiment"]}
            logged = log_paths(
                client, experiment_id, run, child_tags, paths, outputs["render"], children
            )
        except BaseException:
            for child in children:
                client.set_terminated(child, status="FAILED")
            raise
        for child in children:  # finished only now: a killed attempt leaves them RUNNING
            client.set_terminated(child)
        return Logged(run.info.run_id, True, experiment_id, logged)


def _warn_mixed_frames(mlflow: Any, experiment_id: str, experiment: str, frames: int) -> None:
    """Warn if the experiment holds finished runs rendered with another number of frames
    (their tag, or for older runs their ``render.frames`` param): their ``ppl`` (a sum of
    squared steps) is not comparable with this run's."""
    finished = mlflow.search_runs(
        [experiment_id], output_format="list", filter_string="attributes.status = 'FINISHED'"
    )
    others = {
        run.data.tags.get(FRAMES_TAG) or run.data.params.get("render.frames") for run in finished
    } - {str(frames), None}
    if others:
        log.warning(
            "experiment %r has runs with render.frames = %s, this one %d: compare their "
            "`length` and `ppl_norm` (tag %s says each run's), not `ppl`",
            experiment,
            ", ".join(sorted(others, key=int)),
            frames,
            FRAMES_TAG,
        )


def description(summary: dict[str, Any]) -> str:
    """The study run's description: what made the numbers, and where the paths are."""
    model = f"model {summary['model']}"
    notes = "".join(f"\n- {note}" for note in summary["notes"])
    return (
        f"Study `{summary['study']}`: {summary['n_pairs']} pairs, {summary['frames']} frames "
        f"per path, images from {model}, metric {summary['lpips']}.{notes}\n\n"
        "Each path is a child run (expand this run in the runs table) with its frames."
    )


def csv_copy(df: pl.DataFrame) -> pl.DataFrame:
    """``df`` as CSV can hold it: list columns as space-separated values."""
    lists = [name for name, dtype in df.schema.items() if isinstance(dtype, pl.List)]
    return df.with_columns(pl.col(lists).cast(pl.List(pl.String)).list.join(" "))


def _log_tables(mlflow: Any, outputs: dict[str, Path]) -> None:
    """Each table output as parquet and as CSV (which MLflow's UI can show)."""
    with tempfile.TemporaryDirectory() as tmp:
        for path in outputs.values():
            if path.is_file():
                mlflow.log_artifact(str(path), "tables")
                csv = Path(tmp) / f"{path.stem}.csv"
                csv_copy(pl.read_parquet(path)).write_csv(csv)
                mlflow.log_artifact(str(csv), "tables")


class Logged(NamedTuple):
    """A logged study: its run, whether this call logged it, its experiment, and (if it
    did) its path runs."""

    run_id: str
    new: bool
    experiment_id: str
    paths: PathsLogged | None = None


def logged_line(logged: Logged, experiment: str) -> str:
    """What to tell the user about a logged (or already logged) study, and where to see it:
    the experiment's runs table with the headline metrics as columns."""
    uri = tracking_uri()
    what = "run" if logged.new else "already logged as run"
    paths = ""
    if logged.paths:
        paths = (
            f"; {logged.paths.runs} path runs, frames logged for {logged.paths.frames_logged}, "
            f"already logged for {logged.paths.frames_reused}"
        )
    page = f"#/experiments/{logged.experiment_id}/runs?viewStateShareKey={VIEW_KEY}&{UI_VIEW}"
    if uri.startswith(("http://", "https://")):
        view = f"{uri.rstrip('/')}/{page}"
    else:
        view = f"`mlflow ui --backend-store-uri {uri}`, then http://127.0.0.1:5000/{page}"
    return (
        f"mlflow: {what} {logged.run_id} in experiment {experiment!r} at {uri}{paths}\n"
        f"  see: {view}"
    )
