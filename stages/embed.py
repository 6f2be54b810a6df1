"""DVC stage 2: embed every distinct prompt once."""

from pathlib import Path

import click

from otpc.commands import params_option, stage
from otpc.params import Params
from otpc.study import layout
from otpc.study.embed import embed
from otpc.timings import Report


@click.command()
@params_option
@click.option("--pairs", type=click.Path(path_type=Path), default=layout.PAIRS)
@click.option("--out", type=click.Path(path_type=Path), default=layout.EMBEDDINGS)
@stage(checks=("device", "model"))
def main(params: Params, pairs: Path, out: Path) -> Report:
    index = embed(pairs, params.model, out)
    truncated = int(index["truncated"].sum())
    if truncated:
        click.echo(
            f"embed: {truncated} prompt(s) longer than the tokenizer's limit were "
            "truncated (see 'truncated' in the index)"
        )
    return Report(f"{len(index)} prompts -> {out}", {"prompts": len(index)})


if __name__ == "__main__":
    main()
