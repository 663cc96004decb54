"""Fixtures of the server lane: a real PostgreSQL and a real ``mlflow server`` on 127.0.0.1.

Both are session-scoped. A missing PostgreSQL makes the tests fail (never skip) with the
``make system`` hint from ``tests.services.PG_MISSING_MESSAGE``.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator

import pytest

from tests.services import MlflowServer, PostgresServer

# The client side (this process) must not phone home either: `import mlflow` starts a
# telemetry client unless disabled, and pytest's own PYTEST_CURRENT_TEST marker is not set yet
# while test modules are being collected. Must run before the test modules import mlflow.
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("DO_NOT_TRACK", "true")

# Start-up durations in seconds, shown in the terminal summary.
STARTUP_SECONDS: dict[str, float] = {}


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    server = PostgresServer()
    began = time.monotonic()
    try:
        server.start()
        STARTUP_SECONDS["postgres"] = time.monotonic() - began
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def mlflow_server(
    postgres_server: PostgresServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[MlflowServer]:
    """``mlflow server`` on its own database of ``postgres_server``.

    Tests may ``stop()``/``start()``/``restart()`` it; they must leave it running.
    ``backend_store_uri`` is the plain ``postgresql://`` URL, usable with ``psycopg2.connect``.
    """
    base = tmp_path_factory.mktemp("mlflow-server")
    began = time.monotonic()
    db_url = postgres_server.create_database("mlflow_tracking")
    server = MlflowServer(db_url, base / "artifacts", log_path=base / "mlflow-server.log")
    try:
        server.start()
        STARTUP_SECONDS["mlflow"] = time.monotonic() - began
        yield server
    finally:
        server.stop()


def pytest_terminal_summary(terminalreporter) -> None:
    if STARTUP_SECONDS:
        parts = ", ".join(f"{name} {secs:.1f}s" for name, secs in STARTUP_SECONDS.items())
        terminalreporter.write_line(f"server lane start-up: {parts}")
