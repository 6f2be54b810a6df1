"""The Ray backends on a real Ray cluster on this machine: ``ray start --head`` with two CPUs
(token authentication, loopback addresses), two one-CPU workers, the toy model in float32
with one torch thread in every process. The study's bytes and DVC hashes are the local
backend's; a worker killed mid-batch is retried and nothing is missing or written twice; a
driver killed mid-stage resumes from the cache; the frame cache on S3 (the moto server)."""

from __future__ import annotations

import filecmp
import os
import re
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import NamedTuple

import polars as pl
import psutil
import pytest
import yaml

from tests.project import ROOT, entries, env, kill_when, make_project, run, same_tree, set_params
from tests.servers import RayHead, free_port, moto_server, ray_env, ray_head

pytestmark = pytest.mark.slow
RENDER = ["python", "-m", "stages.render"]
REPORT = r"(\d+) frame\(s\) rendered, (\d+) from the cache"
BUCKET = "otpc-ray-frames"


class Cluster(NamedTuple):
    env: dict[str, str]  # drivers' environment: RAY_ADDRESS, the S3 endpoint, the Ray token
    head: RayHead


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """A moto S3 server and a Ray head node whose workers see the S3 endpoint too."""
    work = tmp_path_factory.mktemp("ray")
    with moto_server(work) as s3:
        e = env() | ray_env(work) | {"OMP_NUM_THREADS": "1"}
        e |= {
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_DEFAULT_REGION": "us-east-1",
            "AWS_ENDPOINT_URL_S3": s3,
        }
        with ray_head(work, cpus=2, env=e) as head:
            yield Cluster(e | {"RAY_ADDRESS": head.address}, head)


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory, cluster: Cluster) -> Path:
    """The study run to its scores by the local backend (float32 frames, batches of two),
    its render folder kept as ``local-render``; then both backends switched to Ray."""
    path = make_project(
        tmp_path_factory.mktemp("ray-study") / "study",
        {
            "model": {"dtype": "float32"},
            "render": {"steps": 4, "frames": 4, "batch_size": 2},
            "ray": {"address": cluster.head.address, "workers": 2, "cpus_per_worker": 1},
        },
    )
    run(["dvc", "repro", "score"], path, env=cluster.env)
    shutil.copytree(path / "outputs/render", path / "local-render")
    shutil.copy(path / "dvc.lock", path / "local.lock")
    shutil.copy(path / "outputs/scores.parquet", path / "local-scores.parquet")
    set_params(path, {"render": {"backend": "ray"}, "score": {"backend": "ray"}})
    return path


def frame_count(project: Path) -> int:
    """The study's distinct frames."""
    return pl.read_parquet(project / "local-render/index.parquet")["key"].n_unique()


def test_the_study_on_ray_has_the_local_bytes_and_dvc_hashes(
    project: Path, cluster: Cluster
) -> None:
    shutil.rmtree(project / ".otpc_cache")
    proc = run(
        ["dvc", "repro", "--force", "--single-item", "render", "score"], project, env=cluster.env
    )
    assert "render (ray)" in proc.stderr and "score primary (ray)" in proc.stderr
    rendered, cached = map(int, re.search(REPORT, proc.stdout).groups())
    assert (rendered, cached) == (frame_count(project), 0)
    assert (project / "dvc.lock").read_text() == (project / "local.lock").read_text()
    assert filecmp.cmp(project / "outputs/scores.parquet", project / "local-scores.parquet", False)
    same_tree(project / "local-render", project / "outputs/render")


def test_an_address_where_nothing_answers_is_named_at_once() -> None:
    from otpc.errors import InputError
    from otpc.params import RayParams
    from otpc.ray_pool import connect

    address = f"127.0.0.1:{free_port()}"
    with pytest.raises(InputError, match=f"ray.address '{address}': nothing answers there"):
        connect(RayParams(address=address))


class EntryWatch:
    """Polls a cache folder and remembers each entry's first (inode, mtime): an entry replaced
    after it was written shows up as a change."""

    def __init__(self, folder: Path) -> None:
        self.folder, self.seen, self.replaced = folder, {}, []
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self._poll, daemon=True)
        self.thread.start()

    def _poll(self) -> None:
        while not self.stopped.wait(0.005):
            self._scan()

    def _scan(self) -> None:
        for path in entries(self.folder, "*.png"):
            try:
                stat = path.stat()
            except FileNotFoundError:
                continue
            first = self.seen.setdefault(path.name, (stat.st_ino, stat.st_mtime_ns))
            if first != (stat.st_ino, stat.st_mtime_ns):
                self.replaced.append(path.name)

    def stop(self) -> None:
        self.stopped.set()
        self.thread.join()
        self._scan()


