"""``nbmlops reproduce RUN_ID``: run a recorded notebook run again and compare."""

from __future__ import annotations

import json

import typer


def reproduce(
    run_id: str = typer.Argument(
        ...,
        help="MLflow run id (or an unambiguous prefix) of a notebook run, a pipeline run, or a "
        "%%track run of an interactive notebook (its cells are replayed).",
    ),
    rtol: float = typer.Option(
        0.0, "--rtol", min=0.0, help="Relative tolerance for metrics (0: exactly equal)."
    ),
    as_json: bool = typer.Option(False, "--json", help="Print the report as JSON."),
) -> None:
    """Run a recorded notebook again with its recorded code, parameters and input versions, in
    a scratch folder, and report whether output digests and metrics match.

    Inputs are taken from the recorded path when unchanged, else from the data version with
    the recorded digest; when neither exists nothing runs. A pipeline run id reproduces each
    of its step runs. Exit code 0: everything matches; 1: something differs or could not run.
    """
    from rich.console import Console
    from rich.table import Table

    from nbmlops.api.pipeline import ProgressEvent, StepStarted
    from nbmlops.api.pipeline import reproduce as run_reproduce
    from nbmlops.config import load_settings

    console = Console()
    settings = load_settings()

    def progress(event: ProgressEvent) -> None:
        if isinstance(event, StepStarted) and not as_json:
            console.print(f"running {event.step} again ...")

    report = run_reproduce(run_id, rtol=rtol, settings=settings, progress=progress)
    if as_json:
        console.print_json(json.dumps(report.to_dict(), default=str))
        raise typer.Exit(0 if report.ok else 1)
    for rep in report.runs:
        title = f"{rep.name} (run {rep.run_id}"
        title += f" -> {rep.new_run_id})" if rep.new_run_id else ")"
        table = Table(title=title)
        for col in ("item", "recorded", "now", "match", "note"):
            table.add_column(col, overflow="fold")
        for check in rep.checks:
            mark = "[green]yes[/green]" if check.match else "[red]NO[/red]"
            table.add_row(check.item, check.recorded, check.now, mark, check.note)
        console.print(table)
        if rep.error:
            console.print(f"[red]{rep.error}[/red]")
        for note in rep.notes:
            console.print(f"note: {note}")
    for note in report.notes:
        console.print(f"note: {note}")
    console.print(f"scratch folder: {report.folder}")
    if report.ok:
        console.print(f"[green]reproduced[/green]: run {report.run_id} matches (rtol {rtol:g})")
        raise typer.Exit(0)
    differing = [f"{name}: {c.item}" for name, c in report.differences]
    refused = [r.name for r in report.runs if r.error]
    what = ", ".join(differing) or ", ".join(f"{n} did not run" for n in refused)
    console.print(f"[red]not reproduced[/red]: run {report.run_id} differs ({what})")
    raise typer.Exit(1)
