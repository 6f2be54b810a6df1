"""``otpc interpolate`` end to end with the offline tiny models (SD-1.x- and FLUX.1-shaped)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import ot
import pytest
from click.testing import CliRunner, Result
from PIL import Image

from otpc.cli import main
from otpc.embeddings import encode
from otpc.interpolation import MIN_SIZE
from otpc.models import ModelSpec, load_pipeline
from otpc.perceptual import load_lpips, path_length, step_distances

PROMPTS = ("a bowl of ripe peaches", "two cats asleep on a sofa")
METHODS = ("clip", "ot", "random")
FRAMES = 3
GAP = 2  # the white gap otpc.images puts between frames and rows


@pytest.fixture(scope="module", params=["tiny", "tiny-flux"])
def run(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory):
    """The command's result, its output folder and the model it ran."""
    out = tmp_path_factory.mktemp("interp") / "out"
    result = CliRunner().invoke(
        main,
        [
            "interpolate",
            *PROMPTS,
            "--model",
            request.param,
            "--methods",
            ",".join(METHODS),
            "--frames",
            str(FRAMES),
            "--steps",
            "2",
            "--batch-size",
            "4",
            "--out",
            str(out),
        ],
    )
    assert result.exit_code == 0, result.output
    return result, out, request.param


def printed(result: Result) -> dict[str, dict[str, float]]:
    """{method: {cost, ppl, ppl_norm, length, max_step}} from the command's report lines."""
    names = ("cost", "ppl", "ppl_norm", "length", "max_step")
    line = r"^\s*(\w+):" + "".join(rf"\s+{name} (\S+)" for name in names) + "$"
    return {
        m: dict(zip(names, map(float, values), strict=True))
        for m, *values in re.findall(line, result.stdout, re.M)
    }


def frames_of(strip_png: Path) -> np.ndarray:
    """Split a strip back into its frames (K, H, W, 3)."""
    image = np.asarray(Image.open(strip_png).convert("RGB"))
    h = image.shape[0]
    assert image.shape[1] == FRAMES * h + (FRAMES - 1) * GAP
    return np.stack([image[:, k * (h + GAP) : k * (h + GAP) + h] for k in range(FRAMES)])


def test_writes_a_strip_and_gif_per_method_and_a_comparison(run) -> None:
    _result, out, _model = run
    assert sorted(p.name for p in out.iterdir()) == sorted(
        [f"{m}.{ext}" for m in METHODS for ext in ("png", "gif")] + ["comparison.png"]
    )
    strips = {m: frames_of(out / f"{m}.png") for m in METHODS}
    h = strips["clip"].shape[1]
    comparison = np.asarray(Image.open(out / "comparison.png").convert("RGB"))
    assert comparison.shape[0] == len(METHODS) * h + (len(METHODS) - 1) * GAP
    margin = comparison.shape[1] - np.asarray(Image.open(out / "clip.png")).shape[1]
    assert margin > 0  # the row labels
    labels = []
    for i, m in enumerate(METHODS):
        row = comparison[i * (h + GAP) : i * (h + GAP) + h]
        strip_png = np.asarray(Image.open(out / f"{m}.png").convert("RGB"))
        np.testing.assert_array_equal(row[:, margin:], strip_png)
        assert (row[:, :margin] < 128).any()  # dark text on the white margin
        labels.append(row[:, :margin].tobytes())
        gif = Image.open(out / f"{m}.gif")
        assert gif.n_frames == 2 * FRAMES - 2  # forward, then back without repeating the ends
    assert len(set(labels)) == len(METHODS)  # each row says its own method
    # every path starts on A's image and (row invariance) ends on B's image
    for m in METHODS[1:]:
        np.testing.assert_array_equal(strips[m][0], strips["clip"][0])
        assert np.abs(strips[m][-1].astype(int) - strips["clip"][-1]).max() <= 1
    assert not np.array_equal(strips["random"][1], strips["clip"][1])  # the middles differ


