"""Sharing results through DVC remotes: the shipped local-folder remote and an S3 server (moto).

One project computes the baseline (committed, pushed to a bare git remote) and a second
parameter set as a DVC experiment. Each test pushes both (`dvc push --run-cache`,
`dvc exp push --run-cache`), pulls into a fresh `git clone` (which lacks the experiment),
and checks that nothing is recomputed: `dvc repro` runs only `log` (it records the pulled
results in the clone's MLflow store), and `dvc exp run --pull` of the second parameter set
restores its outputs from the run-cache (all but the cheap `aggregate`, whose outputs live
in git, and `log`).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from tests.project import make_project, ran_stages, run
from tests.servers import moto_server

pytestmark = pytest.mark.slow
STAGES = ["sample", "embed", "couple", "render", "score", "aggregate", "log"]
BUCKET = "otpc-test-remote"
CREDENTIALS = {"access_key_id": "testing", "secret_access_key": "testing"}


def git(project: Path, *args: str) -> str:
    return run(["git", *args], project).stdout


def md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A HOME of our own for every command here: the shipped remote is ~/.cache/otpc/dvc-remote."""
    path = tmp_path_factory.mktemp("home")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("HOME", str(path))
        yield path


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory, home: Path, s3: str) -> Path:
    """The baseline study and an S3 remote `s3store` (credentials local), committed and pushed
    to git remote `origin`; and `score.net=squeeze` run as a `--temp` experiment."""
    base = tmp_path_factory.mktemp("remote")
    project = make_project(base / "source")
    assert ran_stages(run(["dvc", "repro"], project).stdout) == STAGES
    run(["dvc", "remote", "add", "s3store", f"s3://{BUCKET}/study"], project)
    run(["dvc", "remote", "modify", "s3store", "endpointurl", s3], project)
    set_credentials(project, "s3store")
    git(project, "add", "-A")
    git(project, "commit", "-qm", "baseline results")
    git(base, "init", "-q", "--bare", "-b", "main", "origin.git")
    git(project, "remote", "add", "origin", str(base / "origin.git"))
    git(project, "push", "-q", "origin", "main")
    proc = run(["dvc", "exp", "run", "--temp", "-n", "squeeze", "-S", "score.net=squeeze"], project)
    assert ran_stages(proc.stdout) == ["score", "aggregate", "log"]
    return project


@pytest.fixture(scope="module")
def s3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """An S3-compatible server with an empty bucket; yields its endpoint URL."""
    with moto_server(tmp_path_factory.mktemp("moto")) as url:
        s3_client(url).create_bucket(Bucket=BUCKET)
        yield url


def s3_client(url: str):  # -> botocore S3 client
    import boto3

    return boto3.client(
        "s3",
        endpoint_url=url,
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )


def exp_file(project: Path, exp_name: str, path: str) -> str:
    """``path`` as committed in DVC experiment ``exp_name``."""
    refs = git(project, "for-each-ref", "--format=%(refname)", "refs/exps").split()
    ref = next(r for r in refs if r.endswith(f"/{exp_name}"))
    return git(project, "show", f"{ref}:{path}")


def set_credentials(project: Path, remote: str) -> None:
    """Dummy S3 credentials in .dvc/config.local, which git never sees."""
    for key, value in CREDENTIALS.items():
        run(["dvc", "remote", "modify", "--local", remote, key, value], project)


def cached(project: Path, md5_: str) -> bool:
    """Whether the object ``md5_`` is in ``project``'s local DVC cache."""
    return (project / ".dvc/cache/files/md5" / md5_[:2] / md5_[2:]).is_file()


def assert_reuses_shared_results(source: Path, clone: Path) -> None:
    """Pull into ``clone``; repro is up to date; the squeeze experiment comes from the run-cache."""
    run(["dvc", "pull", "--run-cache"], clone)
    lock = yaml.safe_load((clone / "dvc.lock").read_text())
    assert md5(clone / "outputs/scores.parquet") == lock["stages"]["score"]["outs"][0]["md5"]
    proc = run(["dvc", "repro"], clone)
    assert ran_stages(proc.stdout) == ["log"]  # the clone's first record of these results
    assert run(["dvc", "status"], clone).stdout.strip() == "Data and pipelines are up to date."

    computed = yaml.safe_load(exp_file(source, "squeeze", "dvc.lock"))["stages"]["score"]
    scores_md5 = computed["outs"][0]["md5"]
    assert not cached(clone, scores_md5)
    proc = run(
        ["dvc", "exp", "run", "--pull", "-n", "squeeze-again", "-S", "score.net=squeeze"], clone
    )
    # score is restored; aggregate re-runs (seconds): its outputs are git-tracked metrics
    # (`cache: false`), which the run-cache records but no DVC remote receives.
    assert ran_stages(proc.stdout) == ["aggregate", "log"]
    assert "Stage 'score' is cached - skipping run, checking out outputs" in proc.stdout
    assert cached(clone, scores_md5)
    assert md5(clone / "outputs/scores.parquet") == scores_md5
    assert json.loads((clone / "metrics/summary.json").read_text()) == json.loads(
        exp_file(source, "squeeze", "metrics/summary.json")
    )


def test_default_local_remote_shares_outputs_and_run_cache(source: Path, home: Path) -> None:
    """The shipped remote: the folder ~/.cache/otpc/dvc-remote."""
    assert run(["dvc", "remote", "default"], source).stdout.strip() == "local"
    run(["dvc", "push", "--run-cache"], source)
    run(["dvc", "exp", "push", "--run-cache", "origin", "squeeze"], source)
    store = home / ".cache/otpc/dvc-remote"
    assert any((store / "files" / "md5").rglob("*")) and any((store / "runs").rglob("*"))
    clone = source.parent / "clone-local"
    git(source.parent, "clone", "-q", str(source.parent / "origin.git"), str(clone))
    assert not (clone / "outputs").exists()
    assert_reuses_shared_results(source, clone)


def test_s3_remote_shares_outputs_and_run_cache(source: Path, s3: str) -> None:
    """An S3 remote added with `dvc remote add`, committed; credentials kept local."""

    run(["dvc", "push", "--run-cache", "-r", "s3store"], source)
    run(["dvc", "exp", "push", "--run-cache", "-r", "s3store", "origin", "squeeze"], source)
    keys = [o["Key"] for o in s3_client(s3).list_objects_v2(Bucket=BUCKET)["Contents"]]
    assert any(k.startswith("study/files/md5/") for k in keys)
    assert any(k.startswith("study/runs/") for k in keys)

    clone = source.parent / "clone-s3"
    git(source.parent, "clone", "-q", str(source.parent / "origin.git"), str(clone))
    assert "access_key_id" not in (clone / ".dvc/config").read_text()
    set_credentials(clone, "s3store")
    run(["dvc", "remote", "default", "--local", "s3store"], clone)
    assert_reuses_shared_results(source, clone)
