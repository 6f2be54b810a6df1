"""Two experiments at once (`dvc queue start -j 2`) share one render cache and one MLflow
store: both finish, both are logged as separate runs, nothing in the cache is corrupt."""

from __future__ import annotations

import sqlite3
import subprocess
import time
from pathlib import Path

import pytest
import yaml

from otpc.frame_cache import FrameCache
from tests.mlflow_checks import study_statuses
from tests.project import env, make_project, run

pytestmark = pytest.mark.slow


def wait_for_queue(project: Path, timeout: float = 900) -> str:
    """Poll `dvc queue status` until no task is queued or running."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status = run(["dvc", "queue", "status"], project).stdout
        if not any(word in status for word in ("Queued", "Running")):
            return status
        time.sleep(3)
    raise AssertionError(f"queue did not finish:\n{status}")


def test_two_queued_experiments_run_concurrently(tmp_path: Path) -> None:
    project = make_project(tmp_path / "study")
    # A baseline first, as a study is used: the queued variations restore the shared early
    # stages from DVC's run-cache. (Two workers that both *produce* the same output at the
    # same moment race inside DVC's own cache; DVC calls parallel queue runs experimental.)
    run(["dvc", "repro"], project)
    for guidance in ("5.0", "9.0"):
        run(["dvc", "exp", "run", "--queue", "-S", f"render.guidance={guidance}"], project)
    # The workers outlive `dvc queue start`: give them no pipe of ours to hold open.
    quiet = {
        "cwd": project,
        "env": env(),
        "stdout": subprocess.DEVNULL,
        "stderr": subprocess.DEVNULL,
        "timeout": 120,
    }
    subprocess.run(["dvc", "queue", "start", "-j", "2"], check=True, **quiet)
    try:
        status = wait_for_queue(project)
    finally:
        subprocess.run(["dvc", "queue", "stop", "--kill"], check=False, **quiet)
    assert status.count("Success") == 2, status
    assert "Failed" not in status, status

    with sqlite3.connect(project / "mlflow.db") as db:
        guidance = {
            row[0] for row in db.execute("select value from params where key = 'render.guidance'")
        }
    assert study_statuses(project / "mlflow.db") == ["FINISHED"] * 3
    baseline = yaml.safe_load((project / "params.yaml").read_text())["render"]["guidance"]
    assert guidance == {str(float(baseline)), "5.0", "9.0"}

    cache = FrameCache(project / ".otpc_cache/frames")
    frames = list(cache.root.rglob("*.png"))
    assert frames
    for frame in frames:
        cache.read(frame.stem)  # raises on any damaged or foreign entry
    assert not list((project / ".otpc_cache").rglob("*.tmp"))
