"""`otpc methods` lists every registered coupling and model preset."""

from click.testing import CliRunner

from otpc.cli import main
from otpc.couplings import METHODS
from otpc.models import PRESETS


def test_methods_lists_registry_and_presets() -> None:
    result = CliRunner().invoke(main, ["methods"])
    assert result.exit_code == 0, result.output
    names = [line.split(":")[0].strip() for line in result.output.splitlines()]
    assert names == list(METHODS) + list(PRESETS)
    assert "seeded replicates" in next(
        line for line in result.output.splitlines() if "random:" in line
    )
