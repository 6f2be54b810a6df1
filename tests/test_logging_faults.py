"""MLflow runs are never left RUNNING or incomplete, and only whole, current results are logged.

Done for real on throw-away projects logging to their default SQLite store: the log stage
SIGKILLed while it uploads, an upload that fails, and `otpc log` where outputs are missing
or stale.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest
import yaml
from mlflow import MlflowClient

from tests.mlflow_checks import assert_complete, runs, study_statuses
from tests.project import env, make_project, ran_stages, run, set_params

pytestmark = pytest.mark.slow
LOG = ["python", "-m", "stages.log"]


def local_env() -> dict[str, str]:
    e = env()
    e.pop("MLFLOW_TRACKING_URI", None)
    return e


@pytest.fixture(scope="module")
def computed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Results up to `aggregate`, not yet logged; 9 frames a path, so that logging takes a while."""
    path = make_project(tmp_path_factory.mktemp("logging") / "study", {"render": {"frames": 9}})
    run(["dvc", "repro", "aggregate"], path, env=local_env())
    return path


@pytest.fixture
def project(computed: Path, tmp_path: Path) -> Path:
    """A copy of the computed project (git, DVC cache, outputs and caches) for one test."""
    return Path(shutil.copytree(computed, tmp_path / "study", symlinks=True))


def store(project: Path) -> str:
    return f"sqlite:///{project / 'mlflow.db'}"


def statuses(project: Path) -> list[str]:
    """The statuses of the study runs in the project's store (not of the path runs)."""
    return study_statuses(project / "mlflow.db")


def kill_while_logging(project: Path) -> bool:
    """Start the log stage and SIGKILL it once its run exists; False if it finished first."""
    proc = subprocess.Popen(
        LOG, cwd=project, env=local_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    deadline = time.monotonic() + 300
    while "RUNNING" not in statuses(project) and proc.poll() is None:
        assert time.monotonic() < deadline, "the log stage neither started a run nor ended"
        time.sleep(0.005)
    os.kill(proc.pid, signal.SIGKILL)
    return proc.wait() == -signal.SIGKILL


def test_killed_logging_is_marked_failed_and_logged_again_whole(project: Path) -> None:
    # Logging 135 frames takes seconds, so the kill lands while the run is RUNNING; should
    # the stage ever finish first, forget that run and try again (params unchanged).
    for _ in range(3):
        if kill_while_logging(project):
            break
        shutil.rmtree(project / "mlartifacts")
        (project / "mlflow.db").unlink()
        (project / "outputs/mlflow.json").unlink()
    else:
        pytest.fail("the log stage finished three times before it could be killed")
    assert statuses(project).count("RUNNING") == 1
    assert not (project / "outputs/mlflow.json").exists()
    assert "log" in run(["dvc", "status"], project, env=local_env()).stdout  # not up to date
    # Another project logging to the same store has a run in progress.
    client = MlflowClient(store(project))
    other = client.create_run(
        client.create_experiment("other", artifact_location=(project / "other").as_uri()),
        tags={"otpc.logger": "0123456789abcdef"},
    )

    assert ran_stages(run(["dvc", "repro"], project, env=local_env()).stdout) == ["log"]
    by_status = {r.info.status: r for r in runs(store(project))}
    assert sorted(by_status) == ["FAILED", "FINISHED"]
    assert "otpc.abandoned" in by_status["FAILED"].data.tags
    assert client.get_run(other.info.run_id).info.status == "RUNNING"  # not this project's
    assert statuses(project).count("RUNNING") == 1
    lock = yaml.safe_load((project / "dvc.lock").read_text())
    summary = json.loads((project / "metrics/summary.json").read_text())
    assert_complete(store(project), by_status["FINISHED"], lock, summary, project / "downloaded")
    assert ran_stages(run(["dvc", "repro"], project, env=local_env()).stdout) == []


def test_failed_upload_fails_the_stage_marks_its_run_failed_and_is_retried(project: Path) -> None:
    (project / "mlartifacts").write_text("a file where the artifact store should be")
    proc = run(["dvc", "repro"], project, env=local_env(), check=False)
    assert proc.returncode != 0 and ran_stages(proc.stdout) == ["log"]
    assert "could not log to sqlite:///" in proc.stderr and "only `log` runs" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert statuses(project) == ["FAILED"]
    assert not (project / "outputs/mlflow.json").exists()  # so the next repro logs again

    (project / "mlartifacts").unlink()
    assert ran_stages(run(["dvc", "repro"], project, env=local_env()).stdout) == ["log"]
    by_status = {r.info.status: r for r in runs(store(project))}
    assert sorted(by_status) == ["FAILED", "FINISHED"]
    lock = yaml.safe_load((project / "dvc.lock").read_text())
    summary = json.loads((project / "metrics/summary.json").read_text())
    assert_complete(store(project), by_status["FINISHED"], lock, summary, project / "downloaded")
    assert "already logged as run" in run(["otpc", "log"], project, env=local_env()).stdout


def test_a_run_with_another_frame_count_is_logged_with_a_warning(project: Path) -> None:
    """`ppl` compares only runs with the same K: each run says its K (metric and tag), and
    logging one beside runs with another K warns."""
    run(["dvc", "repro"], project, env=local_env())
    set_params(project, {"render": {"frames": 5}})  # t = 0, 1/4, ... are in the 9-frame grid
    proc = run(["dvc", "repro"], project, env=local_env())
    assert "render: 0 frame(s) rendered" in proc.stdout
    assert "has runs with render.frames = 9, this one 5" in proc.stderr
    logged = runs(store(project))
    assert sorted(r.data.tags["otpc.frames"] for r in logged) == ["5", "9"]
    assert sorted(r.data.metrics["frames"] for r in logged) == [5.0, 9.0]


def test_otpc_log_refuses_missing_or_stale_outputs(project: Path) -> None:
    clone = project.parent / "clone"
    run(["git", "clone", "-q", str(project), str(clone)], project.parent)
    run(["git", "add", "-A"], project)
    run(["git", "commit", "-qm", "results"], project)
    run(["git", "pull", "-q"], clone)  # a fresh clone: metrics and dvc.lock, no outputs
    proc = run(["otpc", "log"], clone, env=local_env(), check=False)
    assert proc.returncode == 1
    assert "cannot log these results: stage 'sample' is not up to date" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert statuses(clone) == []

    set_params(project, {"aggregate": {"seed": 7}})  # params no longer those of the results
    proc = run(["otpc", "log"], project, env=local_env(), check=False)
    assert proc.returncode == 1
    assert "stage 'aggregate' is not up to date" in proc.stderr
    summary = project / "metrics/summary.json"
    set_params(project, {"aggregate": {"seed": 0}})
    n = json.loads(summary.read_text())["n_pairs"]
    summary.write_text(summary.read_text().replace(f'"n_pairs": {n}', f'"n_pairs": {n + 1}'))
    proc = run(["otpc", "log"], project, env=local_env(), check=False)
    assert proc.returncode == 1
    assert "stage 'aggregate' is not up to date" in proc.stderr  # a changed result file
    assert statuses(project) == []
