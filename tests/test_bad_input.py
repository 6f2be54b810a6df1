"""Bad input stops a stage with an error naming the key, file or row; nothing is written."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from otpc.cli import main as otpc_main
from stages.couple import main as couple_main
from stages.sample import main as sample_main
from tests.project import ROOT

CSV = ROOT / "data/cxc/readme_examples.csv"


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    shutil.copy(ROOT / "params.yaml", tmp_path / "params.yaml")
    shutil.copy(CSV, tmp_path / "pairs.csv")
    edit_params(tmp_path / "params.yaml", data={"path": "pairs.csv"})
    monkeypatch.chdir(tmp_path)
    return tmp_path


def edit_params(path: Path, **sections: dict) -> None:
    params = yaml.safe_load(path.read_text())
    for name, values in sections.items():
        params[name].update(values)
    path.write_text(yaml.safe_dump(params))


def invoke(command, *args: str):
    return CliRunner().invoke(command, list(args))


def test_unknown_method_names_the_key_and_writes_nothing(workdir: Path) -> None:
    edit_params(workdir / "params.yaml", couple={"methods": ["clip", "teleport"]})
    result = invoke(couple_main, "--out", "out.parquet")
    assert result.exit_code == 1
    assert "couple.methods" in result.output and "teleport" in result.output
    assert not (workdir / "out.parquet").exists()


def test_fewer_than_two_frames(workdir: Path) -> None:
    edit_params(workdir / "params.yaml", render={"frames": 1})
    result = invoke(sample_main, "--out", "pairs.parquet")
    assert result.exit_code == 1
    assert "render.frames" in result.output
    assert not (workdir / "pairs.parquet").exists()


def test_every_params_problem_reported_at_once(workdir: Path) -> None:
    edit_params(workdir / "params.yaml", render={"frames": 1, "guidance": -2},
                data={"bins": [0, 2, 1], "n_per_group": -1}, model={"name": "sd99"},
                score={"net": "resnet"}, couple={"methods": ["nope"]})
    result = invoke(otpc_main, "check")
    assert result.exit_code == 1
    for key in ("render.frames", "render.guidance", "data.bins", "data.n_per_group",
                "model.name", "score.net", "couple.methods"):
        assert key in result.output, key
    assert "7 problem(s)" in result.output


def test_check_accepts_the_committed_params(workdir: Path) -> None:
    result = invoke(otpc_main, "check")
    assert result.exit_code == 0, result.output


@pytest.mark.parametrize("content, expected", [
    ("caption1,rating\nA dog.,3\n", "missing column(s) ['caption2']"),
    ("caption1,caption2,rating\nA dog.,A cat.,3\n  ,A cat.,2\n", "line 3: column 'caption1' is an empty prompt"),
    ("caption1,caption2,rating\nA dog.,A cat.,high\n", "line 2: column 'rating' is not a number"),
    ("caption1,caption2,rating\nA dog.,A cat.,nan\n", "line 2: column 'rating' is nan"),
    ("caption1,caption2,rating\nA dog.,A cat.,9\n", "outside the bins"),
    ("caption1,caption2,rating\nA dog.,A cat.,1\nA dog.,A cat.,2\n", "duplicate pair"),
])
def test_bad_csv_names_file_and_row(workdir: Path, content: str, expected: str) -> None:
    (workdir / "pairs.csv").write_text(content)
    edit_params(workdir / "params.yaml", data={"path": "pairs.csv"})
    result = invoke(sample_main, "--out", "out/pairs.parquet")
    assert result.exit_code == 1
    assert "pairs.csv" in result.output and expected in result.output, result.output
    assert not (workdir / "out").exists()


@pytest.mark.parametrize("pair_id", ["", "a/b"])
def test_unsafe_pair_ids_name_the_line(workdir: Path, pair_id: str) -> None:
    (workdir / "pairs.csv").write_text(f"id,caption1,caption2,rating\nok,A dog.,A cat.,1\n{pair_id},A,B,2\n")
    edit_params(workdir / "params.yaml", data={"path": "pairs.csv", "id_column": "id"})
    result = invoke(sample_main, "--out", "pairs.parquet")
    assert result.exit_code == 1
    assert "pairs.csv: line 3: column 'id' must be a non-empty id" in result.output
    assert not (workdir / "pairs.parquet").exists()


def test_undecodable_bytes_name_the_line(workdir: Path) -> None:
    (workdir / "pairs.csv").write_bytes(b"caption1,caption2,rating\nA dog.,A cat.,1\nA \xff.,B,2\n")
    edit_params(workdir / "params.yaml", data={"path": "pairs.csv"})
    result = invoke(sample_main, "--out", "pairs.parquet")
    assert result.exit_code == 1
    assert "pairs.csv: line 3 is not valid UTF-8" in result.output


def test_group_with_no_pairs_names_the_group(workdir: Path) -> None:
    edit_params(workdir / "params.yaml", data={"bins": [0, 0.5, 1, 2, 3, 4, 5], "path": "pairs.csv"})
    result = invoke(sample_main, "--out", "pairs.parquet")
    assert result.exit_code == 1
    assert "similarity group [0.5,1) (data.bins) has no pairs" in result.output
    assert not (workdir / "pairs.parquet").exists()


def test_empty_prompt_on_the_command_line() -> None:
    result = invoke(otpc_main, "interpolate", " ", "a cat", "--out", "x")
    assert result.exit_code == 2 and "empty prompt" in result.output
