"""The render benchmark runs end to end on the CPU with the tiny models (SD-1.x-, SD3- and
FLUX.1-shaped) and prints its ratios."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

NUMBER = r"([0-9]+(?:\.[0-9]+)?(?:e[-+]?[0-9]+)?)"


@pytest.mark.parametrize("arch", ["tiny", "tiny-sd3", "tiny-flux"])
def test_render_benchmark_prints_ratios(arch: str) -> None:
    proc = subprocess.run(
        [
            sys.executable,
            str(ROOT / "benchmarks" / "render.py"),
            "--arch",
            arch,
            "--device",
            "cpu",
            "--steps",
            "2",
            "--frames",
            "3",
            "--paths",
            "2",
            "--batch-size",
            "4",
            "--threads",
            "1",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = proc.stdout
    for label in (
        "(a) pipeline, 1 frame/call",
        "(b) pipeline, 3 frames/call",
        "(c) otpc Renderer, batch 4",
    ):
        seconds = re.search(re.escape(label) + rf": {NUMBER} s/image \(6 images", out)
        assert seconds and float(seconds.group(1)) > 0, (label, out)
    for ratio in ("(a)/(c)", "(b)/(c)"):
        found = re.search(rf"^ratio {re.escape(ratio)}: {NUMBER}$", out, re.MULTILINE)
        assert found and float(found.group(1)) > 0, (ratio, out)
    share = re.search(rf"\(c\) share of compute floor: {NUMBER}% \(denoiser\)", out)
    assert share and 0 < float(share.group(1)) < 100, out
    flops = re.search(rf"denoiser forward {NUMBER} GFLOP/sample, VAE decode {NUMBER} GFLOP", out)
    assert flops and float(flops.group(1)) > 0 and float(flops.group(2)) > 0, out
    # The three renderers agree on the pixels (fp32 CPU: up to rounding).
    for diff in re.findall(r"vs \(a\): max \|diff\| (\d+)", out):
        assert int(diff) <= 1, out
