"""``nbmlops export-notebook RUN_ID``: the clean notebook of the cells a ``%%track`` run of an
interactive notebook depends on, from the kernel's execution history."""

from __future__ import annotations

import json

import typer


def export_notebook(
    run_id: str = typer.Argument(
        ..., help="MLflow run id (or an unambiguous prefix) of a %%track run of a notebook."
    ),
    as_json: bool = typer.Option(False, "--json", help="Print the result as JSON."),
) -> None:
    """Write the notebook that made a tracked run: the cells it depends on, transitively, in
    the order they ran and as they ran (cells since edited or deleted included), to
    <home>/reproduce/RUN_ID/replay.ipynb. Exit code 0: written and replayable; 1: written, but
    something cannot be replayed (each named with its reason)."""
    from rich.console import Console
    from rich.markup import escape

    from nbmlops.api.replay import export_notebook as export
    from nbmlops.config import load_settings

    console = Console()
    done = export(run_id, settings=load_settings())
    piece = done.slice
    if as_json:
        console.print_json(
            json.dumps(
                {
                    "run_id": done.run_id,
                    "notebook": str(done.path),
                    "cells": [c.get("execution_count") for c in piece.cells],
                    "left_out": piece.skipped,
                    "blockers": [{"what": b.what, "reason": b.reason} for b in done.blockers],
                }
            )
        )
        raise typer.Exit(0 if piece.replayable else 1)
    counts = ", ".join(f"[{c.get('execution_count')}]" for c in piece.cells)
    console.print(
        f"run {done.run_id}: {len(piece.cells)} cell(s) {counts}, {piece.skipped} left out"
    )
    console.print(f"written to {done.path}")
    for b in done.blockers:
        console.print(f"[red]cannot replay[/red] {escape(b.what)}: {escape(b.reason)}")
    raise typer.Exit(0 if piece.replayable else 1)
