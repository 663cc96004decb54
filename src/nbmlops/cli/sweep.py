"""``nbmlops sweep``: placeholder until the sweep command lands."""

import typer


def sweep(notebook: str = typer.Argument(...)) -> None:
    raise typer.Exit(3)
