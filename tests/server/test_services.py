"""The server lane works: real PostgreSQL behind a real ``mlflow server``."""

from __future__ import annotations

import socket
import time
import urllib.error
import urllib.request
import uuid

import psycopg2
import pytest
from mlflow.entities import Metric, Param, RunStatus
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from tests.services import PG_MISSING_MESSAGE, MlflowServer, PostgresServer, find_pg_bindir

pytestmark = pytest.mark.server


def _health(uri: str) -> int:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(f"{uri}/health", timeout=5) as resp:
        return resp.status


def _query(db_url: str, sql: str, params: tuple = ()) -> list[tuple]:
    conn = psycopg2.connect(db_url)
    try:
        with conn.cursor() as cur:
            cur.execute(sql, params)
            return cur.fetchall()
    finally:
        conn.close()


def test_postgres_binaries_present() -> None:
    """Fails (never skips) with the ``make system`` hint when PostgreSQL is missing."""
    bindir = find_pg_bindir()  # raises RuntimeError(PG_MISSING_MESSAGE)
    assert all((bindir / tool).exists() for tool in ("initdb", "pg_ctl", "postgres"))
    assert "make system" in PG_MISSING_MESSAGE


def test_postgres_server_is_local_and_isolated(postgres_server: PostgresServer) -> None:
    assert postgres_server.url.startswith(f"postgresql://{postgres_server.user}:")
    assert f"@127.0.0.1:{postgres_server.port}/" in postgres_server.url
    name = f"iso_{uuid.uuid4().hex[:8]}"
    url = postgres_server.create_database(name)
    assert url.endswith(f"/{name}")
    assert _query(url, "SELECT current_database(), current_user") == [(name, postgres_server.user)]
    assert _query(url, "SHOW listen_addresses") == [("127.0.0.1",)]
    assert _query(url, "SHOW fsync") == [("off",)]
    postgres_server.drop_database(name)


def test_tracking_round_trip_is_stored_in_postgres(mlflow_server: MlflowServer) -> None:
    writer = MlflowClient(tracking_uri=mlflow_server.uri)
    exp_id = writer.create_experiment(f"lane-{uuid.uuid4().hex[:8]}")
    run_id = writer.create_run(exp_id, run_name="round-trip").info.run_id

    writer.log_param(run_id, "lr", "0.01")
    now = int(time.time() * 1000)
    metrics = [Metric(f"m{i % 5}", float(i), now + i, i) for i in range(500)]
    writer.log_batch(run_id, metrics=metrics, params=[Param("optimizer", "adam")])
    writer.log_text(run_id, "hello from the server lane\n", "notes/hello.txt")
    writer.set_terminated(run_id, "FINISHED")

    reader = MlflowClient(tracking_uri=mlflow_server.uri)
    run = reader.get_run(run_id)
    assert run.info.status == "FINISHED"
    assert run.info.experiment_id == exp_id
    assert run.data.params == {"lr": "0.01", "optimizer": "adam"}
    assert run.data.metrics == {f"m{k}": float(495 + k) for k in range(5)}
    history = reader.get_metric_history(run_id, "m3")
    assert [m.step for m in history] == list(range(3, 500, 5))
    assert [a.path for a in reader.list_artifacts(run_id, "notes")] == ["notes/hello.txt"]
    local = reader.download_artifacts(run_id, "notes/hello.txt")
    with open(local) as fh:
        assert fh.read() == "hello from the server lane\n"
    # Artifacts are proxied by the server into its --artifacts-destination.
    assert list(mlflow_server.artifacts_dir.rglob("hello.txt"))

    # The backend store really is PostgreSQL.
    db_url = mlflow_server.backend_store_uri
    assert db_url.startswith("postgresql://")
    rows = _query(
        db_url,
        "SELECT status, experiment_id, lifecycle_stage FROM runs WHERE run_uuid = %s",
        (run_id,),
    )
    assert rows == [("FINISHED", int(exp_id), "active")]
    assert _query(db_url, "SELECT count(*) FROM metrics WHERE run_uuid = %s", (run_id,)) == [(500,)]
    assert _query(
        db_url, "SELECT key, value FROM params WHERE run_uuid = %s ORDER BY key", (run_id,)
    ) == [
        ("lr", "0.01"),
        ("optimizer", "adam"),
    ]


def test_restart_keeps_uri_and_data(
    mlflow_server: MlflowServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    client = MlflowClient(tracking_uri=mlflow_server.uri)
    exp_id = client.create_experiment(f"restart-{uuid.uuid4().hex[:8]}")
    run_id = client.create_run(exp_id).info.run_id
    client.log_param(run_id, "before", "restart")
    client.set_terminated(run_id, RunStatus.to_string(RunStatus.FINISHED))
    uri, port = mlflow_server.uri, mlflow_server.port

    mlflow_server.stop()
    try:
        assert not mlflow_server.running
        with pytest.raises(urllib.error.URLError) as excinfo:
            _health(uri)
        assert isinstance(excinfo.value.reason, ConnectionRefusedError)
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.1", port), timeout=2).close()
        # A client against a dead tracking server fails (no retries: keep the test fast).
        monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
        monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "5")
        with pytest.raises(MlflowException):
            MlflowClient(tracking_uri=uri).get_run(run_id)
    finally:
        mlflow_server.start()
    monkeypatch.undo()

    assert mlflow_server.uri == uri and mlflow_server.port == port
    assert _health(uri) == 200
    run = MlflowClient(tracking_uri=uri).get_run(run_id)
    assert run.info.status == "FINISHED"
    assert run.data.params == {"before": "restart"}

    client.log_param(run_id, "after", "restart")
    assert MlflowClient(tracking_uri=uri).get_run(run_id).data.params == {
        "before": "restart",
        "after": "restart",
    }

    mlflow_server.restart()
    assert mlflow_server.uri == uri
    assert MlflowClient(tracking_uri=uri).get_run(run_id).data.params["after"] == "restart"
