"""DVC stage 6: statistics, figures and the summary."""

from pathlib import Path

import click

from otpc.commands import params_option, stage
from otpc.params import Params
from otpc.study import layout
from otpc.study.aggregate import aggregate


@click.command()
@params_option
@click.option("--scores", type=click.Path(path_type=Path), default=layout.SCORES)
@click.option("--pairs", type=click.Path(path_type=Path), default=layout.PAIRS)
@click.option("--render", "render_dir", type=click.Path(path_type=Path), default=layout.RENDER)
@click.option("--metrics", "metrics_dir", type=click.Path(path_type=Path), default=layout.METRICS)
@stage(checks=())
def main(params: Params, scores: Path, pairs: Path, render_dir: Path, metrics_dir: Path) -> None:
    summary = aggregate(scores, pairs, render_dir, params, metrics_dir)
    for note in summary["notes"]:
        click.echo(f"aggregate: NOTE {note}")
    click.echo(f"aggregate: {summary['n_pairs']} pairs -> {metrics_dir}")


if __name__ == "__main__":
    main()
