"""The code's map stays true: dvc.yaml's hand-listed deps are exactly the modules each stage
imports, the render stage depends on exactly the settings that decide pixels, and the docs
list every module and every table column."""

from __future__ import annotations

import ast
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from otpc.models import loaded_files
from otpc.params import RenderParams, ScoreParams, speed_only
from otpc.tables import ALL as TABLES
from otpc.toy import MODEL_DIR
from tests.project import ROOT, run

DVC = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
POWERED = "powered"  # the powered study's folder: its params, dvc.yaml, dvc.lock and results
# Checks that run before a stage's work and refuse bad params; they never change an output.
CHECKS_ONLY = {"otpc/commands.py", "otpc/preflight.py"}


def imported(path: Path) -> set[str]:
    """Names of the otpc and stages modules ``path`` imports, at any level of its code."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names |= {f"{node.module}.{alias.name}" for alias in node.names}  # from otpc import x
    return {n for n in names if n.split(".")[0] in ("otpc", "stages")}


def module_files(name: str) -> list[Path]:
    """The files Python runs to import ``name``: each package's __init__, then the module."""
    parts = name.split(".")
    files = []
    for i in range(1, len(parts) + 1):
        base = ROOT.joinpath(*parts[:i])
        for candidate in (base / "__init__.py", base.with_suffix(".py")):
            if candidate.is_file():
                files.append(candidate)
    return files


def closure(start: str) -> set[str]:
    """Repository-relative files that running module ``start`` can import."""
    seen: set[str] = set()
    todo = module_files(start)
    while todo:
        path = todo.pop()
        rel = path.relative_to(ROOT).as_posix()
        if rel in seen or rel in CHECKS_ONLY:
            continue
        seen.add(rel)
        todo += [f for name in imported(path) for f in module_files(name)]
    return seen


@pytest.mark.parametrize("stage", list(DVC))
def test_stage_deps_are_exactly_the_code_it_imports(stage: str) -> None:
    code = {d for d in DVC[stage]["deps"] if d.endswith(".py")}
    needed = closure(f"stages.{stage}")
    assert sorted(needed - code) == [], "imported but not a dependency in dvc.yaml"
    assert sorted(code - needed) == [], "a dependency in dvc.yaml that it does not import"


def test_render_stage_depends_on_exactly_the_settings_that_decide_pixels() -> None:
    params = DVC["render"]["params"]
    assert sorted(params) == sorted(["model", *(f"render.{k}" for k in RenderParams.pixel_keys())])


def test_score_stage_depends_on_every_setting_but_where_it_runs() -> None:
    decisive = [k for k in ScoreParams.model_fields if k not in speed_only(ScoreParams)]
    assert sorted(DVC["score"]["params"]) == sorted(
        ["model.device", *(f"score.{k}" for k in decisive)]
    )


def test_stages_on_the_toy_model_depend_on_exactly_the_files_it_loads_from() -> None:
    """The model's own record (its measured quality, loss log) beside the weights is not an
    input: updating it keeps the frames (``folder_stamp``) and the locks."""
    loaded = {
        f"otpc/toy/model/{p.relative_to(MODEL_DIR).parts[0]}" for p in loaded_files(MODEL_DIR)
    }
    for stage in ("embed", "render"):
        named = {d for d in DVC[stage]["deps"] if d.startswith("otpc/toy/model")}
        assert named == loaded, stage


def test_the_local_backends_do_not_import_ray() -> None:
    modules = "stages.render, stages.score, otpc.ray_pool, otpc.ray_render"
    code = f"import sys, {modules}; sys.exit('ray' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], cwd=ROOT).returncode == 0


def test_architecture_doc_lists_every_table_column() -> None:
    doc = (ROOT / "docs/architecture.md").read_text()
    for table in TABLES:
        section = doc.split(f"### {table.name}\n", 1)[1].split("\n#", 1)[0]
        listed = re.findall(r"^\| `(\w+)` \|", section, re.M)
        assert listed == list(table.columns), table.name


