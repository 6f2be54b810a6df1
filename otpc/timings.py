"""Where a study's time went: each stage's wall time and counts, kept for the log stage.

A stage that finishes writes ``.otpc_cache/stages/<stage>.json`` under the project root
(``{"stage": ..., "seconds": ..., "finished": ..., "counts": {...}}``, with a digest of it:
``otpc.sealed``). It is not a DVC output: times differ from run to run, and a stage's outputs
must not. The log stage records the latest record of every stage in the study's MLflow run
(metrics ``time/<stage>_s``, ``<stage>/<count>``); a stage that DVC skipped (its outputs were
up to date or restored) keeps the record of its last execution in this project, and says
when that was. A record that was edited, damaged or copied from another stage's is
reported and removed, not logged.
"""

from __future__ import annotations

import contextlib
import logging
from datetime import UTC, datetime
from typing import NamedTuple

from otpc.errors import InputError
from otpc.project import shared_path
from otpc.sealed import read_sealed, write_sealed

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
        write_sealed(
            path,
            {
                "stage": stage,
                "seconds": round(seconds, 3),
                "finished": datetime.now(UTC).isoformat(timespec="seconds"),
                "counts": counts | {k: round(v, 3) for k, v in rates.items()},
            },
        )
    except OSError as err:
        log.warning("could not record the stage's time in %s: %s", path, err.strerror or err)


def records() -> dict[str, dict]:
    """The latest record of each stage that has one, by stage name. A record that fails its
    checks is reported and removed: its stage has none until it runs again."""
    found = {}
    for path in sorted(shared_path(RECORDS).glob("*.json")):
        try:
            found[path.stem] = read_sealed(path, {"stage": path.stem})
        except InputError as err:
            log.warning("bad stage record, not logged: %s", err)
            with contextlib.suppress(OSError):  # a read-only project still logs the rest
                path.unlink(missing_ok=True)
    return found


def timing_metrics(found: dict[str, dict]) -> dict[str, float]:
    """``records()`` as MLflow metrics: ``time/<stage>_s`` and ``<stage>/<count>``."""
    out: dict[str, float] = {}
    for stage, rec in found.items():
        out[f"time/{stage}_s"] = float(rec["seconds"])
        out |= {f"{stage}/{k}": float(v) for k, v in rec["counts"].items()}
    return out
