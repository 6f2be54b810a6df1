"""DVC stage 6: statistics, figures and the summary."""

from pathlib import Path

import click

from otpc.commands import params_option, stage
from otpc.params import Params
from otpc.study import layout
from otpc.study.aggregate import aggregate
from otpc.timings import Report


@click.command()
@params_option
@click.option("--scores", type=click.Path(path_type=Path), default=layout.SCORES)
@click.option("--pairs", type=click.Path(path_type=Path), default=layout.PAIRS)
@click.option("--couplings", type=click.Path(path_type=Path), default=layout.COUPLINGS)
@click.option("--render", "render_dir", type=click.Path(path_type=Path), default=layout.RENDER)
@click.option("--metrics", "metrics_dir", type=click.Path(path_type=Path), default=layout.METRICS)
@stage(checks=())
def main(
    params: Params, scores: Path, pairs: Path, couplings: Path, render_dir: Path, metrics_dir: Path
) -> Report:
    summary = aggregate(scores, pairs, couplings, render_dir, params, metrics_dir)
    for note in summary["notes"]:
        click.echo(f"aggregate: NOTE {note}")
    dropped = summary["pairs"]["degenerate"] if summary["pairs"]["degenerate_dropped"] else 0
    if dropped:
        click.echo(f"aggregate: left out {dropped} degenerate pair(s) (prompts embed identically)")
    n = summary["n_pairs"]
    return Report(f"{n} pairs (K = {summary['frames']}) -> {metrics_dir}", {"pairs": n})


if __name__ == "__main__":
    main()
