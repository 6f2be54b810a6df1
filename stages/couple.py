"""DVC stage 3: couple each pair's embeddings with every method."""

from pathlib import Path

import click

from otpc.commands import params_option, stage
from otpc.params import Params
from otpc.study import layout
from otpc.study.couple import couple_pairs
from otpc.timings import Report


@click.command()
@params_option
@click.option("--pairs", type=click.Path(path_type=Path), default=layout.PAIRS)
@click.option("--embeddings", type=click.Path(path_type=Path), default=layout.EMBEDDINGS)
@click.option("--out", type=click.Path(path_type=Path), default=layout.COUPLINGS)
@stage(checks=())
def main(params: Params, pairs: Path, embeddings: Path, out: Path) -> Report:
    table = couple_pairs(pairs, embeddings, params.couple, out)
    return Report(f"{len(table)} couplings -> {out}", {"couplings": len(table)})


if __name__ == "__main__":
    main()
