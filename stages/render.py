"""DVC stage 4: render every path's frames (through the shared frame cache)."""

from pathlib import Path

import click

from otpc.models import ModelSpec
from otpc.project import shared_path
from otpc.study import layout
from otpc.stagekit import params_option, stage
from otpc.study.render import render_study


@click.command()
@params_option
@click.option("--pairs", type=click.Path(path_type=Path), default=layout.PAIRS)
@click.option("--embeddings", type=click.Path(path_type=Path), default=layout.EMBEDDINGS)
@click.option("--couplings", type=click.Path(path_type=Path), default=layout.COUPLINGS)
@click.option("--out", type=click.Path(path_type=Path), default=layout.RENDER)
@stage
def main(params, pairs: Path, embeddings: Path, couplings: Path, out: Path) -> None:
    render_params = params.render.model_copy(
        update={"cache_dir": str(shared_path(params.render.cache_dir))})
    index = render_study(pairs, embeddings, couplings, ModelSpec(**params.model.model_dump()),
                         render_params, out)
    click.echo(f"render: {index['path_id'].n_unique()} paths -> {out}")


if __name__ == "__main__":
    main()
