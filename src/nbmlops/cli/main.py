"""``nbmlops``: one typer app; each command parses, calls the core, prints."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys

import typer
from rich.console import Console
from rich.table import Table

from nbmlops.exceptions import NbmlopsError

app = typer.Typer(
    name="nbmlops",
    help="Jupyter-native MLOps on MLflow: tracked cells, journal sync, the MLflow UI.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
console = Console()
err_console = Console(stderr=True)


def _settings():
    from nbmlops.config import load_settings

    return load_settings()


@app.command()
def sync() -> None:
    """Ship every run still in the journal to MLflow and report what was shipped.

    Runs left open by a process that died are closed as FAILED (killed).
    """
    from nbmlops.api import sync_journal
    from nbmlops.core.tracking.journal import Journal

    s = _settings()
    with console.status(f"shipping journal to {s.resolved_tracking_uri}"):
        report = sync_journal(s)
    pending = Journal(s.journal_dir).pending_summary()
    table = Table(title="nbmlops sync", show_header=False)
    table.add_row("store", s.resolved_tracking_uri)
    table.add_row("segments replayed", str(report.segments))
    table.add_row("runs shipped", str(report.runs_finished))
    table.add_row("  of which closed as killed", str(report.runs_killed))
    table.add_row("metric values shipped", str(report.metrics))
    table.add_row("torn journal lines skipped", str(report.torn_lines))
    table.add_row("still pending (live processes' or failed)", str(pending["pending"]))
    console.print(table)
    for err in report.errors:
        err_console.print(f"[red]not shipped:[/red] {err}")
    if report.errors:
        raise typer.Exit(1)


@app.command()
def status() -> None:
    """Show the store, the journal and what is waiting to be shipped."""
    from nbmlops.core.tracking.journal import Journal

    s = _settings()
    pending = Journal(s.journal_dir).pending_summary()
    table = Table(show_header=False)
    table.add_row("project", str(s.project_dir))
    table.add_row("tracking store", s.resolved_tracking_uri)
    table.add_row("artifacts", s.resolved_artifact_location)
    table.add_row("journal", str(s.journal_dir))
    table.add_row("journal segments", str(pending["segments"]))
    table.add_row("runs not yet in MLflow", str(pending["pending"]))
    table.add_row("  of which still open", str(pending["open"]))
    console.print(table)


@app.command()
def config() -> None:
    """Print the effective settings (nbmlops.yaml + NBMLOPS_* variables) as JSON."""
    s = _settings()
    data = s.model_dump(mode="json")
    data["resolved_tracking_uri"] = s.resolved_tracking_uri
    data["resolved_artifact_location"] = s.resolved_artifact_location
    console.print_json(json.dumps(data))


def _free_port(preferred: int) -> int:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", preferred))
            return preferred
        except OSError:
            sock.bind(("127.0.0.1", 0))
            return sock.getsockname()[1]


@app.command()
def ui(
    port: int = typer.Option(5000, help="Port on 127.0.0.1 (a free one is used if taken)."),
    background: bool = typer.Option(False, "--background", help="Start it and return."),
) -> None:
    """Start the MLflow UI on this project's store, on 127.0.0.1."""
    from nbmlops.core.tracking.store import open_client

    s = _settings()
    open_client(s)  # creates the SQLite schema once, safely, before the UI touches it
    port = _free_port(port)
    url = f"http://127.0.0.1:{port}"
    cmd = [
        sys.executable,
        "-m",
        "mlflow",
        "ui",
        "--backend-store-uri",
        s.resolved_tracking_uri,
        "--default-artifact-root",
        s.resolved_artifact_location,
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
    ]
    s.home_dir.mkdir(parents=True, exist_ok=True)
    info = s.home_dir / "ui.json"
    with open(s.home_dir / "ui.log", "ab") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    info.write_text(
        json.dumps({"pid": proc.pid, "url": url, "tracking_uri": s.resolved_tracking_uri})
    )
    console.print(
        f"MLflow UI for {s.resolved_tracking_uri}\n  {url}  (log: {s.home_dir / 'ui.log'})"
    )
    if background:
        return
    try:
        proc.wait()
    except KeyboardInterrupt:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(10)
    finally:
        info.unlink(missing_ok=True)


def main() -> None:
    try:
        app()
    except NbmlopsError as err:
        print(f"error: {err}", file=sys.stderr)  # one unwrapped paragraph, paths intact
        sys.exit(2)


if __name__ == "__main__":
    main()
