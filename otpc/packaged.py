"""Files shipped inside installed packages (weights, vocabularies), located without importing
the package (it may be installed without its dependencies), and checked by their sha256."""

from __future__ import annotations

import hashlib
import importlib.util
from pathlib import Path


def package_file(package: str, relative: str) -> Path | None:
    """``relative`` inside the installed ``package``; None if either is missing."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(next(iter(spec.submodule_search_locations))) / relative
    return path if path.is_file() else None


def sha256(data: bytes) -> str:
    """The sha256 of ``data`` in hex."""
    return hashlib.sha256(data).hexdigest()
