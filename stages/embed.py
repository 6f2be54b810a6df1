"""DVC stage 2: embed every distinct prompt once."""

from pathlib import Path

import click

from otpc.models import ModelSpec
from otpc.stagekit import params_option, stage
from otpc.study.embed import embed


@click.command()
@params_option
@click.option("--pairs", type=click.Path(path_type=Path), default="outputs/pairs.parquet")
@click.option("--out", type=click.Path(path_type=Path), default="outputs/embeddings")
@stage
def main(params, pairs: Path, out: Path) -> None:
    index = embed(pairs, ModelSpec(**params.model.model_dump()), out)
    click.echo(f"embed: {len(index)} prompts -> {out}")


if __name__ == "__main__":
    main()
