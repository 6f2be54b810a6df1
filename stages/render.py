"""DVC stage 4: render every path's frames (through the shared frame cache)."""

from pathlib import Path

import click

from otpc.commands import params_option, stage
from otpc.frame_cache import is_url
from otpc.params import Params
from otpc.project import shared_path
from otpc.study import layout
from otpc.study.render import render_study
from otpc.timings import Report


@click.command()
@params_option
@click.option("--pairs", type=click.Path(path_type=Path), default=layout.PAIRS)
@click.option("--embeddings", type=click.Path(path_type=Path), default=layout.EMBEDDINGS)
@click.option("--couplings", type=click.Path(path_type=Path), default=layout.COUPLINGS)
@click.option("--out", type=click.Path(path_type=Path), default=layout.RENDER)
@stage(checks=("device", "model", "caches", "ray"))
def main(params: Params, pairs: Path, embeddings: Path, couplings: Path, out: Path) -> Report:
    cache_dir = params.render.cache_dir  # a URL as it is; a local path under the project
    if not is_url(cache_dir):
        cache_dir = str(shared_path(cache_dir))
    render_params = params.render.model_copy(update={"cache_dir": cache_dir})
    index, rendered = render_study(
        pairs, embeddings, couplings, params.model, render_params, out, params.ray
    )
    cached = index["key"].n_unique() - rendered
    paths = index["path_id"].n_unique()
    return Report(
        f"{rendered} frame(s) rendered, {cached} from the cache; {paths} paths -> {out}",
        {"frames_rendered": rendered, "frames_reused": cached, "paths": paths},
    )


if __name__ == "__main__":
    main()
