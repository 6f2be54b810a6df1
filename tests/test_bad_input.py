"""Bad input stops a stage with an error naming the key, file or row; nothing is written."""

from __future__ import annotations

import shutil
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from otpc.cli import main as otpc_main
from stages.couple import main as couple_main
from stages.sample import main as sample_main
from tests.project import RATING_BINS, ROOT, run

CSV = ROOT / "data/cxc/readme_examples.csv"


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    shutil.copy(ROOT / "params.yaml", tmp_path / "params.yaml")
    shutil.copy(ROOT / "dvc.yaml", tmp_path / "dvc.yaml")
    shutil.copy(CSV, tmp_path / "pairs.csv")
    edit_params(
        tmp_path / "params.yaml", data={"source": "csv", "path": "pairs.csv", "bins": RATING_BINS}
    )
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


@pytest.mark.parametrize(
    "render, message",
    [({"frames": 1}, "render.frames = 1"), ({"height": 65}, "render.height = 65")],
)
def test_each_stage_runs_the_same_check_first(workdir: Path, render: dict, message: str) -> None:
    edit_params(workdir / "params.yaml", render=render)
    result = invoke(sample_main, "--out", "pairs.parquet")
    assert result.exit_code == 1
    assert message in result.output
    assert not (workdir / "pairs.parquet").exists()


def test_every_params_problem_reported_at_once(workdir: Path) -> None:
    edit_params(
        workdir / "params.yaml",
        render={"frames": 1, "guidance": -2},
        data={"bins": [0, 2, 1], "n_per_group": -1},
        model={"name": "sd99"},
        score={"net": "resnet"},
        couple={"methods": ["nope"]},
    )
    result = invoke(otpc_main, "check")
    assert result.exit_code == 1
    for key in (
        "render.frames",
        "render.guidance",
        "data.bins",
        "data.n_per_group",
        "model.name",
        "score.net",
        "couple.methods",
    ):
        assert key in result.output, key
    assert "7 problem(s)" in result.output


def test_check_accepts_the_committed_params(workdir: Path) -> None:
    result = invoke(otpc_main, "check")
    assert result.exit_code == 0, result.output


@pytest.mark.parametrize(
    "content, expected",
    [
        ("caption1,rating\nA dog.,3\n", "missing column(s) ['caption2']"),
        (
            "caption1,caption2,rating\nA dog.,A cat.,3\n  ,A cat.,2\n",
            "line 3: column 'caption1' is an empty prompt",
        ),
        (
            "caption1,caption2,rating\nA dog.,A cat.,high\n",
            "line 2: column 'rating' is not a number",
        ),
        ("caption1,caption2,rating\nA dog.,A cat.,nan\n", "line 2: column 'rating' is nan"),
        ("caption1,caption2,rating\nA dog.,A cat.,9\n", "outside the bins"),
        ("caption1,caption2,rating\nA dog.,A cat.,1\nA dog.,A cat.,2\n", "duplicate pair"),
    ],
)
def test_bad_csv_names_file_and_row(workdir: Path, content: str, expected: str) -> None:
    (workdir / "pairs.csv").write_text(content)
    edit_params(workdir / "params.yaml", data={"path": "pairs.csv"})
    result = invoke(sample_main, "--out", "out/pairs.parquet")
    assert result.exit_code == 1
    assert "pairs.csv" in result.output and expected in result.output, result.output
    assert not (workdir / "out").exists()


@pytest.mark.parametrize("pair_id", ["", "a/b"])
def test_unsafe_pair_ids_name_the_line(workdir: Path, pair_id: str) -> None:
    (workdir / "pairs.csv").write_text(
        f"id,caption1,caption2,rating\nok,A dog.,A cat.,1\n{pair_id},A,B,2\n"
    )
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
    edit_params(
        workdir / "params.yaml", data={"bins": [0, 0.5, 1, 2, 3, 4, 5], "path": "pairs.csv"}
    )
    result = invoke(sample_main, "--out", "pairs.parquet")
    assert result.exit_code == 1
    assert "similarity group [0.5,1) (data.bins) has no pairs" in result.output
    assert not (workdir / "pairs.parquet").exists()


def test_empty_prompt_on_the_command_line() -> None:
    result = invoke(otpc_main, "interpolate", " ", "a cat", "--out", "x")
    assert result.exit_code == 2 and "empty prompt" in result.output


def without(section: str) -> Callable[[str], str]:
    def edit(text: str) -> str:
        params = yaml.safe_load(text)
        del params[section]
        return yaml.safe_dump(params)

    return edit


def setting(section: str, **values: object) -> Callable[[str], str]:
    def edit(text: str) -> str:
        params = yaml.safe_load(text)
        params[section].update(values)
        return yaml.safe_dump(params)

    return edit


