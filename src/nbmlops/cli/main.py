"""``nbmlops``: one typer app; each command parses, calls the core, prints."""

from __future__ import annotations

import gc
import json
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import typer
from rich.table import Table

from nbmlops.cli.output import JSON_OPTION, Output
from nbmlops.exceptions import NbmlopsError

app = typer.Typer(
    name="nbmlops",
    help="Jupyter-native MLOps on MLflow: tracked cells, journal sync, the MLflow UI.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
console = Output()
err_console = Output(stderr=True)


def _settings():
    from nbmlops.config import load_settings

    return load_settings()


@app.command()
def sync() -> None:
    """Ship every run still in the journal to MLflow and report what was shipped.

    Runs left open by a process that died are closed as FAILED (killed).
    """
    from nbmlops.api.tracking import pending_summary, sync_journal

    s = _settings()
    with console.status(f"shipping journal to {s.resolved_tracking_uri}"):
        report = sync_journal(s)
    pending = pending_summary(s)
    table = Table(title="nbmlops sync", show_header=False)
    table.add_row("store", s.resolved_tracking_uri)
    table.add_row("segments replayed", str(report.segments))
    table.add_row("runs shipped", str(report.runs_finished))
    table.add_row("  of which closed as killed", str(report.runs_killed))
    table.add_row("metric values shipped", str(report.metrics))
    table.add_row("torn journal lines skipped", str(report.torn_lines))
    table.add_row("malformed journal lines quarantined", str(report.quarantined))
    table.add_row("still pending (live processes' or failed)", str(pending["pending"]))
    console.print(table)
    _say_quarantined(pending)
    for err in report.errors:
        err_console.print(f"[red]not shipped:[/red] {err}")
    if report.errors:
        raise typer.Exit(1)


@app.command()
def status() -> None:
    """Show the store, the journal and what is waiting to be shipped."""
    from nbmlops.api.tracking import pending_summary

    s = _settings()
    pending = pending_summary(s)
    table = Table(show_header=False)
    table.add_row("project", str(s.project_dir))
    table.add_row("tracking store", s.resolved_tracking_uri)
    table.add_row("artifacts", s.resolved_artifact_location)
    table.add_row("journal", str(s.journal_dir))
    table.add_row("journal segments", str(pending["segments"]))
    table.add_row("runs not yet in MLflow", str(pending["pending"]))
    table.add_row("  of which still open", str(pending["open"]))
    table.add_row("malformed journal lines quarantined", str(pending["quarantined"]))
    console.print(table)
    _say_quarantined(pending)


def _say_quarantined(pending: dict) -> None:
    if pending["quarantined"]:
        console.print(
            f"{pending['quarantined']} malformed journal line(s) were set aside, each with the "
            f"reason, in {pending['quarantine_dir']}; the other records ship as usual.",
            soft_wrap=True,
        )


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
    background: bool = typer.Option(
        False, "--background", help="Start it, wait until it answers, and return."
    ),
    timeout: float = typer.Option(
        600.0, help="Seconds to wait for the UI to answer before giving up."
    ),
) -> None:
    """Start the MLflow UI on this project's store, on 127.0.0.1; print its runs page's URL
    once it answers."""
    from nbmlops.api.experiments import runs_page
    from nbmlops.api.tracking import open_store

    s = _settings()
    open_store(s)  # creates the SQLite schema once, safely, before the UI touches it
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
    ui_log = s.home_dir / "ui.log"

    def _stop(signum, frame) -> None:
        raise KeyboardInterrupt

    # The UI runs in a session of its own (so a closed terminal does not kill a --background
    # UI), so no signal sent to this process reaches it: SIGTERM and SIGHUP end this process
    # the way Ctrl-C does, and every way out stops the UI's whole process group (mlflow ui
    # runs uvicorn, which runs its workers). Installed before the UI starts, so a stop while
    # it is still starting stops it too.
    previous = {sig: signal.signal(sig, _stop) for sig in (signal.SIGTERM, signal.SIGHUP)}
    proc: subprocess.Popen | None = None
    keep = False
    try:
        with open(ui_log, "ab") as log:
            proc = subprocess.Popen(
                cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )
        info.write_text(
            json.dumps({"pid": proc.pid, "url": url, "tracking_uri": s.resolved_tracking_uri})
        )
        page = runs_page(s, url)
        _wait_until_it_answers(proc, url, ui_log, timeout)
        print(f"MLflow UI for {s.resolved_tracking_uri}\n  {page}\n  (log: {ui_log})", flush=True)
        if background:
            keep = True
            return
        proc.wait()
    except KeyboardInterrupt:
        pass
    finally:
        if proc is not None and not keep:
            err_console.print(f"stopping the MLflow UI (process group {proc.pid})", highlight=False)
            _stop_process_group(proc)
            info.unlink(missing_ok=True)
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _wait_until_it_answers(proc: subprocess.Popen, url: str, log: Path, timeout: float) -> None:
    """Poll ``url``/health until it answers 200, showing how long it has been starting (a
    spinner on a terminal, a line every 10 s otherwise); NbmlopsError if the UI exits or
    ``timeout`` passes."""
    import time
    import urllib.request

    began = time.monotonic()
    say = f"starting the MLflow UI on {url} (pid {proc.pid})"
    err_console.print(f"{say} ...", highlight=False)
    next_line = began + 10
    with err_console.status(say) as status:
        while True:
            waited = time.monotonic() - began
            if proc.poll() is not None:
                tail = log.read_text(errors="replace")[-1500:] if log.exists() else ""
                raise NbmlopsError(
                    f"The MLflow UI exited with code {proc.returncode} while starting",
                    where=str(log),
                    fix=f"Read its log; the end of it says:\n{tail}",
                )
            if waited > timeout:
                raise NbmlopsError(
                    f"The MLflow UI did not answer within {timeout:g} s",
                    where=str(log),
                    fix="Read its log, or give it longer with --timeout.",
                )
            try:
                with urllib.request.urlopen(url + "/health", timeout=2) as resp:
                    if resp.status == 200:
                        err_console.print(f"the MLflow UI answers after {waited:.0f} s")
                        return
            except OSError:
                pass
            status.update(f"{say}: {waited:.0f} s")
            if not err_console.is_terminal and time.monotonic() >= next_line:
                err_console.print(f"  still starting ({waited:.0f} s)", highlight=False)
                next_line += 10
            time.sleep(0.25)


