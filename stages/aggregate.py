"""DVC stage 6: statistics, figures, summary; then log the run to MLflow."""

from pathlib import Path

import click

from otpc.stagekit import params_option, stage
from otpc.study.aggregate import aggregate
from otpc.tracking import log_or_explain


@click.command()
@params_option
@click.option("--scores", type=click.Path(path_type=Path), default="outputs/scores.parquet")
@click.option("--pairs", type=click.Path(path_type=Path), default="outputs/pairs.parquet")
@click.option("--couplings", type=click.Path(path_type=Path), default="outputs/couplings.parquet")
@click.option("--render", "render_dir", type=click.Path(path_type=Path), default="outputs/render")
@click.option("--metrics", "metrics_dir", type=click.Path(path_type=Path), default="metrics")
@stage
def main(params, scores: Path, pairs: Path, couplings: Path, render_dir: Path,
         metrics_dir: Path) -> None:
    summary = aggregate(scores, pairs, render_dir, params, metrics_dir)
    for note in summary["notes"]:
        click.echo(f"aggregate: NOTE {note}")
    click.echo(f"aggregate: {summary['n_pairs']} pairs -> {metrics_dir}")
    log_or_explain(params, Path.cwd(), metrics_dir,
                   {"pairs": pairs, "couplings": couplings, "scores": scores, "render": render_dir})


if __name__ == "__main__":
    main()
