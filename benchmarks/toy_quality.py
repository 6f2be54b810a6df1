"""Quality of the toy model: does it draw what held-out captions say?

It renders one image per caption of the toy world's held-out split (each caption has a
held-out phrasing, a held-out colour-shape combination, or both: nothing training saw),
from fixed noise seeds, with otpc's renderer and the render settings of ``--params``
(steps, guidance; the dtype ``model.dtype: auto`` gives: float64 on a CPU), and reads the
attributes back from the pixels with ``otpc.toy.detector``. It prints, and writes as JSON,
the accuracy of each attribute (shape, colour, size, position, background) with a 95%
Wilson interval, and the share of images with every attribute right, over all captions and
for each kind of hold-out; and saves a grid of the first images with their captions.

  python benchmarks/toy_quality.py                       # the shipped toy model, 300 captions
  python benchmarks/toy_quality.py --model DIR --record  # a retrained one; store in its record
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from otpc.embeddings import encode
from otpc.models import ModelSpec, load_pipeline
from otpc.params import load_params
from otpc.render import FrameJob, Renderer
from otpc.toy import world
from otpc.toy.detector import detect
from otpc.toy.train import RECORD

ATTRIBUTES = ("shape", "colour", "size", "position", "background")
KINDS = {
    "held-out phrasing": lambda s: s.template in world.HELD_OUT_TEMPLATES,
    "held-out combination": lambda s: (s.colour, s.shape) in world.HELD_OUT_COMBOS,
    # the other captions leave the background to the model: any is right by the words
    "background in the caption": lambda s: "{background}" in world.TEMPLATES[s.template],
}


def wilson(hits: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """The Wilson score interval of a proportion ``hits / n``."""
    if n == 0:
        return (math.nan, math.nan)
    p = hits / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return (centre - half, centre + half)


def accuracy(rows: list[tuple[world.Scene, dict]]) -> dict[str, dict[str, float]]:
    """Per attribute (and ``all``): accuracy with its Wilson interval, and n."""
    out = {}
    for name in (*ATTRIBUTES, "all"):
        hits = sum(
            all(d[a] == getattr(s, a) for a in ATTRIBUTES)
            if name == "all"
            else d[name] == getattr(s, name)
            for s, d in rows
        )
        low, high = wilson(hits, len(rows))
        out[name] = {"accuracy": hits / len(rows), "low": low, "high": high, "n": len(rows)}
    return out


def grid(images: np.ndarray, captions: list[str], path: Path, n: int = 24) -> None:
    """The first ``n`` images with their captions, 6 per row."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cols = 6
    rows = math.ceil(min(n, len(images)) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(cols * 2.2, rows * 2.6))
    for ax in axes.flat:
        ax.axis("off")
    for ax, image, text in zip(axes.flat, images[:n], captions[:n], strict=False):
        ax.imshow(image, interpolation="nearest")
        words = text.split()
        ax.set_title(
            "\n".join(" ".join(words[i : i + 4]) for i in range(0, len(words), 4)), fontsize=7
        )
    fig.suptitle("toy model on held-out captions (trained toy model, not Stable Diffusion)")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="toy", help="model.name (default: the shipped toy)")
    parser.add_argument("--params", default="params.yaml", help="render settings from here")
    parser.add_argument("--n", type=int, default=300, help="held-out captions")
    parser.add_argument("--seed", type=int, default=0, help="captions and noise seed")
    parser.add_argument("--out", default="benchmarks/toy_quality.json")
    parser.add_argument("--grid", default="benchmarks/toy_samples.png")
    parser.add_argument("--record", action="store_true", help=f"also store in the model's {RECORD}")
    args = parser.parse_args()

    render = load_params(args.params).render
    model = load_pipeline(ModelSpec(args.model))
    renderer = Renderer(model, render)
    scenes = world.scenes(args.n, args.seed, "test")
    captions = [world.caption(s) for s in scenes]
    start = time.perf_counter()
    embeddings = encode(model, captions)
    images = []
    for i in tqdm(range(0, args.n, render.batch_size), desc="toy quality", unit="batch"):
        jobs = [
            FrameJob(e.embeds, latent_seed=args.seed * 1_000_003 + i + j)
            for j, e in enumerate(embeddings[i : i + render.batch_size])
        ]
        images.append(renderer.render(jobs))
    pixels = np.concatenate(images)
    rows = [(s, detect(image)) for s, image in zip(scenes, pixels, strict=True)]
    report = {
        "model": args.model,
        "dtype": str(model.resolved.dtype).removeprefix("torch."),
        "steps": renderer.steps,
        "guidance": renderer.guidance,
        "captions": args.n,
        "seed": args.seed,
        "seconds": round(time.perf_counter() - start, 1),
        "all held-out": accuracy(rows),
        **{kind: accuracy([r for r in rows if held(r[0])]) for kind, held in KINDS.items()},
    }
    Path(args.out).write_text(json.dumps(report, indent=2) + "\n")
    grid(pixels, captions, Path(args.grid))
    width = max(map(len, KINDS))
    print(f"{'':{width}}  " + "  ".join(f"{a:>10}" for a in (*ATTRIBUTES, "all")))
    for kind in ("all held-out", *KINDS):
        cells = [f"{report[kind][a]['accuracy']:>10.1%}" for a in (*ATTRIBUTES, "all")]
        print(f"{kind:{width}}  " + "  ".join(cells) + f"   n={report[kind]['all']['n']}")
    print(f"-> {args.out}, {args.grid} ({report['seconds']} s)")
    if args.record:
        folder = Path(model.resolved.source)
        record = json.loads((folder / RECORD).read_text())
        record["quality"] = {k: v for k, v in report.items() if k != "model"}
        (folder / RECORD).write_text(json.dumps(record, indent=2) + "\n")


if __name__ == "__main__":
    sys.exit(main())
