"""Atomic writes leave nothing half-written, and what killed writers left is cleaned up."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from otpc.atomic import atomic_dir, write_text, write_with


def dead_pid() -> int:
    """A process id that no process can have: above the kernel's largest."""
    return int(Path("/proc/sys/kernel/pid_max").read_text()) + 1


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
    longer = tmp_path / f".table.parquet.v2.{dead}.x5.tmp"  # of `table.parquet.v2`, not ours
    longer.write_text("x")

    write_text(tmp_path / "table.parquet", "done")
    with atomic_dir(tmp_path / "render") as tmp:
        (tmp / "index").write_text("i")

    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        [live.name, other.name, longer.name, "render", "table.parquet"]
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


def test_a_writer_that_fails_midway_leaves_nothing_and_names_the_file(tmp_path: Path) -> None:
    target = tmp_path / "frame.png"

    def half_then_full(tmp: Path) -> None:
        tmp.write_bytes(b"\x89PNG half of it")
        raise OSError(28, "No space left on device")  # as a full disk does, naming no file

    with pytest.raises(OSError, match="No space left") as raised:
        write_with(target, half_then_full)
    assert raised.value.filename == str(target)
    assert list(tmp_path.iterdir()) == []
