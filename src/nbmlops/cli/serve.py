"""``nbmlops serve`` and ``nbmlops deploy export``: parse, call the serving core, print.

Mounted in :mod:`nbmlops.cli.main` with ``app.command("serve")(serve.serve)`` and
``app.add_typer(serve.deploy_app, name="deploy")``. Errors are NbmlopsErrors (what, where,
how to fix); ``nbmlops.cli.main.main`` prints them and exits 2.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import TYPE_CHECKING

import typer
from rich.console import Console

if TYPE_CHECKING:
    from nbmlops.api.serving import GatewayServer

console = Console(highlight=False)
err_console = Console(stderr=True, highlight=False)

deploy_app = typer.Typer(
    help="Export registered model versions for serving elsewhere (KServe, Docker).",
    no_args_is_help=True,
)

_SIZE_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(b|kb|kib|k|mb|mib|m|gb|gib|g)?\s*$", re.IGNORECASE)
_UNITS = {
    None: 1, "b": 1, "k": 1024, "kb": 1000, "kib": 1024,
    "m": 1 << 20, "mb": 1_000_000, "mib": 1 << 20,
    "g": 1 << 30, "gb": 1_000_000_000, "gib": 1 << 30,
}  # fmt: skip


def parse_size(text: str) -> int:
    """``1MiB``, ``512KiB``, ``2MB`` or a number of bytes."""
    from nbmlops.exceptions import UsageError

    match = _SIZE_RE.match(text)
    if not match:
        raise UsageError(
            f"Cannot read the size {text!r}", fix="Write e.g. 1MiB, 512KiB or 1048576."
        )
    number, unit = match.groups()
    size = int(float(number) * _UNITS[unit.lower() if unit else None])
    if size < 1:
        raise UsageError(f"The size {text!r} must be at least one byte", fix="E.g. 1MiB.")
    return size


def serve(
    model: str = typer.Argument(
        ...,
        help="NAME@alias (followed: a moved alias is swapped in without a restart) or "
        "NAME@VERSION. NAME alone means NAME@champion.",
    ),
    port: int = typer.Option(8000, "--port", "-p", help="Port on 127.0.0.1 (0 picks a free one)."),
    canary: list[str] = typer.Option(
        [],
        "--canary",
        help="NAME@alias:PERCENT gets that share of traffic, e.g. churn@challenger:10.",
    ),
    shadow: list[str] = typer.Option(
        [],
        "--shadow",
        help="NAME@alias or NAME@VERSION scored on the same input and logged, never returned.",
    ),
    poll_seconds: float = typer.Option(
        1.0, "--poll-seconds", help="How often aliases are looked up again (0: never)."
    ),
    max_body: str = typer.Option("1MiB", "--max-body", help="Largest request body accepted."),
    read_timeout: float = typer.Option(
        10.0, "--read-timeout", help="Seconds a request has to arrive in full."
    ),
    allow_host: list[str] = typer.Option(
        [], "--allow-host", help="Another Host name to accept besides 127.0.0.1 and localhost."
    ),
    pyfunc: bool = typer.Option(
        False, "--pyfunc", help="Predict through mlflow.pyfunc even for scikit-learn models."
    ),
    log_level: str = typer.Option("info", "--log-level", help="debug, info, warning or error."),
    max_connections: int = typer.Option(
        1000,
        "--max-connections",
        min=1,
        help="Connections served at once; beyond that requests get 503 (bounds memory).",
    ),
) -> None:
    """Serve a registered model on 127.0.0.1: POST /predict, GET /health, GET /metrics."""
    import gc

    # Start-up is almost all imports (scikit-learn, scipy, pandas, skops, uvicorn): some
    # million objects, none of them garbage. The cyclic collector would walk them ~15 times
    # for nothing (a sixth of start-up); it is switched back on once the gateway is ready.
    gc.disable()
    try:
        server = _start_gateway(
            model, port, canary, shadow, poll_seconds, max_body, read_timeout, allow_host,
            pyfunc, log_level, max_connections,
        )  # fmt: skip
    finally:
        gc.enable()
    # What start-up left is long-lived: frozen, later collections skip it (shorter pauses).
    gc.freeze()

    def announce() -> None:
        console.print(f"serving on {server.url}  (POST /predict, GET /health, GET /metrics)")

    server.run(announce)  # until Ctrl-C / SIGTERM; then drains requests and flushes the log


def _start_gateway(
    model: str,
    port: int,
    canary: list[str],
    shadow: list[str],
    poll_seconds: float,
    max_body: str,
    read_timeout: float,
    allow_host: list[str],
    pyfunc: bool,
    log_level: str,
    max_connections: int = 1000,
) -> GatewayServer:
    """A gateway with its models loaded, its socket bound and its routes printed.

    The order is what makes it fast. The socket is bound first (a taken port fails at once).
    Then the registry helper process starts, asked about what the serving cache cannot
    answer: it imports MLflow and asks on the other core while this process imports the
    models' libraries, before the app's own modules (see ``preload_model_libraries``).
    """
    from nbmlops.api.serving import (
        ModelRef,
        bind_loopback,
        parse_weighted,
        preload_model_libraries,
        start_registry_helper,
    )
    from nbmlops.config import load_settings

    logging.basicConfig(
        level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    max_body_bytes = parse_size(max_body)
    refs = [
        ModelRef.parse(model),
        *(parse_weighted(c)[0] for c in canary),
        *(ModelRef.parse(s) for s in shadow),
    ]
    settings = load_settings()
    sock = bind_loopback("127.0.0.1", port)
    gateway = None
    try:
        start_registry_helper(settings, refs)
        preload_model_libraries()

        from nbmlops.api.serving import Gateway, GatewayConfig, GatewayServer

        config = GatewayConfig(
            max_body_bytes=max_body_bytes,
            read_timeout=read_timeout,
            allowed_hosts=tuple(allow_host),
            poll_seconds=poll_seconds,
            direct=not pyfunc,
            max_connections=max_connections,
        )
        gateway = Gateway(settings, model, list(canary), list(shadow), config)
        server = GatewayServer(gateway, sock=sock, log_level=log_level.lower())
        gateway.start()
    except BaseException:
        sock.close()
        if gateway is not None:
            gateway.close()
        raise
    table = gateway.router.table
    for route in (*table.routes, *table.shadows):
        share = f"{route.percent:g}%" if route.kind != "shadow" else "logged only"
        console.print(
            f"{route.kind:<7} {route.ref} -> version {route.model.version} ({share}, "
            f"{route.model.flavor}, loaded in {route.model.load_seconds:.2f} s)"
        )
    if not gateway.router.confirmed:
        console.print("started from the serving cache; asking the registry to confirm")
    console.print(f"prediction log: {gateway.predlog.db_path}")
    return server


@deploy_app.command("export")
def deploy_export(
    model: str = typer.Argument(..., help="NAME@alias or NAME@VERSION."),
    target: str = typer.Option(..., "--target", "-t", help="kserve or docker."),
    out: Path = typer.Option(..., "--out", "-o", help="Folder to write into."),
    canary: str = typer.Option(
        None, "--canary", help="KServe only: NAME@alias:PERCENT rolled out as a canary."
    ),
    storage_uri: str = typer.Option(
        None,
        "--storage-uri",
        help="KServe only: where the cluster reads the model "
        "(default: the version's artifact location).",
    ),
    force: bool = typer.Option(False, "--force", help="Overwrite files already in --out."),
) -> None:
    """Write a KServe InferenceService manifest or a Docker build folder for a model version."""
    from nbmlops.api.serving import export_deployment
    from nbmlops.config import load_settings

    result = export_deployment(
        load_settings(),
        model,
        target.lower(),
        out,
        canary=canary,
        storage_uri=storage_uri,
        force=force,
    )
    for path in result.files:
        console.print(f"wrote {path}")
    for note in result.notes:
        console.print(f"note: {note}")
