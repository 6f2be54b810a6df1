"""Faults done for real: SIGKILL part-way through render and score, then resume."""

from __future__ import annotations

import json
import re
import shutil
import signal
import subprocess
from pathlib import Path

import polars as pl
import pytest
import yaml

from tests.project import RATING_BINS, entries, kill_when, make_project, run, same_tree

pytestmark = pytest.mark.slow
RENDER = ["python", "-m", "stages.render"]
SCORE = ["python", "-m", "stages.score"]


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Pairs, embeddings and couplings ready; rendering slow enough to interrupt."""
    path = make_project(
        tmp_path_factory.mktemp("crash") / "study",
        {
            "render": {"steps": 6, "batch_size": 2, "frames": 5},
            "score": {"net": "vgg", "batch_size": 1},
        },
    )
    run(["dvc", "repro", "couple"], path)
    return path


def test_render_killed_midway_resumes_and_matches(project: Path) -> None:
    cache = project / ".otpc_cache/frames"
    rc = kill_when(RENDER, project, lambda: len(entries(cache, "*.png")) >= 4)
    assert rc == -signal.SIGKILL
    done = len(entries(cache, "*.png"))
    assert done >= 4
    assert not (project / "outputs/render").exists(), "no partial output after a kill"

    proc = run(RENDER, project)
    rendered, cached = map(
        int, re.search(r"(\d+) frame\(s\) rendered, (\d+) from the cache", proc.stdout).groups()
    )
    assert cached == done and rendered > 0

    fresh = project / "fresh"
    run(["python", "-c", "import shutil; shutil.rmtree('.otpc_cache/frames')"], project)
    run([*RENDER, "--out", str(fresh)], project)
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
    run([*SCORE, "--out", "outputs/scores_fresh.parquet"], project)
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
    assert "bad cache entry" in proc.stderr
    assert re.search(r"\b1 frame\(s\) rendered", proc.stdout)

    emb = next((project / "outputs/embeddings").glob("*.safetensors"))
    emb.write_bytes(emb.read_bytes()[:50])
    proc = run(RENDER, project, check=False)
    assert proc.returncode != 0
    assert emb.name in proc.stderr and "re-run `embed`" in proc.stderr
    run(["dvc", "checkout", "--force", "outputs/embeddings"], project)  # undo the damage


def test_altered_score_cache_entries_are_reported_and_rescored(project: Path) -> None:
    """An entry whose numbers were edited (still valid JSON), a truncated one and two whose
    contents were swapped are each reported once, removed and scored again: the scores equal
    a clean run's."""
    run(RENDER, project)
    run(SCORE, project)  # every path in the cache
    cache = project / ".otpc_cache/scores"
    edited, truncated, first, second = damaged = sorted(entries(cache, "*.json"))[:4]
    # a path's entry, or its two end frames' (scored with it; not counted as a path)
    paths = sum(not json.loads(e.read_text())["path_id"].endswith("#ends") for e in damaged)
    record = json.loads(edited.read_text())
    record["steps"] = [3 * step for step in record["steps"]]
    edited.write_text(json.dumps(record, indent=2))
    truncated.write_text(truncated.read_text()[:40])
    contents = first.read_text(), second.read_text()
    first.write_text(contents[1])
    second.write_text(contents[0])

    proc = run(SCORE, project)
    scored, reused = counts(r"(\d+) path\(s\) scored, (\d+) from the cache", proc.stdout)
    assert scored >= paths and reused > 0
    for entry in damaged:
        assert proc.stderr.count(f"{entry}:") == 1, proc.stderr
    assert "does not match the digest" in proc.stderr and "another key" in proc.stderr
    assert all(json.loads(entry.read_text())["steps"] for entry in damaged)  # written again
    tampered = pl.read_parquet(project / "outputs/scores.parquet")
    shutil.rmtree(cache)
    run([*SCORE, "--out", "outputs/scores_fresh.parquet"], project)
    assert tampered.equals(pl.read_parquet(project / "outputs/scores_fresh.parquet"))


def counts(pattern: str, output: str) -> tuple[int, int]:
    """(computed, from the cache) from a stage's report line."""
    found = re.search(pattern, output)
    assert found, output
    return int(found[1]), int(found[2])


def test_frame_swapped_in_the_cache_is_detected_and_rendered_again(project: Path) -> None:
    """Another valid PNG copied over a cache entry is not taken as that frame."""
    run(RENDER, project)
    index = pl.read_parquet(project / "outputs/render/index.parquet")
    keys = index.unique("key", maintain_order=True)["key"].to_list()
    cache = project / ".otpc_cache/frames"
    victim, intruder = (cache / k[:2] / f"{k}.png" for k in keys[1:3])
    shutil.copyfile(intruder, victim)
    proc = run(RENDER, project)
    assert counts(r"(\d+) frame\(s\) rendered, (\d+) from the cache", proc.stdout)[0] == 1
    assert str(victim) in proc.stderr and "holds the frame of another key" in proc.stderr
    fresh = project / "fresh-render"
    shutil.rmtree(cache)
    run([*RENDER, "--out", str(fresh)], project)
    same_tree(project / "outputs/render", fresh)


