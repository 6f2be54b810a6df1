"""Real servers for tests, on free 127.0.0.1 ports: an MLflow tracking server, moto (S3) and
a Ray cluster's head node."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import NamedTuple

HOST = "127.0.0.1"


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def _wait_until_up(url: str, proc: subprocess.Popen, log: Path, timeout: float) -> None:
    """Poll ``url`` until it answers; fail with the server's log if it dies or times out."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited ({proc.returncode}):\n{log.read_text()}")
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except urllib.error.HTTPError:
            return  # it answers, if only with an error status
        except OSError:
            time.sleep(0.3)
    raise RuntimeError(f"server at {url} not up after {timeout:.0f}s:\n{log.read_text()}")


@contextmanager
def _serve(args: list[str], url: str, log: Path, timeout: float) -> Iterator[None]:
    """Run ``args`` in its own process group until the block ends, then stop the group."""
    with log.open("w") as out:
        proc = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        _wait_until_up(url, proc, log, timeout)
        yield
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def _bin(name: str) -> str:
    """A console script of this interpreter's environment."""
    return str(Path(sys.executable).parent / name)


@contextmanager
def mlflow_server(workdir: Path, port: int | None = None) -> Iterator[str]:
    """An ``mlflow server``: SQLite backend, artifacts under ``workdir``; yields its URI."""
    port = port or free_port()
    workdir.mkdir(parents=True, exist_ok=True)
    args = [
        _bin("mlflow"),
        "server",
        "--host",
        HOST,
        "--port",
        str(port),
        "--workers",
        "1",
        "--backend-store-uri",
        f"sqlite:///{workdir / 'mlflow.db'}",
        "--artifacts-destination",
        str(workdir / "artifacts"),
    ]
    uri = f"http://{HOST}:{port}"
    with _serve(args, f"{uri}/health", workdir / f"mlflow-{port}.log", timeout=120):
        yield uri


@contextmanager
def moto_server(workdir: Path) -> Iterator[str]:
    """moto's S3-compatible server; yields its endpoint URL."""
    port = free_port()
    workdir.mkdir(parents=True, exist_ok=True)
    args = [sys.executable, "-m", "moto.server", "-H", HOST, "-p", str(port)]
    url = f"http://{HOST}:{port}"
    with _serve(args, url, workdir / f"moto-{port}.log", timeout=60):
        yield url


def ray_env(workdir: Path) -> dict[str, str]:
    """The environment of a test Ray cluster and of its drivers: token authentication with a
    token made here, nodes known by the loopback address, no usage reporting."""
    token = workdir / "ray-token"
    if not token.exists():
        workdir.mkdir(parents=True, exist_ok=True)
        token.write_text(os.urandom(32).hex())
    return {
        "RAY_AUTH_MODE": "token",
        "RAY_AUTH_TOKEN_PATH": str(token),
        "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",  # Ray's switch for loopback node addresses
        "RAY_USAGE_STATS_ENABLED": "0",
    }


class RayHead(NamedTuple):
    address: str  # what drivers pass to ``ray.init``
    pid: int  # ``ray start``'s: the node's processes, workers included, descend from it


@contextmanager
def ray_head(workdir: Path, cpus: int, env: dict[str, str]) -> Iterator[RayHead]:
    """``ray start --head`` with ``cpus`` CPUs and no GPU, in the environment ``env`` (its
    workers inherit it)."""
    port = free_port()
    log = workdir / f"ray-{port}.log"
    args = [
        _bin("ray"), "start", "--head", "--block", f"--port={port}", f"--num-cpus={cpus}",
        "--num-gpus=0", "--node-ip-address=127.0.0.1", "--include-dashboard=false",
        "--disable-usage-stats", f"--temp-dir={workdir / 'ray'}",
    ]  # fmt: skip
    with log.open("w") as out:
        proc = subprocess.Popen(
            args, stdout=out, stderr=subprocess.STDOUT, start_new_session=True, env=env
        )
    try:
        deadline = time.monotonic() + 120
        while "Ray runtime started" not in log.read_text():
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"ray start failed ({proc.returncode}):\n{log.read_text()}")
            time.sleep(0.3)
        yield RayHead(f"{HOST}:{port}", proc.pid)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # ray start --block outlives SIGTERM for long
        proc.wait()