def test_prints_cost_and_ppl_of_each_path(run) -> None:
    result, out, model = run
    report = printed(result)
    assert list(report) == list(METHODS)
    ea, eb = encode(load_pipeline(ModelSpec(model)), list(PROMPTS))
    a, b = ea.embeds.double().numpy(), eb.embeds.double().numpy()
    w = np.full(len(a), 1.0 / len(a))
    w2 = ot.emd2(w, w, ot.dist(a, b))
    assert report["ot"]["cost"] == pytest.approx(w2, abs=1e-4)
    assert report["clip"]["cost"] == pytest.approx(np.mean(np.sum((a - b) ** 2, axis=1)), abs=1e-4)
    # ot is optimal (it may be the identity, as clip is); a random matching costs more
    assert report["ot"]["cost"] <= report["clip"]["cost"] < report["random"]["cost"]
    metric = load_lpips("alex")
    for m in METHODS:
        expected = path_length(step_distances(metric, frames_of(out / f"{m}.png"), MIN_SIZE))
        for name in ("ppl", "length", "max_step"):
            assert report[m][name] == pytest.approx(getattr(expected, name), abs=2e-5)
        assert report[m]["ppl_norm"] == pytest.approx(expected.ppl_norm, rel=1e-3, abs=2e-5)
    assert "random weights" in result.stdout


def test_shows_a_rendering_progress_bar(run) -> None:
    result, _, _ = run
    frames = len(METHODS) * FRAMES
    assert f"render {frames} frames" in result.stderr
    assert "100%" in result.stderr and "step" in result.stderr


@pytest.mark.parametrize(
    "args, message",
    [
        (["", "a cat"], "PROMPT_A': prompt_a is an empty prompt"),
        (["a cat", "   "], "PROMPT_B': prompt_b is an empty prompt"),
        (["a cat", "\u200b\u2060\ufeff"], "PROMPT_B': prompt_b is an empty prompt"),
        (["a cat", "a dog", "--frames", "1"], "'--frames': 1 is not in the range 2<=x<=1000"),
        (["a cat", "a dog", "--methods", "clip,bogus"], "unknown method(s) 'bogus'"),
        (["a cat", "a dog", "--methods", ","], "no method given"),
    ],
)
def test_bad_arguments_name_the_problem(tmp_path: Path, args: list[str], message: str) -> None:
    result = CliRunner().invoke(main, ["interpolate", *args, "--out", str(tmp_path / "o")])
    assert result.exit_code == 2
    assert message in result.output
    assert not (tmp_path / "o").exists()


def quick(prompt_a: str, prompt_b: str, out: Path) -> list[str]:
    """Arguments of the quickest `otpc interpolate`: one method, two frames, one step."""
    return [
        "interpolate",
        prompt_a,
        prompt_b,
        "--methods",
        "clip",
        "--frames",
        "2",
        "--steps",
        "1",
        "--out",
        str(out),
    ]


def test_out_must_be_new_or_empty_unless_overwrite(tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    args = quick("a cat", "a dog", out)
    refused = CliRunner().invoke(main, args)
    assert refused.exit_code == 2
    assert "exists and is not empty; pass --overwrite" in refused.output
    assert [p.name for p in out.iterdir()] == ["notes.txt"]
    replaced = CliRunner().invoke(main, [*args, "--overwrite"])
    assert replaced.exit_code == 0, replaced.output
    assert sorted(p.name for p in out.iterdir()) == ["clip.gif", "clip.png", "comparison.png"]


def test_unwritable_out_is_refused_before_any_work(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    result = CliRunner().invoke(
        main,
        [
            "interpolate",
            "a cat",
            "a dog",
            "--model",
            "no/such-model",
            "--out",
            str(blocker / "out"),
        ],
    )
    assert result.exit_code == 2
    assert f"cannot write to {blocker / 'out'}" in result.output
    assert "no/such-model" not in result.output  # refused before the model is looked at


def test_a_very_long_prompt_prints_a_short_note(tmp_path: Path) -> None:
    """The pipeline would print every word a 10,000-character prompt loses to truncation."""
    proc = subprocess.run(
        [
            str(Path(sys.executable).parent / "otpc"),
            *quick("word " * 2000, "a cat", tmp_path / "o"),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "note: prompt truncated to the tokenizer's limit" in proc.stdout
    assert len(proc.stdout) + len(proc.stderr) < 2000, proc.stdout + proc.stderr
