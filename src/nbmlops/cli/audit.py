"""``nbmlops audit``: show and verify the hash-chained audit log (``<home>/audit.jsonl``)."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import typer
from rich.console import Console
from rich.table import Table

app = typer.Typer(
    help="Show and verify the tamper-evident audit log of dataset and model actions.",
    no_args_is_help=True,
)
console = Console(highlight=False)

DETAILS_WIDTH = 60
VALUE_WIDTH = 20


def _log():
    from nbmlops.api.audit import audit_log
    from nbmlops.config import load_settings

    return audit_log(load_settings())


def _short(details: dict) -> str:
    """``key=value, …`` with long values (digests, paths) cut short."""
    parts = []
    for key, value in details.items():
        text = value if isinstance(value, str) else json.dumps(value, separators=(",", ":"))
        parts.append(f"{key}={text if len(text) <= VALUE_WIDTH else text[: VALUE_WIDTH - 1] + '…'}")
    joined = ", ".join(parts)
    return joined if len(joined) <= DETAILS_WIDTH else joined[: DETAILS_WIDTH - 1] + "…"


@app.command("log")
def log_(
    action: str | None = typer.Option(
        None, "--action", help="Only this action, or an fnmatch pattern (data.*)."
    ),
    target: str | None = typer.Option(
        None, "--target", help="Only this target or pattern; a name without @ matches all versions."
    ),
    n: int = typer.Option(20, "-n", "--limit", min=1, help="How many of the last entries."),
) -> None:
    """Show the last entries of the audit log (oldest first)."""
    log = _log()
    entries = log.tail(n, action=action, target=target)
    if not entries:
        console.print(f"no audit entries in {log.path}", markup=False)
        return
    table = Table(title=f"audit log {log.path}")
    table.add_column("seq", justify="right")
    table.add_column("time (UTC)", no_wrap=True)
    table.add_column("user")
    table.add_column("action")
    table.add_column("target")
    table.add_column("details", overflow="fold")
    for e in entries:
        when = datetime.fromtimestamp(e.ts, UTC).strftime("%Y-%m-%d %H:%M:%S")
        table.add_row(str(e.seq), when, e.user, e.action, e.target, _short(e.details))
    console.print(table)


@app.command()
def verify() -> None:
    """Check every entry's hash, the sequence, the chain and the head; exit 1 on a problem."""
    log = _log()
    report = log.verify()
    if report.ok:
        console.print(f"audit log OK: {report.entries} entries, chain intact", markup=False)
        if report.last_hash:
            console.print(f"last hash: {report.last_hash}")
        return
    console.print(
        f"audit log FAILED verification ({log.path}): {report.entries} entries read, "
        f"{len(report.problems)} problem(s)",
        markup=False,
    )
    for problem in report.problems:
        console.print(f"  - {problem}", markup=False)
    raise typer.Exit(1)
