"""DVC stage 2: embed every distinct prompt once."""

from pathlib import Path

import click

from otpc.models import ModelSpec
from otpc.study import layout
from otpc.stagekit import params_option, stage
from otpc.study.embed import embed


@click.command()
@params_option
@click.option("--pairs", type=click.Path(path_type=Path), default=layout.PAIRS)
@click.option("--out", type=click.Path(path_type=Path), default=layout.EMBEDDINGS)
@stage
def main(params, pairs: Path, out: Path) -> None:
    index = embed(pairs, ModelSpec(**params.model.model_dump()), out)
    click.echo(f"embed: {len(index)} prompts -> {out}")


if __name__ == "__main__":
    main()