def test_docs_name_every_module() -> None:
    modules = {
        p.relative_to(ROOT / "otpc").with_suffix("").as_posix()
        for p in (ROOT / "otpc").rglob("*.py")
        if p.name != "__init__.py"
    }
    doc = (ROOT / "docs/architecture.md").read_text()
    named = set(re.findall(r"`otpc/([\w/]+)\.py`", doc))
    assert sorted(modules - named) == [] and sorted(named - modules) == []
    readme = (ROOT / "README.md").read_text().split("## Layout", 1)[1].split("\n## ", 1)[0]
    listed = set(re.findall(r"`(\w+)/?`", readme.split("- `stages/`")[0]))
    flat = {m for m in modules if "/" not in m} | {"study"}  # study/: one module per stage
    assert sorted(flat - listed) == [], "README's Layout misses modules"


def _moved(path: str) -> str:
    """A path of the demo's outputs as the powered study has it."""
    return f"{POWERED}/{path}" if path.split("/")[0] in ("outputs", "metrics") else path


def _moved_entries(entries: list) -> list:
    """dvc.yaml outs/metrics/plots entries (a path, or {path: options}) moved."""
    return [
        _moved(e) if isinstance(e, str) else {_moved(k): v for k, v in e.items()} for e in entries
    ]


def powered_stages() -> dict:
    """The demo's stages as the powered study runs them: from the repository root (wdir
    ..), on its own params file, writing under its folder."""
    params_file = f"{POWERED}/params.yaml"
    out = {}
    for name, stage in DVC.items():
        cmd = stage["cmd"].replace(
            f"-m stages.{name} ", f"-m stages.{name} --params {params_file} ", 1
        )
        cmd = re.sub(r"(?<=[ ])(outputs|metrics)(?=[/ ]|$)", rf"{POWERED}/\1", cmd)
        keys = [k for k in stage["params"] if isinstance(k, str)]
        moved = {
            "cmd": cmd,
            "wdir": "..",
            "deps": [_moved(d) for d in stage["deps"]],
            "params": [{params_file: keys or None}],
        }
        for section in ("metrics", "outs", "plots"):
            if section in stage:
                moved[section] = _moved_entries(stage[section])
        out[name] = moved
    return out


def test_the_powered_study_runs_the_demos_stages() -> None:
    """powered/dvc.yaml is dvc.yaml with the powered study's params and folders (written
    by ``python -m tests.test_architecture`` after dvc.yaml changes)."""
    written = yaml.safe_load((ROOT / POWERED / "dvc.yaml").read_text())["stages"]
    assert written == powered_stages()


@pytest.mark.parametrize("pipeline", ["dvc.yaml", f"{POWERED}/dvc.yaml"])
def test_committed_locks_record_the_inputs_as_they_are(pipeline: str) -> None:
    """Every input in git that a committed lock names (code, the toy model's parts, data)
    has the hash the lock records, so a fresh clone's ``dvc repro`` reruns nothing and
    leaves git clean. After changing one, rerun its stages (``dvc repro <dvc.yaml>``, or
    ``--single-item <dvc.yaml>:<stage>`` where the outputs are unchanged). Outputs of other
    stages are not in git: absent in a clone, they are not checked here."""
    tracked = run(["git", "ls-files"], ROOT).stdout.splitlines()
    status = json.loads(run(["dvc", "status", "--json", pipeline], ROOT).stdout)
    stale = sorted(
        f"{name}: {path}"
        for name, changes in status.items()
        for change in changes
        if isinstance(change, dict)
        for path, state in change.get("changed deps", {}).items()
        if state == "modified" and any(f == path or f.startswith(f"{path}/") for f in tracked)
    )
    assert not stale, f"the lock of {pipeline} is stale for {stale}"


if __name__ == "__main__":
    header = (
        '# The powered study (README, "The powered study"): the demo\'s stages (dvc.yaml), run\n'
        f"# from the repository root on {POWERED}/params.yaml, writing under {POWERED}/.\n"
        "# Written by `python -m tests.test_architecture` from dvc.yaml; do not edit.\n"
    )
    text = yaml.safe_dump({"stages": powered_stages()}, sort_keys=False, width=100)
    (ROOT / POWERED / "dvc.yaml").write_text(header + text)
