"""Every `tradecast ...` command shown in README.md's code blocks exists and its --help works."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest
import typer.main
from typer.testing import CliRunner

from tradecast.cli import app

README = Path(__file__).resolve().parent.parent / "README.md"
FENCE = re.compile(r"^```[^\n]*\n(.*?)^```", re.S | re.M)
ENV_ASSIGNMENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*=")


def readme_commands(text: str) -> list[list[str]]:
    """The argument lists of the `tradecast` commands in the fenced code blocks of `text`.

    A command line may carry a shell prompt (`$ `), environment assignments (`TRADECAST_HOME=x tradecast ...`)
    or a path to the executable (`.venv/bin/tradecast`); continuation lines ending in a backslash are joined.
    """
    commands = []
    for block in FENCE.findall(text):
        for line in block.replace("\\\n", " ").splitlines():
            line = line.strip()
            if line.startswith("$ "):
                line = line[2:]
            try:
                tokens = shlex.split(line, comments=True)
            except ValueError:  # not shell (JSON, YAML): skip
                continue
            while tokens and ENV_ASSIGNMENT.match(tokens[0]):
                tokens = tokens[1:]
            if tokens and (tokens[0] == "tradecast" or tokens[0].endswith("/tradecast")):
                commands.append(tokens[1:])
    return commands


def command_path(args: list[str]) -> list[str]:
    """The sub-command names at the front of `args` (what `--help` is asked of), walking the click tree."""
    group = typer.main.get_command(app)
    path: list[str] = []
    ctx = group.context_class(group)  # typer vendors its own click: use its Context
    skip_value = False
    for token in args:
        if skip_value:
            skip_value = False
            continue
        if token == "--profile" and not path:  # the one global option that takes a value
            skip_value = True
            continue
        if token.startswith("-"):
            break
        if hasattr(group, "list_commands") and token in group.list_commands(ctx):
            group = group.get_command(ctx, token)
            path.append(token)
        else:
            break
    return path


def test_parser_finds_commands_in_code_blocks_only():
    text = ("Run `tradecast nothing` inline.\n```bash\n$ make demo\n$ .venv/bin/tradecast demo --scale tiny\n"
            "TRADECAST_HOME=/tmp/x tradecast train delay \\\n  --config configs/delay.yaml\n"
            "tradecast data generate --scale small  # comment\n```\n```json\n{\"tradecast\": 1}\n```\n")
    assert readme_commands(text) == [["demo", "--scale", "tiny"],
                                     ["train", "delay", "--config", "configs/delay.yaml"],
                                     ["data", "generate", "--scale", "small"]]
    assert command_path(["train", "delay", "--config", "x"]) == ["train"]
    assert command_path(["data", "generate", "--scale", "small"]) == ["data", "generate"]
    assert command_path(["models", "promote", "delay", "3"]) == ["models", "promote"]
    assert command_path(["--profile", "shared", "features", "materialize"]) == ["features", "materialize"]


def test_every_readme_command_exists_and_has_help():
    if not README.exists():
        pytest.fail("README.md is missing: it must show the commands (the lead writes it)")
    commands = readme_commands(README.read_text(encoding="utf-8"))
    assert len(commands) >= 3, f"found only {len(commands)} `tradecast` command(s) in README.md code blocks"
    runner = CliRunner()
    checked: set[tuple[str, ...]] = set()
    for args in commands:
        path = command_path(args)
        leftover = [a for a in args if not a.startswith("-")]
        # the first word after `tradecast` must be a real command (not a typo the README would teach)
        assert path or not leftover, f"README.md shows `tradecast {' '.join(args)}`: no such command"
        if tuple(path) in checked:
            continue
        checked.add(tuple(path))
        result = runner.invoke(app, [*path, "--help"])
        assert result.exit_code == 0, f"`tradecast {' '.join(path)} --help` failed: {result.output}"
        assert "Usage" in result.output
