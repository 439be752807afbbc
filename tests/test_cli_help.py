"""The command line's version and help texts, as a user reads them."""

from __future__ import annotations

import re

import pytest
import typer
from typer.testing import CliRunner

from debond import __version__
from debond.cli import app
from debond.stages import REGISTRY

runner = CliRunner()

#: The commands this file checks, as typed after `debond`.
COMMANDS = (
    ("fit",),
    ("report",),
    ("run",),
    ("status",),
    ("init",),
    ("params",),
    ("synth",),
    ("demo",),
    ("model", "simulate"),
    ("model", "sensitivity"),
    ("submit", "k8s"),
)


def flat(text: str) -> str:
    """Help text with its line wrapping undone."""
    return " ".join(text.split())


def test_version_prints_the_package_version() -> None:
    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0, result.output
    assert result.output == f"{__version__}\n"


def test_square_brackets_in_help_texts_are_shown_literally() -> None:
    result = runner.invoke(app, ["fit", "--help"])
    assert result.exit_code == 0, result.output
    text = flat(result.output)
    assert "its material and its [fit] section" in text
    assert "(default: [fit] or 2000)" in text


@pytest.mark.parametrize("command", COMMANDS, ids=" ".join)
def test_every_help_text_renders_literally(command: tuple[str, ...]) -> None:
    click_command = typer.main.get_command(app)
    for word in command:
        click_command = click_command.commands[word]  # type: ignore[attr-defined]
    result = runner.invoke(app, [*command, "--help"])
    assert result.exit_code == 0, result.output
    text = flat(result.output)
    for param in click_command.params:
        helped = getattr(param, "help", None)
        if helped:
            assert flat(helped) in text, param.name


@pytest.mark.parametrize("command", COMMANDS, ids=" ".join)
def test_every_command_help_carries_an_example(command: tuple[str, ...]) -> None:
    result = runner.invoke(app, [*command, "--help"])
    example = re.search(r"Example:\n\n\s+(debond .*)\n", result.output)
    assert example is not None, result.output
    assert example.group(1).startswith(f"debond {' '.join(command)} ")


def test_run_help_lists_every_stage() -> None:
    result = runner.invoke(app, ["run", "--help"])
    assert result.exit_code == 0, result.output
    text = flat(result.output)
    assert "--dry-run" in text
    for stage in REGISTRY:
        assert flat(f"{stage.name} {stage.summary.replace('`', '')}") in text
