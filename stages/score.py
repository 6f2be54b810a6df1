"""DVC stage 5: LPIPS path lengths."""

from pathlib import Path

import click

from otpc.commands import params_option, stage
from otpc.params import Params
from otpc.project import shared_path
from otpc.study import layout
from otpc.study.score import score_paths
from otpc.timings import Report


@click.command()
@params_option
@click.option("--render", "render_dir", type=click.Path(path_type=Path), default=layout.RENDER)
@click.option("--pairs", type=click.Path(path_type=Path), default=layout.PAIRS)
@click.option("--couplings", type=click.Path(path_type=Path), default=layout.COUPLINGS)
@click.option("--out", type=click.Path(path_type=Path), default=layout.SCORES)
@stage(checks=("device", "metric", "caches", "ray"))
def main(params: Params, render_dir: Path, pairs: Path, couplings: Path, out: Path) -> Report:
    table, scored, measured = score_paths(
        render_dir,
        pairs,
        couplings,
        params.score,
        out,
        shared_path(str(layout.SCORE_CACHE)),
        params.model.device,
        params.ray,
    )
    reused = measured - scored
    variants = table["variant"].n_unique()
    return Report(
        f"{scored} path(s) scored, {reused} from the cache ({variants} scoring(s), "
        f"{table['metric'][0]} first) -> {out}",
        {"paths_scored": scored, "paths_reused": reused},
    )


if __name__ == "__main__":
    main()
