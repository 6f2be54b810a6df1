"""Quality of the toy model: does it draw what captions say, and do its paths morph?

Accuracy. It renders one image per caption, from fixed noise seeds, with otpc's renderer
and the render settings of ``--params`` (steps, guidance; the dtype ``model.dtype: auto``
gives: float64 on a CPU), and reads the attributes back from the pixels with
``otpc.toy.detector``, on two sets:

- ``held-out``: ``--n`` captions of the world's held-out split (each has a held-out
  phrasing, a held-out colour-shape combination, or both: nothing training saw), also
  reported per kind of hold-out;
- ``demo end frames``: the two end frames of every pair of the demo's own study
  (``data.n_per_group`` pairs per score from ``data.seed``, each from its pair's noise seed,
  as the study renders them), in distribution; and ``path end frames``, the end frames of
  the morphing pairs below (more of the same kind).

For each attribute (shape, colour, size, background) and for all at once: the accuracy
with a 95% Wilson interval.

Morphing. For ``--pairs`` pairs per score (0-3 attributes shared; seed ``--seed + 1``, other
pairs than the demo's), it renders the row-wise path (the ``clip`` coupling, the study's
baseline) from A's caption to B's at K = 17 frames from the pair's noise; the K = 5 and
K = 9 paths are its every 4th and every 2nd frame (same t, same noise: the same images).
A pair counts if its two end frames differ visibly: the detector reads a different scene
from each. Per pair, the largest LPIPS step (alex, the study's enlargement to
``score.min_size``) at each K, and the ratio max-step(K = 17) / max-step(K = 5): a path that
switches within one step keeps it near 1, a path that changes evenly brings it to 1/4. It
reports the share of paths with a ratio of at most 0.6 (Wilson interval), the median
ratio, and the mean largest step at K = 5, 9 and 17.

It prints, and writes as JSON, all of these; and saves a grid of held-out samples and a few
K = 9 strips.

  python benchmarks/toy_quality.py                       # the shipped toy model
  python benchmarks/toy_quality.py --model DIR --record  # a retrained one; store in its record
"""

from __future__ import annotations

import argparse
import json
import math
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from otpc.couplings import couple
from otpc.embeddings import encode
from otpc.models import ModelSpec, load_pipeline
from otpc.pairs import pair_id_for
from otpc.params import load_params
from otpc.paths import conditioning_path, t_grid
from otpc.perceptual import load_lpips, step_distances
from otpc.render import FrameJob, Renderer
from otpc.seeds import latent_seed
from otpc.toy import world
from otpc.toy.detector import detect
from otpc.toy.pairs import ATTRIBUTES, scene_pairs
from otpc.toy.train import RECORD

KINDS = {
    "held-out phrasing": lambda s: s.template in world.HELD_OUT_TEMPLATES,
    "held-out combination": lambda s: (s.colour, s.shape) in world.HELD_OUT_COMBOS,
}
K = 17  # frames of the longest path; K = 5 and 9 are its sub-grids
RATIO = 0.6  # a path morphs if its largest step at K = 17 is at most this times that at K = 5


