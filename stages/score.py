"""DVC stage 5: LPIPS path lengths."""

from pathlib import Path

import click

from otpc.commands import params_option, stage
from otpc.models import pick_device
from otpc.params import Params
from otpc.project import shared_path
from otpc.study import layout
from otpc.study.score import score_paths


@click.command()
@params_option
@click.option("--render", "render_dir", type=click.Path(path_type=Path), default=layout.RENDER)
@click.option("--pairs", type=click.Path(path_type=Path), default=layout.PAIRS)
@click.option("--couplings", type=click.Path(path_type=Path), default=layout.COUPLINGS)
@click.option("--out", type=click.Path(path_type=Path), default=layout.SCORES)
@stage(checks=("device", "metric", "caches"))
def main(params: Params, render_dir: Path, pairs: Path, couplings: Path, out: Path) -> None:
    table, scored = score_paths(
        render_dir,
        pairs,
        couplings,
        params.score,
        out,
        shared_path(str(layout.SCORE_CACHE)),
        pick_device(params.model.device),
    )
    click.echo(f"score: {scored} path(s) scored, {len(table) - scored} from the cache")
    click.echo(f"score: {len(table)} paths ({table['metric'][0]}) -> {out}")


if __name__ == "__main__":
    main()
