"""Build a throw-away copy of the project (a real git + DVC repo) with small params."""

from __future__ import annotations

import copy
import filecmp
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]
COPY = [
    "dvc.yaml",
    "params.yaml",
    "stages",
    "otpc",
    "data/cxc/readme_examples.csv",
    ".dvc/config",
    ".dvc/.gitignore",
    ".dvcignore",
    ".gitignore",
]

RATING_BINS = [0, 1, 2, 3, 4, 5]  # CxC's 0-5 ratings, one group per point (CSV and CxC sources)
TOY_BINS = [0, 1, 2, 3, 4]  # toy pairs share 0-3 of the four attributes: one group per score

# Small but complete: 4 toy pairs (one per group), three methods, 3 frames, 2 denoising steps.
# Toy pairs count all four attributes (scores 0-3, TOY_BINS); tests of CSV or CxC pairs set
# RATING_BINS.
# score.net squeeze has no packaged ImageNet weights: tests that switch to it need an
# untrained backbone, so FAST measures with one (the committed params.yaml, run by the
# fresh-clone test, uses ImageNet weights); its distances mean little, so no pair is called
# perceptually degenerate (min_end_lpips 0).
FAST = {
    "data": {
        "n_per_group": 1,
        "spare_per_group": 0,
        "bins": TOY_BINS,
        "toy_attributes": ["shape", "colour", "size", "background"],
    },
    "couple": {"random_replicates": 2},
    "render": {"frames": 3, "steps": 2},
    "score": {"backbone": "untrained"},
    "aggregate": {"bootstrap": 200, "permutations": 200, "min_end_lpips": 0.0},
}


def deep_update(base: dict, update: dict) -> dict:
    for k, v in update.items():
        if isinstance(v, dict) and isinstance(base.get(k), dict):
            deep_update(base[k], v)
        else:
            base[k] = v
    return base


def env() -> dict[str, str]:
    """The environment for dvc/otpc subprocesses: this interpreter's bin first on PATH."""
    e = dict(os.environ)
    e["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{e.get('PATH', '')}"
    e.pop("DVC_ROOT", None)
    return e


def run(args: list[str], cwd: Path, check: bool = True, **kw: Any) -> subprocess.CompletedProcess:
    """Run a command in ``cwd``; on failure, show its output."""
    kw.setdefault("timeout", 900)  # a hung command fails the test instead of the whole run
    proc = subprocess.run(
        args, cwd=cwd, env=kw.pop("env", env()), capture_output=True, text=True, **kw
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"{args} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return proc


def make_project(dest: Path, params: dict | None = None) -> Path:
    """Copy the project into ``dest``, apply ``FAST`` then ``params``, git+dvc init, commit."""
    dest.mkdir(parents=True, exist_ok=True)
    for rel in COPY:
        src = ROOT / rel
        if src.is_dir():
            shutil.copytree(src, dest / rel, ignore=shutil.ignore_patterns("__pycache__"))
        elif src.exists():
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / rel)
    set_params(dest, deep_update(copy.deepcopy(FAST), params or {}))
    run(["git", "init", "-q", "-b", "main"], dest)
    if not (dest / ".dvc").exists():
        run(["dvc", "init", "-q"], dest)
    (dest / ".dvc").mkdir(exist_ok=True)
    run(["dvc", "config", "core.analytics", "false"], dest)
    run(["git", "add", "-A"], dest)
    run(["git", "commit", "-qm", "test project"], dest)
    return dest


def set_params(project: Path, update: dict) -> None:
    """Merge ``update`` into the project's params.yaml."""
    path = project / "params.yaml"
    params = yaml.safe_load(path.read_text())
    path.write_text(yaml.safe_dump(deep_update(params, update), sort_keys=False))


def ran_stages(output: str) -> list[str]:
    """Names of the stages that `dvc repro` / `dvc exp run` actually executed."""
    return [
        line.split("'")[1] for line in output.splitlines() if line.startswith("Running stage '")
    ]


def entries(folder: Path, pattern: str) -> list[Path]:
    """The files under ``folder`` matching ``pattern``, but not hidden ones (temporaries)."""
    return (
        [p for p in folder.rglob(pattern) if not p.name.startswith(".")] if folder.exists() else []
    )


def kill_when(cmd: list[str], cwd: Path, ready: Callable[[], bool], **kw: Any) -> int:
    """Start ``cmd`` and SIGKILL it as soon as ``ready()`` is true; returns its exit code."""
    proc = subprocess.Popen(
        cmd, cwd=cwd, env=kw.pop("env", env()), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    deadline = time.monotonic() + 300
    while not ready() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    os.kill(proc.pid, signal.SIGKILL)
    return proc.wait()


def same_tree(a: Path, b: Path) -> None:
    """The folders hold the same files, byte for byte."""
    files_a = sorted(p.relative_to(a) for p in a.rglob("*") if p.is_file())
    files_b = sorted(p.relative_to(b) for p in b.rglob("*") if p.is_file())
    assert files_a == files_b
    _match, mismatch, errors = filecmp.cmpfiles(a, b, files_a, shallow=False)
    assert not mismatch and not errors, mismatch[:5]
