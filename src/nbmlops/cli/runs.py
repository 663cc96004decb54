"""``nbmlops runs ls``: an experiment's runs as the Experiments panel lists them."""

from __future__ import annotations

import math
from typing import Any

import typer

from nbmlops.cli.output import JSON_OPTION, Output, listing, print_json, print_table

app = typer.Typer(help="Runs of an experiment: ls.", no_args_is_help=True)
console = Output(highlight=False)


def _plain(value: Any) -> Any:
    """A frame cell as JSON: timestamps as ISO text, NaN and NaT as null."""
    if value is None:
        return None
    if hasattr(value, "isoformat"):
        return None if str(value) == "NaT" else value.isoformat()
    if isinstance(value, float) and math.isnan(value):
        return None
    return value.item() if hasattr(value, "item") else value


@app.command("ls")
def ls(
    experiment: str = typer.Option(
        None, "--experiment", "-e", help="Experiment name (default: as the panel opens)."
    ),
    filter_text: str = typer.Option(
        "",
        "--filter",
        "-f",
        help="The panel's filter: text, or comparisons such as 'acc>0.9 C<=1' (all must hold).",
    ),
    status: str = typer.Option(None, help="Only runs with this status (FINISHED, FAILED, ...)."),
    as_json: bool = JSON_OPTION,
) -> None:
    """List runs newest first, with their params and metrics."""
    from nbmlops.api.experiments import runs_listing
    from nbmlops.config import load_settings

    name, runs = runs_listing(load_settings(), experiment, filter_text, status)
    records = [
        {str(k): _plain(v) for k, v in row.items()} for row in runs.to_dict(orient="records")
    ]
    if as_json:
        print_json({"experiment": name, "runs": records})
        return
    if name is None:
        console.print("no experiments yet: run a %%track cell first", markup=False)
        return
    columns = [c for c in runs.columns if c != "end"]
    rows = []
    for rec in records:
        row = []
        for col in columns:
            value = rec.get(col)
            if col == "start" and value:
                value = value[:19].replace("T", " ")
            elif col == "duration" and value is not None:
                value = f"{value:.1f}s"
            elif isinstance(value, float):
                value = f"{value:.6g}"
            row.append(value)
        rows.append(row)
    headers = [c.split(".", 1)[1] if c.startswith(("params.", "metrics.")) else c for c in columns]
    title = f"runs of {name} ({len(rows)})" + (f" matching {filter_text!r}" if filter_text else "")
    print_table(listing(title, headers, rows), console)