# Params that used to pass `otpc check` and fail part-way through the pipeline.
BAD_PARAMS = {
    "height not a multiple of the VAE factor": (
        setting("render", height=65),
        "render.height = 65: must be a multiple of 2",
    ),
    "no such device": (setting("model", device="banana"), "model.device = 'banana': not a device"),
    "device not on this machine": (
        setting("model", device="cuda:99"),
        "model.device = 'cuda:99': this machine has",
    ),
    "render section missing": (
        without("render"),
        "render.frames: missing (dvc.yaml's stage 'render' depends on it)",
    ),
    "empty file": (lambda text: "", "the file is empty"),
    "null file": (lambda text: "null\n", "the file is empty"),
    "duplicate key": (
        lambda text: text.replace("study: otpc-demo", "study: otpc-demo\nstudy: again"),
        "duplicate key 'study'",
    ),
    "empty study name": (
        lambda text: text.replace("study: otpc-demo", 'study: ""'),
        "study = '': must not be empty",
    ),
    "empty cache folder": (
        setting("render", cache_dir=""),
        "render.cache_dir = '': must not be empty",
    ),
    "a cache URL no filesystem here reads": (
        setting("render", cache_dir="nosuchfs://bucket/frames"),
        "render.cache_dir = 'nosuchfs://bucket/frames': no filesystem for this URL here",
    ),
    "an FTP cache URL whose host is unknown": (
        setting("render", cache_dir="ftp://x/y"),
        "render.cache_dir = 'ftp://x/y': cannot reach it",
    ),
    "an FTP cache URL nothing answers at": (
        setting("render", cache_dir="ftp://127.0.0.1:1/y"),
        "render.cache_dir = 'ftp://127.0.0.1:1/y': cannot reach it: ConnectionRefusedError",
    ),
    "values nested too deeply to read": (
        lambda text: text + "deep: " + "[" * 50_000 + "]" * 50_000 + "\n",
        "params.yaml: its values are nested too deeply to read",
    ),
    "a Ray address Ray does not take": (
        lambda text: setting("ray", address="head")(setting("score", backend="ray")(text)),
        "ray.address = 'head': auto, local, host:port or ray://host:port",
    ),
    "a million frames": (setting("render", frames=10**6), "render.frames = 1000000"),
    "a hundred thousand steps": (setting("render", steps=10**5), "render.steps = 100000"),
    "model folder that is not a diffusers pipeline": (
        setting("model", name="."),
        "model.name = '.': '.' is a folder but not a diffusers pipeline",
    ),
    "data file missing": (
        setting("data", path="nowhere.csv"),
        "data.path = 'nowhere.csv': file not found",
    ),
    "strata a CSV source does not have": (
        setting("aggregate", stratify_by="sampling_method"),
        "aggregate.stratify_by = 'sampling_method': only CxC pairs have a sampling method",
    ),
    "a stratum nothing defines": (
        setting("aggregate", stratify_by="colour"),
        "aggregate.stratify_by = 'colour'",
    ),
}


@pytest.mark.parametrize("edit, message", BAD_PARAMS.values(), ids=BAD_PARAMS.keys())
def test_check_catches_what_would_fail_later_naming_the_key(
    workdir: Path, edit, message: str
) -> None:
    path = workdir / "params.yaml"
    path.write_text(edit(path.read_text()))
    result = invoke(otpc_main, "check")
    assert result.exit_code == 1
    assert message in result.output, result.output
    assert isinstance(result.exception, SystemExit)  # a one-line error, not a crash


def test_non_utf8_params_name_the_line(workdir: Path) -> None:
    (workdir / "params.yaml").write_bytes(b"# latin-1\nstudy: caf\xe9\n")
    result = invoke(otpc_main, "check")
    assert result.exit_code == 1
    assert "params.yaml: line 2 is not valid UTF-8" in result.output


# Records on lines 2-4 and 5-6 (quoted newlines); the next one starts on line 7.
MULTILINE = 'caption1,caption2,rating\n"A dog\non two\nlines.",A cat.,1\n"Another\nlong one.",B,2\n'


@pytest.mark.parametrize(
    "content, expected",
    [
        (MULTILINE + "C,D,high\n", "line 7: column 'rating' is not a number"),
        (MULTILINE + "C,D\n", "line 7: 2 field(s), but the header (line 1) has 3"),
        (MULTILINE + "C,D,7\n", "line 7: pair"),
        (MULTILINE + "C,\u200b\u2060,1\n", "line 7: column 'caption2' is an empty prompt"),
        (MULTILINE + 'C,"unclosed,1\n', "line 7: 2 field(s)"),  # the quote runs to the end
    ],
)
def test_line_numbers_count_quoted_newlines(workdir: Path, content: str, expected: str) -> None:
    (workdir / "pairs.csv").write_text(content)
    result = invoke(sample_main, "--out", "pairs.parquet")
    assert result.exit_code == 1
    assert f"pairs.csv: {expected}" in result.output, result.output
    assert not (workdir / "pairs.parquet").exists()


