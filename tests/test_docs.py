"""The README and --help stay true: every command is documented, CI runs the README's test line."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from cryptolake.cli import cli

REPO = Path(__file__).resolve().parent.parent
README = (REPO / "README.md").read_text(encoding="utf-8")


def all_commands(group: click.Group = cli, prefix: str = "") -> list[tuple[str, click.Command]]:
    found = []
    for name, command in group.commands.items():
        found.append((f"{prefix}{name}", command))
        if isinstance(command, click.Group):
            found.extend(all_commands(command, f"{prefix}{name} "))
    return found


@pytest.mark.parametrize(("name", "command"), all_commands(), ids=[n for n, _ in all_commands()])
def test_every_command_has_help_an_example_and_a_readme_mention(name: str, command: click.Command) -> None:
    result = CliRunner().invoke(cli, [*name.split(), "--help"])
    assert result.exit_code == 0
    assert "Example:" in result.output, f"`cryptolake {name} --help` has no Example"
    assert f"cryptolake {name}" in README, f"README does not mention `cryptolake {name}`"


def test_quick_start_is_exactly_two_command_lines() -> None:
    quick = README.split("## Quick start", 1)[1].split("```bash", 1)[1].split("```", 1)[0]
    lines = [line for line in quick.strip().splitlines() if line.strip()]
    assert len(lines) == 2
    assert "cryptolake collect" in lines[0]
    assert "pytest" in lines[1]


def test_ci_runs_the_readme_test_line() -> None:
    ci = (REPO / ".ci" / "run").read_text(encoding="utf-8")
    pattern = re.search(r"grep -m1 -E '([^']+)' README.md", ci)
    assert pattern, ".ci/run no longer takes its test line from the README"
    matches = [line for line in README.splitlines() if re.search(pattern.group(1), line)]
    assert matches and matches[0].endswith("-m pytest -q -n 2")


def test_python_dash_m_entry_point() -> None:
    result = subprocess.run([sys.executable, "-m", "cryptolake", "--version"], capture_output=True, text=True)
    assert result.returncode == 0 and "cryptolake" in result.stdout
