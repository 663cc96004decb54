"""README's command list names every command of the ``nbmlops`` app, and nothing else."""

from __future__ import annotations

import re
from pathlib import Path

import typer

from nbmlops.cli.main import app

README = Path(__file__).resolve().parents[2] / "README.md"


def readme_commands() -> set[str]:
    """``cmd`` and ``group sub`` named in the README's Command line block."""
    text = README.read_text()
    block = text.split("## Command line", 1)[1].split("```text", 1)[1].split("```", 1)[0]
    named: set[str] = set()
    for line in block.splitlines():
        match = re.match(r"nbmlops ([a-z-]+)(?: ([a-z|-]+)(?=\s|$))?", line.strip())
        if not match:
            continue
        named.add(match.group(1))
        for sub in (match.group(2) or "").split("|"):
            if sub:
                named.add(f"{match.group(1)} {sub}")
    return named


def app_commands() -> set[str]:
    root = typer.main.get_command(app)
    found: set[str] = set()
    for name, command in root.commands.items():  # type: ignore[attr-defined]
        found.add(name)
        if hasattr(command, "commands"):  # a group (typer vendors its own click)
            found.update(f"{name} {sub}" for sub in command.commands)
    return found


def test_the_readme_lists_every_command_and_subcommand():
    named, actual = readme_commands(), app_commands()
    groups = {c for c in actual if " " not in c and any(a.startswith(c + " ") for a in actual)}
    missing = {c for c in actual - named if c not in groups or c.split()[0] not in named}
    assert not missing, f"README's command list lacks: {sorted(missing)}"
    # Words after a plain command (run NB.ipynb) are arguments; a group's words are commands.
    unknown = {c for c in named - actual if c.split()[0] in groups}
    assert not unknown, f"README names commands the app does not have: {sorted(unknown)}"
