"""JSON records that carry a digest of their own content: the score cache's entries and the
stages' time records, numbers otpc computed and reads back later.

A record is written with the sha256 of its content and used only if the digest still
matches and the content names what the reader asked for (its cache key, its stage): an
edited, truncated or damaged file, or another valid record copied over it, is an error
naming the file, never a wrong number. The digest guards against accidents (a disk error, a
bad sync, a hand edit), not against someone who recomputes it.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from otpc.atomic import nan_to_none, write_json
from otpc.errors import InputError
from otpc.text import shorten

DIGEST = "digest"  # the record's key for the digest of the rest


def content_digest(content: Mapping[str, Any]) -> str:
    """sha256 of ``content`` as canonical JSON (keys sorted; NaN as null, as it is written)."""
    text = json.dumps(nan_to_none(dict(content)), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


def write_sealed(path: Path, content: Mapping[str, Any]) -> None:
    """Write ``content`` and its digest as a JSON record, atomically."""
    write_json(path, {**content, DIGEST: content_digest(content)})


def read_sealed(path: Path, names: Mapping[str, Any]) -> dict[str, Any]:
    """The content of the record at ``path``, verified: its digest matches and it holds
    ``names`` (what it was computed from, e.g. its cache key). ``FileNotFoundError`` if
    absent; ``InputError`` naming the file if it is unreadable, altered or another's."""
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise InputError(f"{path}: not a readable record ({err})") from None
    if not isinstance(record, dict) or DIGEST not in record:
        raise InputError(f"{path}: no digest recorded")
    recorded = record.pop(DIGEST)
    if recorded != content_digest(record):
        raise InputError(f"{path}: its content does not match the digest recorded with it")
    for name, value in names.items():
        if record.get(name) != value:
            found = shorten(repr(record.get(name)))
            raise InputError(f"{path}: holds the record of another {name} ({found})")
    return record
