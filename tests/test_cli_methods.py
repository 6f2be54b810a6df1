"""`otpc methods` lists every registered coupling and model preset, in labelled sections;
`otpc --version` says the installed version."""

from importlib.metadata import version

from click.testing import CliRunner

from otpc.cli import main
from otpc.couplings import METHODS
from otpc.models import PRESETS


def test_methods_lists_registry_and_presets() -> None:
    result = CliRunner().invoke(main, ["methods"])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    presets_at = lines.index("model presets (model.name; [what unset render settings become]):")
    assert lines[0] == "coupling methods (couple.methods):"
    assert [line.split(":")[0].strip() for line in lines[1:presets_at]] == list(METHODS)
    assert [line.split(":")[0].strip() for line in lines[presets_at + 1 :]] == list(PRESETS)
    assert "seeded replicates" in next(
        line for line in result.output.splitlines() if "random:" in line
    )
    flux = next(line for line in lines if line.strip().startswith("flux-dev:"))
    assert flux.endswith("[50 steps, guidance 3.5, 1024 px, gated]")


def test_version() -> None:
    result = CliRunner().invoke(main, ["--version"])
    assert result.exit_code == 0 and version("otpc") in result.output
