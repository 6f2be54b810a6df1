"""DVC stage 1: draw the study's prompt pairs."""

from pathlib import Path

import click

from otpc.commands import params_option, stage
from otpc.params import Params
from otpc.study import layout
from otpc.study.sample import sample
from otpc.timings import Report


@click.command()
@params_option
@click.option("--out", type=click.Path(path_type=Path), default=layout.PAIRS)
@stage()
def main(params: Params, out: Path) -> Report:
    table = sample(params.data, out)
    groups = table["group"].n_unique()
    return Report(f"{len(table)} pairs in {groups} groups -> {out}", {"pairs": len(table)})


if __name__ == "__main__":
    main()