def test_more_steps_than_the_models_scheduler_has(workdir: Path, tiny) -> None:
    """A model whose scheduler was trained on fewer steps than render.steps is refused by
    the preflight check, which reads its configuration (the schema allows up to 1000)."""
    folder = workdir / "short-schedule"
    tiny.pipe.save_pretrained(folder)
    config = folder / "scheduler" / "scheduler_config.json"
    config.write_text(
        config.read_text().replace('"num_train_timesteps": 1000', '"num_train_timesteps": 100')
    )
    edit_params(workdir / "params.yaml", model={"name": str(folder)}, render={"steps": 200})
    result = invoke(otpc_main, "check")
    assert result.exit_code == 1
    assert "render.steps = 200: model" in result.output
    assert "scheduler was trained with 100 steps" in result.output


def test_a_metric_without_weights_is_refused_unless_untrained_is_allowed(
    workdir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TORCH_HOME", str(workdir / "empty-torch-home"))
    edit_params(workdir / "params.yaml", score={"net": "squeeze"})
    result = invoke(otpc_main, "check")
    assert result.exit_code == 1
    assert "score.net = 'squeeze': " in result.output
    assert "no ImageNet weights here" in result.output and "backbone: untrained" in result.output
    edit_params(workdir / "params.yaml", score={"backbone": "untrained"})
    assert invoke(otpc_main, "check").exit_code == 0


# Seven levels of aliases, each nine of the level below, in about 700 bytes: expanded, the
# last key alone is nearly five million strings.
ALIAS_BOMB = (
    "a: &a [" + ", ".join(["lol" * 17] * 9) + "]\n"
    "b: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a]\n"
    "c: &c [*b, *b, *b, *b, *b, *b, *b, *b, *b]\n"
    "d: &d [*c, *c, *c, *c, *c, *c, *c, *c, *c]\n"
    "e: &e [*d, *d, *d, *d, *d, *d, *d, *d, *d]\n"
    "f: &f [*e, *e, *e, *e, *e, *e, *e, *e, *e]\n"
    "g: &g [*f, *f, *f, *f, *f, *f, *f, *f, *f]\n"
)
# Runs a command; prints its peak resident memory (KiB on Linux) as the last line of stderr.
PEAK_MEMORY = (
    "import resource, subprocess, sys\n"
    "code = subprocess.run(sys.argv[1:]).returncode\n"
    "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, file=sys.stderr)\n"
    "sys.exit(code)\n"
)


def check_with_peak_memory(folder: Path, params: str) -> tuple[list[str], int]:
    """`otpc check` run on the file ``params`` in ``folder``: its output lines and its peak
    resident memory (KiB)."""
    (folder / "check.yaml").write_text(params)
    command = [sys.executable, "-c", PEAK_MEMORY, "otpc", "check", "--params", "check.yaml"]
    proc = run(command, folder, check=False, timeout=300)
    assert proc.returncode == 1, proc.stderr
    *lines, peak = (proc.stdout + proc.stderr).splitlines()
    return lines, int(peak)


def test_an_alias_bomb_is_refused_in_one_line_before_it_expands(tmp_path: Path) -> None:
    assert 600 < len(ALIAS_BOMB) < 800
    lines, peak = check_with_peak_memory(tmp_path, ALIAS_BOMB)
    assert lines == [
        "Error: check.yaml: line 2, column 8: alias *a: params files may not use YAML aliases "
        "(a few bytes of them can stand for gigabytes); write the value out"
    ]
    # What `otpc check` takes anyway (it imports torch before it reads the file), and more.
    _, baseline = check_with_peak_memory(tmp_path, "study: [\n")
    assert peak < baseline + 100 * 1024, (peak, baseline)


def test_params_problems_quote_values_shortly_and_list_a_bounded_number(workdir: Path) -> None:
    path = workdir / "params.yaml"
    path.write_text(path.read_text() + "".join(f"extra{i}: {'x' * 100_000}\n" for i in range(60)))
    result = invoke(otpc_main, "check")
    assert result.exit_code == 1
    lines = result.output.splitlines()
    assert lines[0].endswith("params.yaml: 60 problem(s):") and lines[-1] == "  ... and 20 more"
    assert len(lines) == 42 and max(map(len, lines)) < 300
    assert lines[1].startswith("  extra0 = 'xxxxxxxxxx") and "...: Extra inputs" in lines[1]
