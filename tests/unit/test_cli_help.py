"""The command line describes itself: every command and option has a help text, --version."""

from typing import Any

import pytest
import typer
from typer.testing import CliRunner

from openanomaly import __version__
from openanomaly.cli import app


def _commands(command: Any, path: tuple[str, ...] = ()) -> list[tuple[tuple[str, ...], Any]]:
    """The click command tree (typer vendors click: its classes are typer's own)."""
    found = [(path, command)]
    for name, sub in getattr(command, "commands", {}).items():
        found += _commands(sub, (*path, name))
    return found


COMMANDS = _commands(typer.main.get_command(app))


def test_the_tree_holds_every_command() -> None:
    names = {" ".join(path) for path, _ in COMMANDS}
    assert {"validate", "train", "infer", "backtest", "run", "pipelines list"} <= names


@pytest.mark.parametrize(("path", "command"), COMMANDS, ids=[" ".join(p) for p, _ in COMMANDS])
def test_every_command_and_parameter_has_a_help_text(path: tuple[str, ...], command: Any) -> None:
    assert command.help or command.short_help, f"{' '.join(path)} has no help"
    for param in command.params:
        assert getattr(param, "help", None), f"{' '.join(path)} {param.name} has no help"
    result = CliRunner().invoke(app, [*path, "--help"])
    assert result.exit_code == 0, result.output
    assert "Usage:" in result.output


def test_the_top_level_help_is_for_users() -> None:
    result = CliRunner().invoke(app, ["--help"])
    assert "only translates" not in result.output and "``" not in result.output
    assert "Anomaly detection" in result.output


@pytest.mark.parametrize("command", ["infer", "backtest"])
def test_time_options_name_the_accepted_formats(command: str) -> None:
    result = CliRunner().invoke(app, [command, "--help"], terminal_width=200)
    for fmt in ("now-2h", "-2h", "unix seconds", "RFC 3339"):
        assert fmt in result.output


def test_version() -> None:
    result = CliRunner().invoke(app, ["--version"])
    assert result.exit_code == 0 and result.output.strip() == f"openanomaly {__version__}"
    assert __version__[0].isdigit()
