"""Records of computed numbers carry a digest of their content: the stages' time records,
edited, truncated or swapped for real, are reported once and removed, never logged wrong."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from otpc.timings import RECORDS, record, records, timing_metrics


def test_altered_stage_records_are_reported_removed_and_not_logged(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("DVC_ROOT", raising=False)
    stages = ["sample", "embed", "couple", "render", "score"]
    for i, stage in enumerate(stages):
        record(stage, 1.0 + i, {"paths": 10.0 * (i + 1)})
    clean = timing_metrics(records())
    folder = tmp_path / RECORDS
    edited, truncated, first, second = (folder / f"{s}.json" for s in stages[:4])
    doc = json.loads(edited.read_text())
    doc["seconds"] *= 3
    edited.write_text(json.dumps(doc))
    truncated.write_text(truncated.read_text()[:30])
    contents = first.read_text(), second.read_text()
    first.write_text(contents[1])
    second.write_text(contents[0])

    with caplog.at_level(logging.WARNING, logger="otpc.timings"):
        found = records()
    assert list(found) == ["score"]
    assert timing_metrics(found) == {
        k: v for k, v in clean.items() if k.startswith(("time/score", "score/"))
    }
    for path in (edited, truncated, first, second):
        assert caplog.text.count(f"{path}:") == 1, caplog.text
        assert not path.exists()
    assert records() == found
