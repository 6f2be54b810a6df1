"""DVC stage 7: log the study to MLflow as one complete run; record what was logged.

Its output (experiment and results hash) is not kept in git, so a fresh clone's first
`dvc repro` logs its results once; `persist` keeps DVC from restoring it from the run-cache
instead of logging. If the tracking store fails the stage fails, writing no record, and the
run it started is marked FAILED; every other stage's results are kept (dvc.lock and the
run-cache), so the next `dvc repro` runs only this stage.
"""

import os
import signal
import sys
from pathlib import Path

import click

from otpc.atomic import write_json
from otpc.commands import params_option, stage
from otpc.errors import TrackingError
from otpc.params import Params
from otpc.study import layout
from otpc.tracking import log_study, logged_line, results_hash


@click.command()
@params_option
@click.option("--scores", type=click.Path(path_type=Path), default=layout.SCORES)
@click.option("--pairs", type=click.Path(path_type=Path), default=layout.PAIRS)
@click.option("--couplings", type=click.Path(path_type=Path), default=layout.COUPLINGS)
@click.option("--render", "render_dir", type=click.Path(path_type=Path), default=layout.RENDER)
@click.option("--metrics", "metrics_dir", type=click.Path(path_type=Path), default=layout.METRICS)
@click.option("--out", type=click.Path(path_type=Path), default=layout.LOGGED)
@stage(checks=())
def main(
    params: Params,
    scores: Path,
    pairs: Path,
    couplings: Path,
    render_dir: Path,
    metrics_dir: Path,
    out: Path,
) -> None:
    # SIGTERM ends the run as FAILED (like Ctrl-C) instead of leaving it RUNNING.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(128 + signal.SIGTERM))
    out.unlink(missing_ok=True)  # a record stands only for a run logged by this attempt
    outputs = layout.logged_outputs(pairs, couplings, scores, render_dir)
    try:
        # the pipeline's dvc.yaml and dvc.lock stand beside its metrics folder
        logged = log_study(params, Path.cwd() / metrics_dir.parent, metrics_dir, outputs)
    except TrackingError as err:
        again = "`dvc exp run` again" if os.environ.get("DVC_EXP_NAME") else "`dvc repro`"
        raise TrackingError(
            f"{err}\nThe results are kept (dvc.lock, DVC's run-cache): when "
            f"the store is reachable, run {again} (only `log` runs)."
        ) from err
    click.echo(logged_line(logged, params.study))
    write_json(
        out,
        {
            "experiment": params.study,
            "results_hash": results_hash(params, metrics_dir / layout.SUMMARY),
        },
    )


if __name__ == "__main__":
    main()
