"""Where a study's time went: each stage's wall time and counts, kept for the log stage.

A stage that finishes writes ``.otpc_cache/stages/<stage>.json`` under the project root
(``{"seconds": ..., "finished": ..., "counts": {...}}``). It is not a DVC output: times differ
from run to run, and a stage's outputs must not. The log stage records the latest record of
every stage in the study's MLflow run (metrics ``time/<stage>_s``, ``<stage>/<count>``); a
stage that DVC skipped (its outputs were up to date or restored) keeps the record of its
last execution in this project, and says when that was.
"""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime
from typing import NamedTuple

from otpc.atomic import write_json
from otpc.project import shared_path

RECORDS = ".otpc_cache/stages"
log = logging.getLogger(__name__)


class Report(NamedTuple):
    """What a stage did: one line for the user (without the stage's name and time) and the
    counts to record (e.g. frames rendered and reused)."""

    line: str
    counts: dict[str, float]


def record(stage: str, seconds: float, counts: dict[str, float]) -> None:
    """Keep ``stage``'s time and counts, plus throughput (``<count>_per_s``) for its counts.
    A record that cannot be written (a read-only project) is skipped with a warning: the
    stage's outputs are written already, and they are what matters."""
    rates = {f"{k}_per_s": v / seconds for k, v in counts.items() if seconds > 0 and v > 0}
    path = shared_path(RECORDS) / f"{stage}.json"
    try:
        write_json(
            path,
            {
                "seconds": round(seconds, 3),
                "finished": datetime.now(UTC).isoformat(timespec="seconds"),
                "counts": counts | {k: round(v, 3) for k, v in rates.items()},
            },
        )
    except OSError as err:
        log.warning("could not record the stage's time in %s: %s", path, err.strerror or err)


def records() -> dict[str, dict]:
    """The latest record of each stage that has one, by stage name."""
    folder = shared_path(RECORDS)
    if not folder.is_dir():
        return {}
    return {p.stem: json.loads(p.read_text()) for p in sorted(folder.glob("*.json"))}


def timing_metrics(found: dict[str, dict]) -> dict[str, float]:
    """``records()`` as MLflow metrics: ``time/<stage>_s`` and ``<stage>/<count>``."""
    out: dict[str, float] = {}
    for stage, rec in found.items():
        out[f"time/{stage}_s"] = float(rec["seconds"])
        out |= {f"{stage}/{k}": float(v) for k, v in rec["counts"].items()}
    return out
