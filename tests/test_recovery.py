"""Faults done for real: SIGKILL part-way through render and score, then resume."""

from __future__ import annotations

import filecmp
import os
import re
import signal
import subprocess
import time
from pathlib import Path

import polars as pl
import pytest

from tests.project import env, make_project, run

pytestmark = pytest.mark.slow
RENDER = ["python", "-m", "stages.render"]
SCORE = ["python", "-m", "stages.score"]


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Pairs, embeddings and couplings ready; rendering slow enough to interrupt."""
    path = make_project(tmp_path_factory.mktemp("crash") / "study",
                        {"render": {"steps": 6, "batch_size": 2, "frames": 5},
                         "score": {"net": "vgg", "batch_size": 1}})
    run(["dvc", "repro", "couple"], path)
    return path


def entries(folder: Path, pattern: str) -> list[Path]:
    return [p for p in folder.rglob(pattern) if not p.name.startswith(".")] if folder.exists() else []


def kill_when(cmd: list[str], cwd: Path, ready) -> int:
    """Start ``cmd`` and SIGKILL it as soon as ``ready()`` is true; returns its exit code."""
    proc = subprocess.Popen(cmd, cwd=cwd, env=env(), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 300
    while not ready() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    os.kill(proc.pid, signal.SIGKILL)
    return proc.wait()


def same_tree(a: Path, b: Path) -> None:
    files_a = sorted(p.relative_to(a) for p in a.rglob("*") if p.is_file())
    files_b = sorted(p.relative_to(b) for p in b.rglob("*") if p.is_file())
    assert files_a == files_b
    match, mismatch, errors = filecmp.cmpfiles(a, b, files_a, shallow=False)
    assert not mismatch and not errors, mismatch[:5]


def test_render_killed_midway_resumes_and_matches(project: Path) -> None:
    cache = project / ".otpc_cache/frames"
    rc = kill_when(RENDER, project, lambda: len(entries(cache, "*.png")) >= 4)
    assert rc == -signal.SIGKILL
    done = len(entries(cache, "*.png"))
    assert 4 <= done
    assert not (project / "outputs/render").exists(), "no partial output after a kill"

    proc = run(RENDER, project)
    rendered, cached = map(int, re.search(r"(\d+) frame\(s\) rendered, (\d+) from the cache",
                                          proc.stdout).groups())
    assert cached == done and rendered > 0

    fresh = project / "fresh"
    run(["python", "-c", "import shutil; shutil.rmtree('.otpc_cache/frames')"], project)
    run(RENDER + ["--out", str(fresh)], project)
    same_tree(project / "outputs/render", fresh)


def test_score_killed_midway_resumes_and_matches(project: Path) -> None:
    if not (project / "outputs/render").exists():
        run(RENDER, project)
    cache = project / ".otpc_cache/scores"
    rc = kill_when(SCORE, project, lambda: len(entries(cache, "*.json")) >= 1)
    assert rc == -signal.SIGKILL
    done = len(entries(cache, "*.json"))
    paths = pl.read_parquet(project / "outputs/render/index.parquet")["path_id"].n_unique()
    assert 1 <= done < paths, "the kill must land part-way"
    assert not (project / "outputs/scores.parquet").exists()

    run(SCORE, project)
    resumed = pl.read_parquet(project / "outputs/scores.parquet")
    run(["python", "-c", "import shutil; shutil.rmtree('.otpc_cache/scores')"], project)
    run(SCORE + ["--out", "outputs/scores_fresh.parquet"], project)
    fresh = pl.read_parquet(project / "outputs/scores_fresh.parquet")
    assert resumed.equals(fresh)


def test_truncated_files_are_never_read_as_valid(project: Path) -> None:
    if not (project / "outputs/render").exists():
        run(RENDER, project)
    index = pl.read_parquet(project / "outputs/render/index.parquet")
    key = index["key"][0]
    entry = project / ".otpc_cache/frames" / key[:2] / f"{key}.png"
    entry.write_bytes(entry.read_bytes()[:100])
    proc = run(RENDER, project)
    assert "corrupt cache entry" in proc.stderr
    assert re.search(r"\b1 frame\(s\) rendered", proc.stdout)

    emb = next((project / "outputs/embeddings").glob("*.safetensors"))
    emb.write_bytes(emb.read_bytes()[:50])
    proc = run(RENDER, project, check=False)
    assert proc.returncode != 0
    assert emb.name in proc.stderr and "re-run `embed`" in proc.stderr


def test_damaged_score_cache_entry_is_reported_and_rescored(project: Path) -> None:
    if not (project / "outputs/scores.parquet").exists():
        run(RENDER, project)
        run(SCORE, project)
    before = pl.read_parquet(project / "outputs/scores.parquet")
    entry = sorted(entries(project / ".otpc_cache/scores", "*.json"))[0]
    entry.write_text(entry.read_text()[:20])
    proc = run(SCORE, project)
    assert "corrupt score cache entry" in proc.stderr and entry.name in proc.stderr
    assert pl.read_parquet(project / "outputs/scores.parquet").equals(before)
