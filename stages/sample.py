"""DVC stage 1: draw the study's prompt pairs."""

from pathlib import Path

import click

from otpc.commands import params_option, stage
from otpc.params import Params
from otpc.study import layout
from otpc.study.sample import sample


@click.command()
@params_option
@click.option("--out", type=click.Path(path_type=Path), default=layout.PAIRS)
@stage()
def main(params: Params, out: Path) -> None:
    table = sample(params.data, out)
    click.echo(f"sample: {len(table)} pairs in {table['group'].n_unique()} groups -> {out}")


if __name__ == "__main__":
    main()
