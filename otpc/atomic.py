"""Atomic file writes: write to a temporary sibling, fsync, then rename into place.

A reader never sees a half-written file: either the old content, the new content, or
nothing. Every file otpc writes goes through here. Temporary names carry the writer's
process id (``.<name>.<pid>.<random>.tmp``); those of writers that are gone (killed) are
removed by the next write of the same name.
"""

from __future__ import annotations

import contextlib
import glob
import json
import os
import re
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

FILE_MODE, DIR_MODE = 0o644, 0o755


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def temporary_prefix(target: Path) -> str:
    """The prefix of ``target``'s temporary names for this process (``.<name>.<pid>.``; the
    random rest and ``.tmp`` follow), after removing the temporaries of ``target`` whose
    writers are gone."""
    own = re.compile(rf"\.{re.escape(target.name)}\.(\d+)\.[^.]+\.tmp")
    for stale in target.parent.glob(f".{glob.escape(target.name)}.*.tmp"):
        match = own.fullmatch(stale.name)
        if match and not _alive(int(match[1])):
            if stale.is_dir():
                shutil.rmtree(stale, ignore_errors=True)
            else:
                stale.unlink(missing_ok=True)
    return f".{target.name}.{os.getpid()}."


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; on success rename it onto ``path``.

    On any exception the temporary file is removed and ``path`` is left untouched; a
    file-system error that names no file (a full disk) is raised naming ``path``.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=temporary_prefix(target), suffix=".tmp", dir=target.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        with open(tmp_path, "rb+") as fh:
            os.fsync(fh.fileno())
        os.chmod(tmp_path, FILE_MODE)  # mkstemp creates 0600
        os.replace(tmp_path, target)
    except OSError as err:
        tmp_path.unlink(missing_ok=True)
        if err.errno is not None and err.filename is None:
            raise OSError(err.errno, err.strerror, str(target)) from err
        raise
    except BaseException:
        tmp_path.unlink(missing_ok=True)
        raise


def write_bytes(path: str | os.PathLike[str], data: bytes) -> None:
    """Atomically write ``data`` to ``path``."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def write_text(path: str | os.PathLike[str], text: str) -> None:
    """Atomically write ``text`` (UTF-8) to ``path``."""
    write_bytes(path, text.encode("utf-8"))


def write_json(path: str | os.PathLike[str], obj: Any, sort_keys: bool = True) -> None:
    """Atomically write ``obj`` as indented JSON (NaN becomes null), keys sorted unless
    ``sort_keys`` is false (then in ``obj``'s order)."""
    write_text(path, json.dumps(nan_to_none(obj), indent=2, sort_keys=sort_keys) + "\n")


def write_with(path: str | os.PathLike[str], writer: Callable[[Path], None]) -> None:
    """Atomically write ``path`` with ``writer(tmp_path)`` (for library writers)."""
    with atomic_path(path) as tmp:
        writer(tmp)


def nan_to_none(obj: Any) -> Any:
    """``obj`` with every NaN float (in dicts and lists, at any depth) as None."""
    if isinstance(obj, float) and obj != obj:
        return None
    if isinstance(obj, dict):
        return {k: nan_to_none(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [nan_to_none(v) for v in obj]
    return obj


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary folder next to ``path``; on success it replaces ``path`` whole."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=temporary_prefix(target), suffix=".tmp", dir=target.parent))
    try:
        yield tmp
        os.chmod(tmp, DIR_MODE)  # mkdtemp creates 0700
        old = target.with_name(f".{target.name}.old")
        shutil.rmtree(old, ignore_errors=True)
        if target.exists():
            os.replace(target, old)
        os.replace(tmp, target)
        shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
