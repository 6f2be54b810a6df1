"""Benchmark: couple many pairs of random point clouds with ``otpc.couplings.couple_many``.

    python benchmarks/couple.py --pairs 10000 --workers 2

The clouds (standard normal, float32 like stored prompt embeddings, seeded) are drawn in
blocks outside the timed region; only ``couple_many`` is timed, float32 -> float64
conversion, cost matrices and ``ot.emd`` included. A few pairs are re-coupled one at a
time with ``couple`` to check the batched results.
"""

from __future__ import annotations

import os
import time

import click
import numpy as np
import torch

from otpc.couplings import METHODS, couple, couple_many


def clouds(seed: int, block: int, count: int, n: int, d: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Block ``block`` of the benchmark's pairs: A and B, each (count, n, d) float32."""
    gen = torch.Generator().manual_seed(seed * 1_000_003 + block)
    return torch.randn(count, n, d, generator=gen), torch.randn(count, n, d, generator=gen)


def count(name: str, default: int, help: str = "", minimum: int = 1, dest: str = ""):
    """A whole-number option of at least ``minimum``."""
    args = (name, dest) if dest else (name,)
    return click.option(
        *args, default=default, show_default=True, type=click.IntRange(min=minimum), help=help
    )


@click.command()
@count("--pairs", 10_000)
@count("--n", 77, "Points per cloud.", dest="points")
@count("--dim", 768)
@click.option("--method", default="ot", show_default=True, type=click.Choice(sorted(METHODS)))
@count("--workers", os.cpu_count() or 1, "Threads for couple_many.")
@count("--chunk-size", 8)
@count("--block", 1000, "Pairs drawn and coupled per call (bounds memory).")
@count("--check", 3, "Pairs re-coupled one by one with `couple` to compare.", minimum=0)
@click.option("--seed", default=0, show_default=True, type=int)
def main(
    pairs: int,
    points: int,
    dim: int,
    method: str,
    workers: int,
    chunk_size: int,
    block: int,
    check: int,
    seed: int,
) -> None:
    """Time couple_many on PAIRS random pairs of clouds (n x dim)."""
    coupling_s = drawing_s = cpu_s = 0.0
    costs: list[float] = []
    for index, start in enumerate(range(0, pairs, block)):
        t0 = time.perf_counter()
        a, b = clouds(seed, index, min(block, pairs - start), points, dim)
        t1, c1 = time.perf_counter(), time.process_time()
        result = couple_many(
            a, b, method, seeds=range(start, start + len(a)), workers=workers, chunk_size=chunk_size
        )
        t2, c2 = time.perf_counter(), time.process_time()
        drawing_s += t1 - t0
        coupling_s += t2 - t1
        cpu_s += c2 - c1
        costs += [c.cost for c in result]
        if index == 0:
            for p in range(min(check, len(a))):
                single = couple(a[p].double(), b[p].double(), method, seed=start + p)
                if not (
                    np.array_equal(single.permutation, result[p].permutation)
                    and np.isclose(single.cost, result[p].cost, rtol=1e-9)
                ):
                    raise click.ClickException(f"pair {p}: couple_many disagrees with couple")
    click.echo(
        f"method {method}, {pairs} pairs of {points} x {dim} clouds, {workers} worker(s), "
        f"chunk {chunk_size}"
    )
    click.echo(
        f"coupling: {coupling_s:.2f} s total, {pairs / coupling_s:.0f} pairs/s, "
        f"{1e3 * coupling_s / pairs:.3f} ms/pair"
    )
    click.echo(
        f"CPU time of the coupling, all threads: {cpu_s:.2f} s ({1e3 * cpu_s / pairs:.3f} ms/pair);"
        f" load average now {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores"
    )
    click.echo(f"drawing the clouds (not timed above): {drawing_s:.2f} s")
    click.echo(
        f"mean cost {np.mean(costs):.4f}; checked {min(check, pairs, block)} pair(s) "
        "against couple()"
    )


if __name__ == "__main__":
    main()