def test_scores_are_reused_only_for_the_exact_frames(project: Path) -> None:
    """A path whose frame file changed is scored again; the others come from the cache."""
    run(RENDER, project)
    run(SCORE, project)
    index = pl.read_parquet(project / "outputs/render/index.parquet")
    paths = index.filter(pl.col("k") == 1).sort("path_id").rows(named=True)
    render = project / "outputs/render"
    victim = render / paths[0]["file"]
    # Another path's frame that differs (two methods may meet at a frame of a pair).
    intruder = next(
        render / row["file"]
        for row in paths
        if (render / row["file"]).read_bytes() != victim.read_bytes()
    )
    shutil.copyfile(intruder, victim)
    proc = run(SCORE, project)
    assert counts(r"(\d+) path\(s\) scored, (\d+) from the cache", proc.stdout) == (
        1,
        len(paths) - 1,
    )
    resumed = pl.read_parquet(project / "outputs/scores.parquet")
    shutil.rmtree(project / ".otpc_cache/scores")
    run([*SCORE, "--out", "outputs/scores_fresh.parquet"], project)
    assert resumed.equals(pl.read_parquet(project / "outputs/scores_fresh.parquet"))
    run(RENDER, project)  # the render folder as the stage writes it, for the other tests


def test_killed_embed_leaves_a_temporary_that_the_next_run_removes(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    """SIGKILL mid-embed leaves `.embeddings.<pid>.*.tmp`; the next run removes it."""
    project = make_project(
        tmp_path_factory.mktemp("embed-kill") / "study",
        {"data": {"source": "csv", "path": "many.csv", "n_per_group": 200, "bins": RATING_BINS}},
    )
    rows = [f"A photo of {i} red kites.,A drawing of {i} blue boats.,{i % 5}.5" for i in range(600)]
    (project / "many.csv").write_text("\n".join(["caption1,caption2,rating", *rows]) + "\n")
    run(["dvc", "repro", "sample"], project)
    outputs = project / "outputs"
    embed = ["python", "-m", "stages.embed"]
    rc = kill_when(embed, project, lambda: bool(list(outputs.glob(".embeddings.*.tmp"))))
    assert rc == -signal.SIGKILL
    assert list(outputs.glob(".embeddings.*.tmp")) and not (outputs / "embeddings").exists()
    run(embed, project)
    assert not list(outputs.glob(".*.tmp"))
    assert len(list((outputs / "embeddings").glob("*.safetensors"))) == 1200


def in_mount_namespace(setup: str, cmd: list[str], cwd: Path) -> subprocess.CompletedProcess:
    """Run ``cmd`` in a private mount namespace (``unshare -rm``) after the shell ``setup``."""
    if shutil.which("unshare") is None:
        pytest.skip("needs unshare (util-linux) to mount a read-only or full folder")
    return run(
        ["unshare", "-rm", "sh", "-c", f'{setup} && exec "$@"', "sh", *cmd], cwd, check=False
    )


def with_cache_dir(project: Path, folder: Path) -> list[str]:
    """Arguments for a stage reading params whose render.cache_dir is ``folder``."""
    params = yaml.safe_load((project / "params.yaml").read_text())
    params["render"]["cache_dir"] = str(folder)
    (project / "other.yaml").write_text(yaml.safe_dump(params))
    return ["--params", "other.yaml", "--out", "outputs/other-render"]


@pytest.mark.parametrize(
    "setup, message",
    [
        # read-only: refused by the preflight check, before any work
        (
            "mount --bind {folder} {folder} && mount -o remount,bind,ro {folder}",
            "render.cache_dir = '{folder}': cannot write to {folder}: Read-only file system",
        ),
        # full: found when a frame is written; the message names the file
        ("mount -t tmpfs -o size=48k tmpfs {folder}", "{folder}/"),
    ],
    ids=["read-only", "full"],
)
def test_unwritable_cache_stops_with_one_clear_line(
    project: Path, tmp_path: Path, setup: str, message: str
) -> None:
    folder = tmp_path / "cache"
    folder.mkdir()
    args = with_cache_dir(project, folder)
    proc = in_mount_namespace(setup.format(folder=folder), RENDER + args, project)
    assert proc.returncode == 1
    assert message.format(folder=folder) in proc.stderr, proc.stderr
    if "tmpfs" in setup:
        assert "No space left on device" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not (project / "outputs/other-render").exists()
