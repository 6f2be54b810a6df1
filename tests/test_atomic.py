"""Atomic writes leave nothing half-written, and what killed writers left is cleaned up."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from otpc.atomic import atomic_dir, write_text


def dead_pid() -> int:
    """The id of a process that has exited."""
    proc = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        capture_output=True,
        text=True,
        check=True,
    )
    return int(proc.stdout)


def test_temporaries_of_dead_writers_are_removed_by_the_next_write(tmp_path: Path) -> None:
    dead, alive = dead_pid(), os.getpid()
    stale_file = tmp_path / f".table.parquet.{dead}.x1.tmp"
    stale_file.write_text("half")
    stale_dir = tmp_path / f".render.{dead}.x2.tmp"
    (stale_dir / "frames").mkdir(parents=True)
    live = tmp_path / f".table.parquet.{alive}.x3.tmp"  # a writer still at work: kept
    live.write_text("busy")
    other = tmp_path / f".other.{dead}.x4.tmp"  # another file's temporary: not ours to remove
    other.write_text("x")

    write_text(tmp_path / "table.parquet", "done")
    with atomic_dir(tmp_path / "render") as tmp:
        (tmp / "index").write_text("i")

    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        [live.name, other.name, "render", "table.parquet"]
    )


def test_a_failing_writer_leaves_the_old_content(tmp_path: Path) -> None:
    target = tmp_path / "out"
    with atomic_dir(target) as tmp:
        (tmp / "a").write_text("old")
    with pytest.raises(RuntimeError), atomic_dir(target) as tmp:
        (tmp / "a").write_text("new")
        raise RuntimeError("killed")
    assert (target / "a").read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]
