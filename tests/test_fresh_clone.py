"""The README's promises on a fresh clone, kept for real with the committed demo.

Two clones of the project as git has it. In the first, `make repro` (with this environment's
virtualenv, so it does not install again) runs the whole demo, logs exactly one complete
MLflow run and leaves `git status` clean: every output hashes as the committed dvc.lock says.
A second `dvc repro dvc.yaml` there runs and logs nothing. The second clone runs `dvc repro
dvc.yaml` (the demo's pipeline; the powered study's is powered/dvc.yaml) as another machine
would: other thread count, other MKL, oneDNN and NumPy instruction sets. Its
outputs are the same bytes.
"""

from __future__ import annotations

import filecmp
import json
import os
import shutil
import sys
from pathlib import Path

import pytest
import yaml

from tests.mlflow_checks import assert_complete, runs
from tests.project import ROOT, env, ran_stages, run

pytestmark = pytest.mark.slow
STAGES = ["sample", "embed", "couple", "render", "score", "aggregate", "log"]
OTHER_MACHINE = {
    "OMP_NUM_THREADS": "3",
    "MKL_NUM_THREADS": "3",
    "MKL_ENABLE_INSTRUCTIONS": "SSE4_2",
    "ONEDNN_MAX_CPU_ISA": "SSE41",
    "NPY_DISABLE_CPU_FEATURES": "X86_V4 AVX512_ICL AVX512_SPR X86_V3",
}


def fresh_clone(dest: Path) -> Path:
    """The project's files as git has them (tracked, and new ones it does not ignore) in a
    new repository: a `git clone`, with uncommitted edits included."""
    listed = run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], ROOT
    ).stdout.split("\0")
    for rel in filter(None, listed):
        if (ROOT / rel).is_file():
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / rel, dest / rel)
    run(["git", "init", "-q", "-b", "main"], dest)
    run(["git", "add", "-A"], dest)
    run(["git", "commit", "-qm", "clone"], dest)
    # Older than this virtualenv's install stamp, so `make` does not install again.
    for name in setup_inputs():
        os.utime(dest / name, (0, 0))
    return dest


def setup_inputs() -> list[str]:
    """The files the Makefile's install stamp depends on."""
    rule = next(
        line
        for line in (ROOT / "Makefile").read_text().splitlines()
        if line.startswith("$(STAMP):")
    )
    return rule.split(":", 1)[1].split()


def clean_env() -> dict[str, str]:
    """The user's environment: the default MLflow store, nothing pinned by the tests."""
    e = env()
    for name in ("MLFLOW_TRACKING_URI", "ATEN_CPU_CAPABILITY", *OTHER_MACHINE):
        e.pop(name, None)
    return e


def status(clone: Path) -> str:
    return run(["git", "status", "--porcelain"], clone).stdout


@pytest.fixture(scope="module")
def clones(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, str]:
    base = tmp_path_factory.mktemp("fresh")
    first = fresh_clone(base / "first")
    venv = Path(sys.executable).parent.parent
    up_to_date = run(["make", "-q", "setup", f"VENV={venv}"], first, check=False)
    assert up_to_date.returncode == 0, "make would install again into this test's virtualenv"
    made = run(["make", "repro", f"VENV={venv}"], first, env=clean_env(), timeout=1800)
    second = fresh_clone(base / "second")
    run(["dvc", "repro", "dvc.yaml"], second, env=clean_env() | OTHER_MACHINE, timeout=1800)
    return first, second, made.stdout


def test_make_repro_computes_the_study_and_leaves_git_clean(clones) -> None:
    """Every stage runs but `aggregate`: its outputs are committed and its inputs come out
    the same bytes, so DVC rightly skips it; `log` still runs (its record is not in git)."""
    first, _, output = clones
    assert ran_stages(output) == [s for s in STAGES if s != "aggregate"]
    assert status(first) == ""  # dvc.lock and metrics/ as committed


def test_make_repro_logs_exactly_one_complete_run(clones, tmp_path: Path) -> None:
    first, _, _ = clones
    uri = f"sqlite:///{first / 'mlflow.db'}"
    (only,) = runs(uri)
    lock = yaml.safe_load((first / "dvc.lock").read_text())
    summary = json.loads((first / "metrics/summary.json").read_text())
    assert_complete(uri, only, lock, summary, tmp_path)
    assert only.data.tags["random_weights"] == "False"
    assert only.data.tags["model"] == summary["model"]
    assert "not Stable Diffusion" in only.data.tags["model"]


def test_second_repro_runs_and_logs_nothing(clones) -> None:
    first, _, _ = clones
    proc = run(["dvc", "repro", "dvc.yaml"], first, env=clean_env())
    assert ran_stages(proc.stdout) == []
    assert len(runs(f"sqlite:///{first / 'mlflow.db'}")) == 1
    assert status(first) == ""


def test_another_machine_gives_the_same_bytes(clones) -> None:
    first, second, _ = clones
    assert status(second) == ""  # its dvc.lock is the committed one too
    files = sorted(str(p.relative_to(first)) for p in (first / "outputs").rglob("*") if p.is_file())
    assert len(files) > 200
    _, mismatch, errors = filecmp.cmpfiles(first, second, files, shallow=False)
    assert not mismatch and not errors, (mismatch + errors)[:5]
    for rel in ("dvc.lock", "metrics/summary.json", "metrics/fig_strips.png"):
        assert (
            (first / rel).read_bytes() == (second / rel).read_bytes() == (ROOT / rel).read_bytes()
        )