def workers(cluster: Cluster, busy: bool = False) -> list[psutil.Process]:
    """The Ray workers of this test's cluster (only those running a call, if ``busy``)."""
    title = "ray::Worker.call" if busy else "ray::Worker"
    found = []
    for proc in psutil.Process(cluster.head.pid).children(recursive=True):
        try:
            if " ".join(proc.cmdline()).startswith(title):
                found.append(proc)
        except psutil.NoSuchProcess:
            continue
    return found


def test_a_worker_killed_mid_batch_is_retried_and_nothing_is_written_twice(
    project: Path, cluster: Cluster
) -> None:
    cache = project / ".otpc_cache/frames"
    shutil.rmtree(cache, ignore_errors=True)
    watch = EntryWatch(cache)
    stage = subprocess.Popen(
        [*RENDER, "--out", "outputs/render-killed"],
        cwd=project,
        env=cluster.env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    killed = None
    deadline = time.monotonic() + 300
    while killed is None and stage.poll() is None and time.monotonic() < deadline:
        busy = workers(cluster, busy=True) if len(entries(cache, "*.png")) >= 2 else []
        if busy:
            killed = busy[0].pid
            os.kill(killed, signal.SIGKILL)
        time.sleep(0.005)
    out, err = stage.communicate(timeout=300)
    watch.stop()
    assert killed is not None, "the kill must land while a worker runs a call"
    assert stage.returncode == 0, err
    assert not psutil.pid_exists(killed) or psutil.Process(killed).status() == "zombie"
    rendered, cached = map(int, re.search(REPORT, out).groups())
    assert (rendered, cached) == (frame_count(project), 0)
    assert watch.replaced == [], "an entry was written twice"
    assert len(entries(cache, "*.png")) == frame_count(project)
    same_tree(project / "local-render", project / "outputs/render-killed")


def test_a_driver_killed_mid_stage_resumes_from_the_cache(project: Path, cluster: Cluster) -> None:
    cache = project / ".otpc_cache/frames"
    shutil.rmtree(cache, ignore_errors=True)
    out = ["--out", "outputs/render-resumed"]
    rc = kill_when(
        [*RENDER, *out], project, lambda: len(entries(cache, "*.png")) >= 4, env=cluster.env
    )
    assert rc == -signal.SIGKILL
    assert not (project / "outputs/render-resumed").exists(), "no partial output after a kill"
    deadline = time.monotonic() + 60  # the driver's workers die with it
    while workers(cluster) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert workers(cluster) == []
    done = len(entries(cache, "*.png"))
    assert 4 <= done < frame_count(project), "the kill must land part-way"
    proc = run([*RENDER, *out], project, env=cluster.env)
    assert tuple(map(int, re.search(REPORT, proc.stdout).groups())) == (
        frame_count(project) - done,
        done,
    )
    same_tree(project / "local-render", project / "outputs/render-resumed")


def test_workers_render_into_an_s3_cache(project: Path, cluster: Cluster) -> None:
    import s3fs

    s3 = s3fs.S3FileSystem(
        endpoint_url=cluster.env["AWS_ENDPOINT_URL_S3"], key="testing", secret="testing"
    )
    s3.mkdir(BUCKET)
    params = yaml.safe_load((project / "params.yaml").read_text())
    params["render"] |= {"backend": "ray", "cache_dir": f"s3://{BUCKET}/frames"}
    (project / "s3.yaml").write_text(yaml.safe_dump(params))
    proc = run(
        [*RENDER, "--params", "s3.yaml", "--out", "outputs/render-s3"], project, env=cluster.env
    )
    assert tuple(map(int, re.search(REPORT, proc.stdout).groups())) == (frame_count(project), 0)
    stored = s3.find(f"{BUCKET}/frames")
    assert len(stored) == frame_count(project) and all(p.endswith(".png") for p in stored)
    same_tree(project / "local-render", project / "outputs/render-s3")


def test_the_code_digest_changes_with_any_source_file(tmp_path: Path) -> None:
    """What refuses workers whose otpc differs from the driver's. (On one machine Ray puts
    the driver's sys.path first on its workers', so they import the driver's otpc: a
    refusal itself needs two nodes with different clones.)"""
    shutil.copytree(ROOT / "otpc", tmp_path / "otpc", ignore=shutil.ignore_patterns("__pycache__"))
    code = "from otpc.ray_pool import code_digest; print(code_digest())"

    def digest() -> str:
        return run(["python", "-c", code], tmp_path, env=env() | {"PYTHONPATH": ""}).stdout

    before = digest()
    with (tmp_path / "otpc/text.py").open("a") as f:
        f.write("# one more line\n")
    assert digest() != before
