"""Quality of the toy model: does it draw what captions say, and do its paths morph?

Three measures, all with otpc's renderer and the render settings of ``--params`` (steps,
guidance; the dtype ``model.dtype: auto`` gives: float64 on a CPU), attributes read back from
the pixels by ``otpc.toy.detector`` (exact on drawn scenes):

1. **Held-out captions**: one image per caption of the toy world's held-out split (a
   phrasing, a colour-shape combination, or both, that training never saw), from fixed noise
   seeds: per-attribute accuracy with 95% Wilson intervals, over all and per kind of
   hold-out; and a grid of the first images with their captions (``--grid``).
2. **The demo's end frames** (in distribution): the first and last frames of the demo's
   row-wise (``clip``) paths, from its outputs (``--demo``; run ``make repro`` first), read
   against their prompts.
3. **Morphing**: ``--pairs`` toy pairs per score (all four attributes counted), row-wise
   paths rendered at K = 17 frames with the pair's one noise seed; the pairs whose ends differ
   visibly (end LPIPS at least ``aggregate.min_end_lpips``) are kept. A path that morphs
   spreads its change over frames, so its largest LPIPS step shrinks as frames are added; a
   step function keeps it. Per path: ``ratio`` = largest step at K = 17 / largest step at
   K = 5 (every 4th frame of the same render). Reported: the share of paths with ratio <= 0.6
   (Wilson interval) and the median ratio; and a strip of the first paths (``--strips``).

  python benchmarks/toy_quality.py                       # the shipped toy model
  python benchmarks/toy_quality.py --model DIR --record  # a retrained one; store in its record

``--record`` stores the report in the model's record, beside its weights: not a file
``from_pretrained`` reads, so no frame, cache key or lock changes.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import numpy as np
import polars as pl
from tqdm.auto import tqdm

from otpc import png
from otpc.embeddings import encode
from otpc.models import LoadedModel, ModelSpec, load_pipeline, pick_device
from otpc.params import TOY_ATTRIBUTES, Params, load_params
from otpc.paths import interpolate, t_grid
from otpc.perceptual import load_lpips, pair_distances, step_distances
from otpc.render import FrameJob, Renderer
from otpc.study.layout import INDEX
from otpc.toy import world
from otpc.toy.detector import detect
from otpc.toy.pairs import scenes_by_caption, toy_pairs
from otpc.toy.train import RECORD

ATTRIBUTES = TOY_ATTRIBUTES
KINDS = {
    "held-out phrasing": lambda s: s.template in world.HELD_OUT_TEMPLATES,
    "held-out combination": lambda s: (s.colour, s.shape) in world.HELD_OUT_COMBOS,
}
FINE, COARSE = 17, 5  # frames of a morphing path, and of its every-4th-frame subsample
MORPHS = 0.6  # the largest step at FINE frames is at most this times that at COARSE


def wilson(hits: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """The Wilson score interval of a proportion ``hits / n``."""
    if n == 0:
        return (math.nan, math.nan)
    p = hits / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return (centre - half, centre + half)


def share(hits: int, n: int) -> dict[str, float]:
    """``hits / n`` with its Wilson interval, and n."""
    low, high = wilson(hits, n)
    return {"accuracy": hits / n if n else math.nan, "low": low, "high": high, "n": n}


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
        out[name] = share(hits, len(rows))
    return out


def render(renderer: Renderer, jobs: list[FrameJob], desc: str) -> np.ndarray:
    """The frames of ``jobs`` (N, H, W, 3) uint8, a batch at a time."""
    size = renderer.settings.batch_size
    batches = [
        renderer.render(jobs[i : i + size])
        for i in tqdm(range(0, len(jobs), size), desc=desc, unit="batch")
    ]
    return np.concatenate(batches)


def held_out(model: LoadedModel, renderer: Renderer, n: int, seed: int) -> tuple[dict, list]:
    """Section 1: accuracy on ``n`` held-out captions; with the images and captions."""
    scenes = world.scenes(n, seed, "test")
    captions = [world.caption(s) for s in scenes]
    jobs = [
        FrameJob(e.embeds, latent_seed=seed * 1_000_003 + i)
        for i, e in enumerate(encode(model, captions))
    ]
    pixels = render(renderer, jobs, "held-out captions")
    rows = [(s, detect(image)) for s, image in zip(scenes, pixels, strict=True)]
    report = {"all held-out": accuracy(rows)}
    report |= {kind: accuracy([r for r in rows if held(r[0])]) for kind, held in KINDS.items()}
    return report, [pixels, captions]


def demo_end_frames(outputs: Path) -> dict | None:
    """Section 2: accuracy on the end frames of the demo's ``clip`` paths (None if the demo
    has not been run)."""
    index_path, pairs_path = outputs / "render" / INDEX, outputs / "pairs.parquet"
    if not index_path.exists() or not pairs_path.exists():
        return None
    index = pl.read_parquet(index_path)
    pairs = pl.read_parquet(pairs_path)
    clip = index.filter(pl.col("path_id").str.ends_with("-clip-0"))
    said = scenes_by_caption()
    rows = []
    for pair in pairs.iter_rows(named=True):
        frames = clip.filter(pl.col("pair_id") == pair["pair_id"]).sort("k")
        if frames.is_empty() or not {pair["prompt_a"], pair["prompt_b"]} <= said.keys():
            continue  # not rendered, or not the toy world's captions (another source)
        for prompt, file in (
            (pair["prompt_a"], frames["file"][0]),
            (pair["prompt_b"], frames["file"][-1]),
        ):
            rows.append((said[prompt], detect(png.read(outputs / "render" / file))))
    return accuracy(rows)


def morphing(
    model: LoadedModel, renderer: Renderer, params: Params, per_score: int, seed: int
) -> tuple[dict, np.ndarray]:
    """Section 3: the largest-step ratio of row-wise paths; with the frames of every path
    (P, FINE, H, W, 3)."""
    pairs = toy_pairs(per_score, seed)
    a = encode(model, pairs["prompt_a"].to_list())
    b = encode(model, pairs["prompt_b"].to_list())
    ts = t_grid(FINE)
    jobs = [
        FrameJob(rows.float(), latent_seed=seed * 1_000_003 + p)
        for p, (ea, eb) in enumerate(zip(a, b, strict=True))
        for rows in interpolate(ea.embeds.double(), eb.embeds.double(), ts)
    ]
    frames = render(renderer, jobs, "morphing paths")
    frames = frames.reshape(len(pairs), FINE, *frames.shape[1:])
    metric = load_lpips(params.score.net, pick_device("cpu"), params.score.backbone)
    size = params.score.min_size
    ends = pair_distances(metric, frames[:, 0], frames[:, -1], size)
    visible = ends >= params.aggregate.min_end_lpips
    ratios = []
    for path in tqdm(frames[visible], desc="LPIPS steps", unit="path"):
        fine = step_distances(metric, path, size).max()
        coarse = step_distances(metric, path[:: (FINE - 1) // (COARSE - 1)], size).max()
        ratios.append(fine / coarse)
    r = np.array(ratios)
    if not len(r):
        raise SystemExit(f"no pair of {len(pairs)} has ends that differ visibly")
    report = {
        "pairs": len(pairs),
        "visible": int(visible.sum()),
        "min_end_lpips": params.aggregate.min_end_lpips,
        "morphing": share(int((r <= MORPHS).sum()), len(r)),
        "median_ratio": float(np.median(r)),
        "ratio_quartiles": [float(q) for q in np.quantile(r, [0.25, 0.75])],
    }
    return report, frames[visible]


def figure(images: np.ndarray, titles: list[str], path: Path, cols: int, title: str) -> None:
    """``images`` in a grid of ``cols`` columns, each with its title (may be empty)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = math.ceil(len(images) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(cols * 1.1, rows * 1.3), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, image, text in zip(axes.flat, images, titles, strict=False):
        ax.imshow(image, interpolation="nearest")
        ax.set_title(text, fontsize=5)
    fig.suptitle(title, fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def caption_grid(pixels: np.ndarray, captions: list[str], path: Path, n: int = 24) -> None:
    """The first ``n`` held-out images with their captions, 6 per row."""
    titles = [
        "\n".join(" ".join(c.split()[i : i + 4]) for i in range(0, len(c.split()), 4))
        for c in captions[:n]
    ]
    model = "trained toy model, not Stable Diffusion"
    figure(pixels[:n], titles, path, 6, f"toy model on held-out captions ({model})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="toy", help="model.name (default: the shipped toy)")
    parser.add_argument("--params", default="params.yaml", help="render and LPIPS settings")
    parser.add_argument("--n", type=int, default=300, help="held-out captions")
    parser.add_argument("--pairs", type=int, default=20, help="morphing pairs per score")
    parser.add_argument("--seed", type=int, default=0, help="captions, pairs and noise seed")
    parser.add_argument("--demo", default="outputs", help="the demo's outputs folder")
    parser.add_argument("--out", default="benchmarks/toy_quality.json")
    parser.add_argument("--grid", default="benchmarks/toy_samples.png")
    parser.add_argument("--strips", default="benchmarks/toy_paths.png")
    parser.add_argument("--record", action="store_true", help=f"also store in the model's {RECORD}")
    args = parser.parse_args()

    params = load_params(args.params)
    model = load_pipeline(ModelSpec(args.model))
    renderer = Renderer(model, params.render)
    start = time.perf_counter()
    quality, (pixels, captions) = held_out(model, renderer, args.n, args.seed)
    demo = demo_end_frames(Path(args.demo))
    morph, paths = morphing(model, renderer, params, args.pairs, args.seed)
    report = {
        "model": args.model,
        "dtype": str(model.resolved.dtype).removeprefix("torch."),
        "steps": renderer.steps,
        "guidance": renderer.guidance,
        "captions": args.n,
        "seed": args.seed,
        "seconds": round(time.perf_counter() - start, 1),
        **quality,
        "demo end frames": demo,
        "morphing": morph,
    }
    Path(args.out).write_text(json.dumps(report, indent=2) + "\n")
    caption_grid(pixels, captions, Path(args.grid))
    shown = paths[:8]
    figure(
        shown.reshape(-1, *shown.shape[2:]),
        [f"k={k}" if p == 0 else "" for p in range(len(shown)) for k in range(FINE)],
        Path(args.strips),
        FINE,
        f"row-wise paths at K = {FINE} (trained toy model, not Stable Diffusion)",
    )
    tables = [(kind, report[kind]) for kind in ("all held-out", *KINDS)]
    if demo is not None:
        tables.append(("demo end frames", demo))
    width = max(len(kind) for kind, _ in tables)
    print(f"{'':{width}}  " + "  ".join(f"{a:>10}" for a in (*ATTRIBUTES, "all")))
    for kind, table in tables:
        cells = [f"{table[a]['accuracy']:>10.1%}" for a in (*ATTRIBUTES, "all")]
        print(f"{kind:{width}}  " + "  ".join(cells) + f"   n={table['all']['n']}")
    if demo is None:
        print(f"(no demo outputs in {args.demo}: run `make repro` for the in-distribution row)")
    m = morph["morphing"]
    print(
        f"morphing: {m['accuracy']:.0%} of {m['n']} visible row-wise paths "
        f"[{m['low']:.0%}-{m['high']:.0%}] have a largest step at K = {FINE} at most "
        f"{MORPHS} x that at K = {COARSE}; median ratio {morph['median_ratio']:.2f}"
    )
    print(f"-> {args.out}, {args.grid}, {args.strips} ({report['seconds']} s)")
    if args.record:
        folder = Path(model.resolved.source)
        record = json.loads((folder / RECORD).read_text())
        record["quality"] = {k: v for k, v in report.items() if k != "model"}
        (folder / RECORD).write_text(json.dumps(record, indent=2) + "\n")


if __name__ == "__main__":
    sys.exit(main())