def wilson(hits: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """The Wilson score interval of a proportion ``hits / n``."""
    if n == 0:
        return (math.nan, math.nan)
    p = hits / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return (centre - half, centre + half)


def share(hits: int, n: int) -> dict[str, float]:
    low, high = wilson(hits, n)
    return {"accuracy": hits / n if n else math.nan, "low": low, "high": high, "n": n}


Row = tuple[world.Scene, Mapping[str, object]]  # a scene and what the detector read


def accuracy(rows: Sequence[Row]) -> dict[str, dict[str, float]]:
    """Per attribute (and ``all``): accuracy with its Wilson interval, and n."""
    out = {}
    for name in (*ATTRIBUTES, "all"):
        hits = sum(
            all(d[a] == getattr(s, a) for a in ATTRIBUTES)
            if name == "all"
            else d[name] == getattr(s, name)
            for s, d in rows
        )
        out[name] = share(hits, len(rows))
    return out


def grid(images: np.ndarray, captions: list[str], path: Path, title: str, n: int = 24) -> None:
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
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def strips(paths: list[np.ndarray], labels: list[str], path: Path) -> None:
    """One row per path (its frames side by side), labelled."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(paths), 1, figsize=(12, 1.6 * len(paths)))
    for ax, frames, label in zip(np.atleast_1d(axes), paths, labels, strict=True):
        ax.imshow(np.concatenate(list(frames), axis=1), interpolation="nearest")
        ax.set_title(label, fontsize=7)
        ax.axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def render_captions(
    renderer: Renderer, model, captions: list[str], seeds: list[int], batch: int
) -> np.ndarray:
    """One image per caption, each from its noise seed."""
    embeddings = encode(model, captions)
    images = []
    for i in tqdm(range(0, len(captions), batch), desc="captions", unit="batch"):
        jobs = [
            FrameJob(e.embeds, latent_seed=seed)
            for e, seed in zip(embeddings[i : i + batch], seeds[i : i + batch], strict=True)
        ]
        images.append(renderer.render(jobs))
    return np.concatenate(images)


def morphing(
    renderer: Renderer,
    model,
    pairs: list[tuple[world.Scene, world.Scene]],
    seed: int,
    min_size: int,
) -> tuple[dict[str, Any], list[Row], list[np.ndarray], list[str]]:
    """The morphing figures of the row-wise paths of ``pairs``, the end frames' detections,
    and a few K = 9 strips."""
    metric = load_lpips("alex")
    ts = t_grid(K)
    ends: list[Row] = []
    per_pair: list[dict[str, Any]] = []
    examples: list[np.ndarray] = []
    labels: list[str] = []
    for a, b in tqdm(pairs, desc="paths", unit="pair"):
        ca, cb = world.caption(a), world.caption(b)
        ea, eb = encode(model, [ca, cb])
        pid = pair_id_for(ca, cb)
        coupling = couple(ea.embeds.double(), eb.embeds.double(), "clip", seed=0)
        rows, _ = conditioning_path(ea.embeds, eb.embeds, coupling, ts)
        jobs = [FrameJob(r, latent_seed(seed, pid)) for r in rows]
        frames = renderer.render(jobs)
        da, db = detect(frames[0]), detect(frames[-1])
        ends += [(a, da), (b, db)]
        steps = {
            k: step_distances(metric, frames[:: (K - 1) // (k - 1)], min_size) for k in (5, 9, K)
        }
        per_pair.append(
            {
                "a": ca,
                "b": cb,
                "visible": da != db,
                **{f"max_step_{k}": float(s.max()) for k, s in steps.items()},
            }
        )
        if da != db and len(examples) < 8:
            examples.append(frames[::2])
            labels.append(f"{ca}  ->  {cb}")
    visible = [p for p in per_pair if p["visible"]]
    ratios = np.array([p[f"max_step_{K}"] / p["max_step_5"] for p in visible])
    hits = int((ratios <= RATIO).sum())
    report = {
        "pairs": len(per_pair),
        "visible": len(visible),
        f"share_ratio_at_most_{RATIO}": share(hits, len(visible)),
        "median_ratio": float(np.median(ratios)) if len(ratios) else math.nan,
        **{
            f"mean_max_step_{k}": float(np.mean([p[f"max_step_{k}"] for p in visible]))
            for k in (5, 9, K)
        },
        "per_pair": per_pair,
    }
    return report, ends, examples, labels


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="toy", help="model.name (default: the shipped toy)")
    parser.add_argument("--params", default="params.yaml", help="render settings from here")
    parser.add_argument("--n", type=int, default=300, help="held-out captions")
    parser.add_argument("--pairs", type=int, default=20, help="morphing pairs per score (0-3)")
    parser.add_argument("--seed", type=int, default=0, help="captions and noise seed")
    parser.add_argument("--out", default="benchmarks/toy_quality.json")
    parser.add_argument("--grid", default="benchmarks/toy_samples.png")
    parser.add_argument("--strips", default="benchmarks/toy_paths.png")
    parser.add_argument("--record", action="store_true", help=f"also store in the model's {RECORD}")
    args = parser.parse_args()

    params = load_params(args.params)
    render = params.render
    model = load_pipeline(ModelSpec(args.model))
    renderer = Renderer(model, render)
    start = time.perf_counter()
    batch = render.batch_size

    held = world.scenes(args.n, args.seed, "test")
    held_captions = [world.caption(s) for s in held]
    held_images = render_captions(
        renderer, model, held_captions, [args.seed * 1_000_003 + i for i in range(args.n)], batch
    )
    held_rows: list[Row] = [(s, detect(image)) for s, image in zip(held, held_images, strict=True)]

    demo = scene_pairs(params.data.n_per_group, params.data.seed)
    demo_scenes = [s for pair in demo for s in pair]
    demo_seeds = [
        latent_seed(render.seed, pair_id_for(world.caption(a), world.caption(b)))
        for a, b in demo
        for _ in (a, b)
    ]
    demo_images = render_captions(
        renderer, model, [world.caption(s) for s in demo_scenes], demo_seeds, batch
    )
    demo_rows: list[Row] = [
        (s, detect(image)) for s, image in zip(demo_scenes, demo_images, strict=True)
    ]

    morph, ends, examples, labels = morphing(
        renderer, model, scene_pairs(args.pairs, args.seed + 1), render.seed, params.score.min_size
    )
    report = {
        "model": args.model,
        "dtype": str(model.resolved.dtype).removeprefix("torch."),
        "steps": renderer.steps,
        "guidance": renderer.guidance,
        "captions": args.n,
        "seed": args.seed,
        "seconds": round(time.perf_counter() - start, 1),
        "held-out": accuracy(held_rows),
        **{kind: accuracy([r for r in held_rows if kept(r[0])]) for kind, kept in KINDS.items()},
        "demo end frames": accuracy(demo_rows),
        "path end frames": accuracy(ends),
        "morphing": morph,
    }
    Path(args.out).write_text(json.dumps(report, indent=2) + "\n")
    grid(
        held_images,
        held_captions,
        Path(args.grid),
        "toy model on held-out captions (trained toy model, not Stable Diffusion)",
    )
    if examples:
        strips(examples, labels, Path(args.strips))
    sets = ("held-out", *KINDS, "demo end frames", "path end frames")
    width = max(map(len, sets))
    print(f"{'':{width}}  " + "  ".join(f"{a:>10}" for a in (*ATTRIBUTES, "all")))
    for name in sets:
        cells = [f"{report[name][a]['accuracy']:>10.1%}" for a in (*ATTRIBUTES, "all")]
        print(f"{name:{width}}  " + "  ".join(cells) + f"   n={report[name]['all']['n']}")
    m = morph[f"share_ratio_at_most_{RATIO}"]
    print(
        f"morphing: {m['accuracy']:.0%} of {m['n']} visibly differing row-wise paths "
        f"(of {morph['pairs']}) have max step(K={K}) <= {RATIO} x max step(K=5) "
        f"[95% {m['low']:.0%}-{m['high']:.0%}]; median ratio {morph['median_ratio']:.2f}; "
        f"mean max LPIPS step K=5 {morph['mean_max_step_5']:.3f}, "
        f"K=9 {morph['mean_max_step_9']:.3f}, K={K} {morph[f'mean_max_step_{K}']:.3f}"
    )
    print(f"-> {args.out}, {args.grid}, {args.strips} ({report['seconds']} s)")
    if args.record:
        folder = Path(model.resolved.source)
        record = json.loads((folder / RECORD).read_text())
        record["quality"] = {k: v for k, v in report.items() if k != "model"} | {
            "morphing": {k: v for k, v in morph.items() if k != "per_pair"}
        }
        (folder / RECORD).write_text(json.dumps(record, indent=2) + "\n")


if __name__ == "__main__":
    torch.set_grad_enabled(False)
    main()
