"""MLflow tracking against a real `mlflow server` and the default SQLite store.

One throw-away project: a baseline `dvc repro`, then two `dvc exp run` that differ only in
`score.net` (one in a temporary copy, one in the workspace), all logged to a tracking server.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from tests.mlflow_checks import EXPERIMENT, assert_complete, runs
from tests.project import env, make_project, ran_stages, run
from tests.servers import free_port, mlflow_server

pytestmark = pytest.mark.slow
STAGES = ["sample", "embed", "couple", "render", "score", "aggregate", "log"]


def tracked(uri: str | None, **extra: str) -> dict[str, str]:
    """The subprocess environment, logging to ``uri`` (None: the project's default store)."""
    e = env() | extra
    e.pop("MLFLOW_TRACKING_URI", None)
    if uri:
        e["MLFLOW_TRACKING_URI"] = uri
    return e


def run_for(uri: str, exp_name: str):
    """The one run tagged with DVC experiment ``exp_name``."""
    found = [r for r in runs(uri) if r.data.tags.get("dvc_experiment") == exp_name]
    assert len(found) == 1, [r.data.tags.get("dvc_experiment") for r in runs(uri)]
    return found[0]


def git(project: Path, *args: str) -> str:
    return run(["git", *args], project).stdout


def exp_file(project: Path, exp_name: str, path: str) -> str:
    """``path`` as committed in DVC experiment ``exp_name``."""
    refs = git(project, "for-each-ref", "--format=%(refname)", "refs/exps").split()
    ref = next(r for r in refs if r.endswith(f"/{exp_name}"))
    return git(project, "show", f"{ref}:{path}")


@dataclass
class Study:
    project: Path
    uri: str
    baseline: str
    run_counts: list[int]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with mlflow_server(tmp_path_factory.mktemp("mlflow-server")) as uri:
        yield uri


@pytest.fixture(scope="module")
def study(tmp_path_factory: pytest.TempPathFactory, server: str) -> Study:
    project = make_project(tmp_path_factory.mktemp("mlflow") / "study")
    e = tracked(server)
    counts = []
    assert ran_stages(run(["dvc", "repro"], project, env=e).stdout) == STAGES
    counts.append(len(runs(server)))
    temp = run(
        ["dvc", "exp", "run", "--temp", "-n", "net-squeeze", "-S", "score.net=squeeze"],
        project,
        env=e,
    )
    assert ran_stages(temp.stdout) == ["score", "aggregate", "log"]
    counts.append(len(runs(server)))
    workspace = run(["dvc", "exp", "run", "-n", "net-vgg", "-S", "score.net=vgg"], project, env=e)
    assert ran_stages(workspace.stdout) == ["score", "aggregate", "log"]
    counts.append(len(runs(server)))
    assert ran_stages(run(["dvc", "repro"], project, env=e).stdout) == []
    counts.append(len(runs(server)))
    return Study(project, server, git(project, "rev-parse", "HEAD").strip(), counts)


def test_each_pipeline_run_with_new_results_makes_exactly_one_run(study: Study) -> None:
    """repro, exp run --temp, exp run: one run each; a repro with nothing to do adds none."""
    assert study.run_counts == [1, 2, 3, 3]


def test_two_experiments_differ_only_in_the_changed_param(study: Study) -> None:
    squeeze, vgg = run_for(study.uri, "net-squeeze"), run_for(study.uri, "net-vgg")
    assert (squeeze.info.run_name, vgg.info.run_name) == ("net-squeeze", "net-vgg")
    params = yaml.safe_load(exp_file(study.project, "net-vgg", "params.yaml"))
    dotted = {
        f"{section}.{key}"
        for section, values in params.items()
        if isinstance(values, dict)
        for key in values
    } | {"study"}
    assert set(squeeze.data.params) == set(vgg.data.params) == dotted
    differ = {k for k in dotted if squeeze.data.params[k] != vgg.data.params[k]}
    assert differ == {"score.net"}
    assert (squeeze.data.params["score.net"], vgg.data.params["score.net"]) == ("squeeze", "vgg")
    assert squeeze.data.metrics["ppl_mean/ot/all"] != vgg.data.metrics["ppl_mean/ot/all"]
    assert squeeze.data.metrics["cost_mean/ot/all"] == vgg.data.metrics["cost_mean/ot/all"]


@pytest.mark.parametrize("exp_name", ["net-squeeze", "net-vgg"])
def test_experiment_run_is_complete(study: Study, exp_name: str, tmp_path: Path) -> None:
    run_ = run_for(study.uri, exp_name)
    assert run_.info.status == "FINISHED"
    assert run_.data.tags["git_commit"] == study.baseline
    lock = yaml.safe_load(exp_file(study.project, exp_name, "dvc.lock"))
    summary = json.loads(exp_file(study.project, exp_name, "metrics/summary.json"))
    assert_complete(study.uri, run_, lock, summary, dest=tmp_path)


def test_frames_are_logged_once_per_content(study: Study) -> None:
    """The two experiments re-render nothing: their path runs point to the baseline's."""
    from mlflow import MlflowClient

    from tests.mlflow_checks import path_runs

    baseline = run_for(study.uri, "workspace")
    first = path_runs(study.uri, baseline)
    holders = {c.info.run_id for c in first.values() if c.data.tags["otpc.frames_run"] == "self"}
    assert holders
    client = MlflowClient(tracking_uri=study.uri)
    for exp_name in ("net-squeeze", "net-vgg"):
        later = path_runs(study.uri, run_for(study.uri, exp_name))
        assert set(later) == set(first)
        for child in later.values():
            assert child.data.tags["otpc.frames_run"] in holders
            assert client.list_artifacts(child.info.run_id) == []  # no frames, no strip


def test_study_run_records_stage_times_and_frame_counts(study: Study) -> None:
    baseline = run_for(study.uri, "workspace")
    metrics = baseline.data.metrics
    for stage in STAGES[:-1]:
        assert metrics[f"time/{stage}_s"] > 0
    frames = yaml.safe_load((study.project / "params.yaml").read_text())["render"]["frames"]
    paths = metrics["render/paths"]
    assert paths >= 15
    # every frame is rendered or reused; end frames are shared by a pair's paths
    assert 0 < metrics["render/frames_rendered"] + metrics["render/frames_reused"] <= paths * frames
    assert metrics["score/paths_scored"] + metrics["score/paths_reused"] == paths


def test_browser_shows_headline_columns_and_a_path_runs_frame(study: Study, tmp_path: Path) -> None:
    """Headless Chromium opens the link the log stage prints: the runs table with the
    headline metrics as columns; then a path run's page shows one of its frames."""
    from mlflow import MlflowClient
    from playwright.sync_api import expect, sync_playwright

    from tests.browser import chromium
    from tests.mlflow_checks import path_runs

    proc = run(["otpc", "log", "--exp-name", "net-vgg"], study.project, env=tracked(study.uri))
    link = re.search(r"see: (http\S+)", proc.stdout)[1]
    experiment = MlflowClient(tracking_uri=study.uri).get_experiment_by_name(EXPERIMENT)
    child = next(
        c
        for c in path_runs(study.uri, run_for(study.uri, "workspace")).values()
        if c.data.tags["otpc.frames_run"] == "self"
    )
    with sync_playwright() as p, chromium(p) as browser:
        page = browser.new_page(viewport={"width": 2400, "height": 1000})  # no column hidden
        page.goto(link)
        expect(page.get_by_text("net-vgg", exact=True)).to_be_visible(timeout=60_000)
        page.screenshot(path=tmp_path / "runs.png")
        for column in (
            "vs_clip.ratio",
            "vs_clip.equiv_p",
            "vs_random.ratio",
            "vs_random.equiv_p",
            "pairs",
        ):
            col_id = f"[col-id='metrics.`{column}`']"
            expect(page.locator(f"[role=columnheader]{col_id}")).to_be_visible()
            expect(page.locator(f"[role=gridcell]{col_id}").first).to_have_text(re.compile(r"\d"))
        page.goto(
            f"{study.uri}/#/experiments/{experiment.experiment_id}/runs/{child.info.run_id}"
            "/model-metrics?workflowType=machine_learning"
        )
        expect(page.get_by_test_id("runs-header")).to_have_text(child.info.run_name, timeout=60_000)
        frame = page.locator("img[src*='frames%2Bstep%2B']").first
        expect(frame).to_be_visible(timeout=60_000)
        assert frame.evaluate("img => img.complete && img.naturalWidth > 0")
        page.screenshot(path=tmp_path / "path_run.png")


def test_temp_experiment_lands_in_the_projects_default_store(study: Study, tmp_path: Path) -> None:
    """Without MLFLOW_TRACKING_URI, a `--temp` run logs to <project>/mlflow.db, not the copy."""
    proc = run(
        ["dvc", "exp", "run", "--temp", "-n", "seed-one", "-S", "aggregate.seed=1"],
        study.project,
        env=tracked(None),
    )
    assert ran_stages(proc.stdout) == ["aggregate", "log"]
    uri = f"sqlite:///{study.project / 'mlflow.db'}"
    (run_,) = runs(uri)
    assert run_.data.tags["dvc_experiment"] == "seed-one"
    assert run_.info.artifact_uri.startswith((study.project / "mlartifacts").as_uri())
    lock = yaml.safe_load(exp_file(study.project, "seed-one", "dvc.lock"))
    summary = json.loads(exp_file(study.project, "seed-one", "metrics/summary.json"))
    assert_complete(uri, run_, lock, summary, dest=tmp_path)
    assert len(runs(study.uri)) == 3


def crashed_attempt(uri: str, project: Path) -> str:
    """A FAILED run with the results' hash tag, as an interrupted upload leaves behind."""
    from mlflow import MlflowClient

    from otpc.params import load_params
    from otpc.tracking import RESULTS_TAG, results_hash

    client = MlflowClient(tracking_uri=uri)
    digest = results_hash(load_params(project / "params.yaml"), project / "metrics/summary.json")
    run_ = client.create_run(client.create_experiment(EXPERIMENT), tags={RESULTS_TAG: digest})
    client.set_terminated(run_.info.run_id, status="FAILED")
    return run_.info.run_id


def test_unreachable_server_fails_log_alone_and_the_next_run_logs_once(
    study: Study, tmp_path: Path
) -> None:
    port = free_port()
    uri = f"http://127.0.0.1:{port}"
    e = tracked(uri, MLFLOW_HTTP_REQUEST_MAX_RETRIES="0", MLFLOW_HTTP_REQUEST_TIMEOUT="5")
    offline = ["dvc", "exp", "run", "-n", "offline", "-S", "aggregate.seed=2"]
    proc = run(offline, study.project, env=e, check=False)
    assert proc.returncode != 0 and ran_stages(proc.stdout) == ["aggregate", "log"]
    assert f"could not log to {uri}" in proc.stderr and "only `log` runs" in proc.stderr
    lock = yaml.safe_load((study.project / "dvc.lock").read_text())
    assert lock["stages"]["aggregate"]["params"]["params.yaml"]["aggregate"]["seed"] == 2

    with mlflow_server(tmp_path / "server", port=port):
        crashed = crashed_attempt(uri, study.project)
        assert ran_stages(run(offline, study.project, env=e).stdout) == ["log"]
        lock = yaml.safe_load(exp_file(study.project, "offline", "dvc.lock"))
        summary = json.loads(exp_file(study.project, "offline", "metrics/summary.json"))
        (run_,) = [r for r in runs(uri) if r.info.run_id != crashed]
        assert run_.info.status == "FINISHED"
        assert run_.data.tags["dvc_experiment"] == "offline"
        assert run_.data.params["aggregate.seed"] == "2"
        assert_complete(uri, run_, lock, summary, dest=tmp_path / "artifacts")
        logged = [
            run(["otpc", "log", "--exp-name", "offline"], study.project, env=e) for _ in range(2)
        ]
        ids = {re.search(r"already logged as run (\w+) in experiment", p.stdout)[1] for p in logged}
        assert ids == {run_.info.run_id}
