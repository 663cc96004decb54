"""``nbmlops audit``: show and verify the hash-chained audit log (``<home>/audit.jsonl``)."""

from __future__ import annotations

import json
from dataclasses import asdict
from datetime import UTC, datetime

import typer
from rich.console import Console

from nbmlops.cli.output import JSON_OPTION, listing, piped, print_json, print_table

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


def _short(details: dict, whole: bool = False) -> str:
    """``key=value, …`` with long values (digests, paths) cut short, unless ``whole``."""
    parts = []
    for key, value in details.items():
        text = value if isinstance(value, str) else json.dumps(value, separators=(",", ":"))
        if not whole and len(text) > VALUE_WIDTH:
            text = text[: VALUE_WIDTH - 1] + "…"
        parts.append(f"{key}={text}")
    joined = ", ".join(parts)
    return joined if whole or len(joined) <= DETAILS_WIDTH else joined[: DETAILS_WIDTH - 1] + "…"


@app.command("log")
def log_(
    action: str | None = typer.Option(
        None, "--action", help="Only this action, or an fnmatch pattern (data.*)."
    ),
    target: str | None = typer.Option(
        None, "--target", help="Only this target or pattern; a name without @ matches all versions."
    ),
    n: int = typer.Option(20, "-n", "--limit", min=1, help="How many of the last entries."),
    as_json: bool = JSON_OPTION,
) -> None:
    """Show the last entries of the audit log (oldest first)."""
    log = _log()
    entries = log.tail(n, action=action, target=target)
    if as_json:
        print_json([asdict(e) for e in entries])
        return
    if not entries:
        console.print(f"no audit entries in {log.path}", markup=False)
        return
    whole = piped()
    rows = [
        (
            e.seq,
            datetime.fromtimestamp(e.ts, UTC).strftime("%Y-%m-%d %H:%M:%S"),
            e.user,
            e.action,
            e.target,
            _short(e.details, whole),
        )
        for e in entries
    ]
    columns = ("seq", "time (UTC)", "user", "action", "target", "details")
    table = listing(f"audit log {log.path}", columns, rows, right=("seq",))
    table.columns[1].no_wrap = True
    table.columns[5].overflow = "fold"
    print_table(table, console)


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