def _stop_process_group(proc: subprocess.Popen, timeout: float = 10.0) -> None:
    """SIGTERM to the process group ``proc`` leads, SIGKILL to what is left after ``timeout``."""
    import time

    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            break
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                try:
                    os.killpg(proc.pid, 0)  # members left after the leader?
                except ProcessLookupError:
                    return
            time.sleep(0.05)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        pass


data_app = typer.Typer(
    help="Versioned data: commit, ls, log, show, diff, checkout.", no_args_is_help=True
)
app.add_typer(data_app, name="data")


def _print_versions(title: str, versions, as_json: bool) -> None:
    import datetime as dt

    from nbmlops.cli.output import listing, print_json, print_table

    if as_json:
        print_json([{"ref": v.ref, **v.to_dict()} for v in versions])
        return
    columns = ("version", "kind", "shape", "digest", "bytes", "author", "created (UTC)", "message")
    rows = [
        (
            v.ref,
            v.kind,
            "x".join(map(str, v.shape)),
            v.digest[:12],
            v.nbytes,
            v.author,
            dt.datetime.fromtimestamp(v.created, dt.UTC).strftime("%Y-%m-%d %H:%M:%S"),
            v.message,
        )
        for v in versions
    ]
    print_table(listing(title, columns, rows), console)


@data_app.command("commit")
def data_commit(
    path: str = typer.Argument(..., help="A local file or folder."),
    name: str = typer.Option(None, "--name", "-n", help="Dataset name (default: the file name)."),
    message: str = typer.Option("", "-m", "--message", help="What this version is."),
) -> None:
    """Store a version of a file or folder (frames and arrays: use %data or nbmlops.data)."""
    from nbmlops.api import data

    if not os.path.exists(path):
        raise NbmlopsError(f"No file or folder {path!r}", fix="Give a path that exists.")
    result = data.commit(path, name, message)
    v = result.version
    state = "new version" if result.created else "unchanged: same content as"
    console.print(f"{state} {v.ref} (#{v.digest[:12]}, {result.bytes_written} bytes written)")


@data_app.command("ls")
def data_ls(as_json: bool = JSON_OPTION) -> None:
    """Every dataset and its latest version."""
    from nbmlops.api import data

    _print_versions("datasets", data.ls(), as_json)


