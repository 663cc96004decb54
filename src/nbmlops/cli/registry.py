"""``nbmlops model``: register, promote, roll back, approve; list versions and alias history.

Each command parses, calls :mod:`nbmlops.api.registry`, prints. A
refused promotion prints every gate with its verdict and exits 1; other nbmlops errors reach
``nbmlops.cli.main.main``, which prints them and exits 2.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import asdict

import typer
from rich.table import Table

from nbmlops.cli.output import JSON_OPTION, Output, listing, print_json, print_table
from nbmlops.exceptions import GateRefused

app = typer.Typer(
    help="Model registry: register versions with cards and scans; promote through gates; "
    "roll back; approve.",
    no_args_is_help=True,
)
console = Output(highlight=False)
err_console = Output(stderr=True, highlight=False)


def _registry():
    from nbmlops.api.registry import model_registry
    from nbmlops.config import load_settings

    return model_registry(load_settings())


def _read_versions(name: str) -> list:
    from nbmlops.api.registry import model_versions
    from nbmlops.config import load_settings

    return model_versions(name, load_settings())


def _read_history(name: str, alias: str) -> list:
    from nbmlops.api.registry import alias_history
    from nbmlops.config import load_settings

    return alias_history(name, alias, load_settings())


def _when(ts: float) -> str:
    return dt.datetime.fromtimestamp(ts, dt.UTC).strftime("%Y-%m-%d %H:%M:%S")


def _gates_table(title: str, results) -> Table:
    table = Table(title=title)
    table.add_column("gate")
    table.add_column("verdict")
    table.add_column("reason")
    for r in results:
        table.add_row(r.gate, "passed" if r.passed else "[red]FAILED[/red]", r.reason)
    return table


@app.command()
def register(
    source: str = typer.Argument(
        ..., help="runs:/RUN_ID/NAME, a logged model id m-..., or a tracked variable's name."
    ),
    name: str = typer.Argument(..., help="Registered model name."),
    holdout: str = typer.Option(None, help="Data version NAME@k for the permutation importance."),
    target: str = typer.Option(None, help="Target column of the holdout."),
    intended_use: str = typer.Option(None, "--intended-use", help="Model card: what it is for."),
    limitations: str = typer.Option(None, help="Model card: where it must not be used."),
    description: str = typer.Option(None, help="A line describing this version."),
) -> None:
    """Register a logged model as a new version, with its lineage tags, scan and card."""
    rv = _registry().register(
        source,
        name,
        holdout=holdout,
        target=target,
        intended_use=intended_use,
        limitations=limitations,
        description=description,
    )
    card = "complete" if rv.card.complete else f"incomplete ({', '.join(rv.card.missing)})"
    console.print(
        f"{rv.name} v{rv.version} registered: run {rv.run_id}, data "
        f"{', '.join(rv.data_versions) or 'not recorded'}, scan {rv.scan.status}, card {card}",
        markup=False,
    )
    for line in rv.scan.summary():
        console.print(f"  scan: {line}", markup=False)
    console.print(f"  card: {rv.card_uri}/card.html", markup=False)


@app.command()
def promote(
    name: str,
    version: str,
    alias: str = typer.Option("champion", help="Alias to move."),
    override: str = typer.Option(
        None, help="Admins: promote despite failed gates, for this reason (audited)."
    ),
) -> None:
    """Move an alias to a version if your role allows it and every gate passes."""
    try:
        result = _registry().promote(name, version, alias, override=override)
    except GateRefused as err:
        err_console.print(_gates_table(f"{name} v{version} -> @{alias}: refused", err.results))
        err_console.print(f"Nothing was changed. {err.fix or ''}", markup=False)
        raise typer.Exit(1) from None
    if result.gates:
        console.print(_gates_table(f"{name} v{version} -> @{alias}", result.gates))
    console.print(result.summary(), markup=False)


@app.command()
def rollback(name: str, alias: str = typer.Option("champion", help="Alias to roll back.")) -> None:
    """Move an alias back to its previous holder."""
    console.print(_registry().rollback(name, alias).summary(), markup=False)


@app.command()
def approve(
    name: str, version: str, comment: str = typer.Option("", "-m", "--comment", help="Why.")
) -> None:
    """Approve a version (approver role)."""
    a = _registry().approve(name, version, comment)
    state = "approved" if a.new else "already approved"
    console.print(f"{a.name} v{a.version} {state} by {a.user}", markup=False)


@app.command()
def versions(name: str, as_json: bool = JSON_OPTION) -> None:
    """Every version with its aliases, scan verdict, card state and approvals."""
    found = _read_versions(name)
    if as_json:
        print_json([asdict(v) for v in found])
        return
    columns = (
        "version",
        "aliases",
        "created (UTC)",
        "by",
        "scan",
        "card",
        "approved by",
        "data",
        "run",
    )
    rows = [
        (
            v.version,
            ", ".join(v.aliases),
            _when(v.created),
            v.registered_by,
            v.scan,
            "complete" if v.card_complete else "incomplete",
            ", ".join(v.approvals),
            ", ".join(v.data_versions),
            v.run_id or "",
        )
        for v in found
    ]
    print_table(listing(f"versions of {name}", columns, rows), console)


@app.command()
def history(
    name: str,
    alias: str = typer.Option("champion", help="Alias."),
    as_json: bool = JSON_OPTION,
) -> None:
    """Every recorded move of an alias, oldest first."""
    events = _read_history(name, alias)
    if as_json:
        print_json([asdict(e) for e in events])
        return
    columns = ("time (UTC)", "action", "version", "previous", "user", "override")
    rows = [
        (
            _when(e.ts),
            e.action,
            "" if e.version is None else f"v{e.version}",
            "" if e.previous is None else f"v{e.previous}",
            e.user,
            e.override or "",
        )
        for e in events
    ]
    print_table(listing(f"history of {name}@{alias}", columns, rows), console)
