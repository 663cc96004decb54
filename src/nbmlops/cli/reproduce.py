"""``nbmlops reproduce``: placeholder until the command lands."""

import typer


def reproduce(run_id: str = typer.Argument(...)) -> None:
    raise typer.Exit(3)