@data_app.command("log")
def data_log(name: str, as_json: bool = JSON_OPTION) -> None:
    """All versions of a dataset."""
    from nbmlops.api import data

    _print_versions(f"versions of {name}", data.log(name), as_json)


@data_app.command("show")
def data_show(ref: str) -> None:
    """One version, with its schema and profile, as JSON."""
    from nbmlops.api import data

    console.print_json(json.dumps(data.show(ref).to_dict(), default=str))


@data_app.command("diff")
def data_diff(
    a: str,
    b: str,
    key: str = typer.Option(None, help="Comma-separated key columns."),
    as_json: bool = typer.Option(False, "--json", help="One JSON document."),
) -> None:
    """What changed between two versions of a frame (rows matched by key, by a shared unique
    index, or by content)."""
    from nbmlops.api import data

    keys = [k.strip() for k in key.split(",")] if key else None
    result = data.diff(a, b, key=keys)
    if as_json:
        print(json.dumps(result.to_dict(), default=str))
    else:
        print(result.summary())


@data_app.command("checkout")
def data_checkout(
    ref: str,
    dest: str = typer.Argument(None, help="Where to write it (files and folders)."),
) -> None:
    """Write a version to disk: files and folders as they were, frames as Parquet."""
    from nbmlops.api import data

    version = data.show(ref)
    if version.kind in ("file", "folder"):
        path = data.checkout(ref, dest)
    else:
        path = Path(dest or f"{version.name}-{version.version}.parquet")
        value = data.load(ref)
        frame = value.to_frame() if hasattr(value, "to_frame") else value
        if not hasattr(frame, "to_parquet"):
            import numpy as np

            path = path.with_suffix(".npy")
            np.save(path, frame, allow_pickle=False)
        else:
            frame.to_parquet(path)
    console.print(f"{version.ref} written to {path}")


@app.command()
def lineage(
    what: str = typer.Argument(
        ...,
        help="NAME@k, a registered model (NAME, NAME@alias, models:/NAME/VERSION), an MLflow "
        "run id or its first 8 characters, runs:/ID/NAME or a logged model id.",
    ),
    png: Path = typer.Option(None, "--png", help="Also draw the graph into this PNG file."),
) -> None:
    """Upstream and downstream of a data version, run or model."""
    from nbmlops.api.lineage import lineage_graph, resolve

    settings = _settings()
    graph = lineage_graph(settings)
    view = graph.view(resolve(graph, what, settings=settings))
    console.print(graph.to_text(view))
    if png is not None:
        graph.draw(view).savefig(png, dpi=120)
        console.print(f"drawn to {png}")


def _mount_subcommands() -> None:
    from nbmlops.cli import audit, monitor, pipeline, registry, replay, reproduce, runs, sweep
    from nbmlops.cli import serve as serve_cli

    app.command("run", context_settings=pipeline.RUN_CONTEXT)(pipeline.run)
    app.add_typer(pipeline.app, name="pipeline", help="Pipelines of notebooks: run, show.")
    app.command("reproduce")(reproduce.reproduce)
    app.command("export-notebook")(replay.export_notebook)
    app.command("sweep")(sweep.sweep)

    app.command("serve")(serve_cli.serve)
    app.add_typer(serve_cli.deploy_app, name="deploy", help="Export deployments: KServe, Docker.")
    app.add_typer(runs.app, name="runs", help="Runs of an experiment: ls.")
    app.add_typer(audit.app, name="audit", help="The hash-chained audit log: log, verify.")
    app.add_typer(
        monitor.app,
        name="monitor",
        help="Drift, data quality, performance and service health of served models.",
    )
    app.add_typer(
        registry.app,
        name="model",
        help="The model registry: register, promote, rollback, approve, versions, history.",
    )


_mount_subcommands()


def main() -> None:
    try:
        app()
    except NbmlopsError as err:
        print(f"error: {err}", file=sys.stderr)  # one unwrapped paragraph, paths intact
        sys.exit(2)
    finally:
        # The interpreter's last collection walks every object MLflow, scikit-learn and
        # pandas created (about a second after `nbmlops run`); at exit none of it is garbage
        # worth finding. atexit handlers still run.
        gc.freeze()


if __name__ == "__main__":
    main()
