"""``nbmlops run`` and ``nbmlops pipeline``: placeholder until the commands land."""

import typer

app = typer.Typer()


def run(notebook: str = typer.Argument(...)) -> None:
    raise typer.Exit(3)
