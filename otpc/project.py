"""Where state lives: the project's (tracking store, caches) and otpc's own (tiny models,
downloaded data).

``dvc exp run --temp`` / ``--queue`` run stages in a temporary copy of the repository but set
``DVC_ROOT`` to the original one, so runs from anywhere share one store and one cache.
"""

from __future__ import annotations

import os
from pathlib import Path


def project_root() -> Path:
    """The original repository root: ``DVC_ROOT`` when DVC runs us, else the current folder."""
    return Path(os.environ.get("DVC_ROOT") or os.getcwd()).resolve()


def otpc_home() -> Path:
    """otpc's own cache folder (tiny models, downloaded data): ``$OTPC_HOME`` or
    ``~/.cache/otpc``."""
    return Path(os.environ.get("OTPC_HOME", Path.home() / ".cache" / "otpc"))


def shared_path(relative: str) -> Path:
    """``relative`` under the project root (absolute paths are kept)."""
    path = Path(relative)
    return path if path.is_absolute() else project_root() / path
