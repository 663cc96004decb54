"""The prediction log: one row per request, and a slow or dead sink never slows serving
(RELIABILITY 22)."""

from __future__ import annotations

import sqlite3
import statistics
import time

import pandas as pd
import pytest

from nbmlops.core.serving.predlog import PredictionLog, read_prediction_log
from tests.core.serving.conftest import COLUMNS, frame, records


def test_one_row_per_request_with_what_a_monitor_needs(serve, store):
    name = store.register()
    running = serve(f"{name}@champion")
    client = running.http()
    sent = {}
    for i in range(30):
        rows = frame(1 + i % 3, seed=i)
        body = records(rows) if i % 5 else [{"f0": "bad"}]
        reply = client.post(body, {"X-Request-Id": f"r{i}"})
        sent[f"r{i}"] = (reply.status, body, rows)
    assert running.gateway.flush()

    log = read_prediction_log(running.settings.home_dir)
    assert sorted(log.request_id) == sorted(sent)
    assert list(log.columns[:10]) == [
        "request_id", "route", "ts", "model", "version", "status", "latency_ms",
        "inputs", "outputs", "error",
    ]  # fmt: skip
    for row in log.itertuples():
        status, body, rows = sent[row.request_id]
        assert row.status == status and row.model == name and row.version == 1
        assert row.route == "main" and row.latency_ms > 0
        if status == 200:
            assert row.inputs == body and row.outputs == store.expected("a", rows)
            assert row.error is None
        else:
            assert "f1" in row.error and row.outputs is None
    assert log.time.is_monotonic_increasing


def _latencies(client, n: int, seconds: float = 0.0) -> list[float]:
    body = records(frame(1))
    out = []
    until = time.monotonic() + seconds
    while len(out) < n or time.monotonic() < until:
        began = time.perf_counter()
        assert client.post(body).status == 200
        out.append(time.perf_counter() - began)
    return out


def _p95(values: list[float]) -> float:
    return statistics.quantiles(values, n=20)[-1]


def _hold_write_lock(db):
    conn = sqlite3.connect(db, timeout=5)
    conn.execute("BEGIN IMMEDIATE")  # another writer holds the database
    return conn


@pytest.mark.slow
def test_a_slow_sink_does_not_slow_serving(serve, store):
    name = store.register()
    running = serve(f"{name}@champion", predlog_busy_timeout=10.0)
    client = running.http()
    baseline = _latencies(client, 200)
    assert running.gateway.flush()
    predlog = running.gateway.predlog

    lock = _hold_write_lock(predlog.db_path)
    try:
        during = _latencies(client, 300, seconds=1.5)  # the writer waits on the lock
        assert predlog.queued > 0 or predlog.unfinished > 0
    finally:
        lock.rollback()
        lock.close()
    assert running.gateway.flush(20)

    assert _p95(during) < _p95(baseline) * 3 + 0.005, (_p95(baseline), _p95(during))
    total = len(baseline) + len(during)
    assert predlog.written == total and predlog.spooled == 0 and predlog.dropped == 0
    assert len(read_prediction_log(running.settings.home_dir)) == total


@pytest.mark.slow
def test_a_dead_sink_spools_rows_and_replays_them(serve, store):
    name = store.register()
    running = serve(f"{name}@champion", predlog_busy_timeout=0.05)
    client = running.http()
    _latencies(client, 20)
    assert running.gateway.flush()
    predlog = running.gateway.predlog

    lock = _hold_write_lock(predlog.db_path)
    try:
        for _ in range(5):
            _latencies(client, 20)
            time.sleep(0.1)
        assert running.gateway.flush()
        assert predlog.spooled > 0
        assert list(predlog.folder.glob("spool-*.jsonl"))
        # readers see spooled rows too, while the database is still locked
        assert len(read_prediction_log(running.settings.home_dir)) == 120
    finally:
        lock.rollback()
        lock.close()
    deadline = time.monotonic() + 10
    while predlog.replayed < predlog.spooled and time.monotonic() < deadline:
        time.sleep(0.05)

    assert predlog.replayed == predlog.spooled and predlog.dropped == 0
    assert not list(predlog.folder.glob("spool-*.jsonl"))
    conn = sqlite3.connect(predlog.db_path)
    assert conn.execute("SELECT COUNT(*) FROM predictions").fetchone()[0] == 120
    conn.close()
    metrics = running.get("/metrics").body.decode()
    assert f'nbmlops_predlog_rows_total{{outcome="spooled"}} {float(predlog.spooled)}' in metrics
    assert f'nbmlops_predlog_rows_total{{outcome="replayed"}} {float(predlog.replayed)}' in metrics
    assert "nbmlops_predlog_sink_errors_total" in metrics


def test_a_full_queue_drops_and_counts_instead_of_waiting(tmp_path):
    log = PredictionLog(tmp_path, queue_size=3)  # writer not started: nothing drains
    began = time.perf_counter()
    accepted = [log.record(f"r{i}", "main", "m", 1, 200, 1.0, [{c: 1.0 for c in COLUMNS}], [1])
                for i in range(10)]  # fmt: skip
    assert time.perf_counter() - began < 0.05
    assert accepted == [True] * 3 + [False] * 7
    assert log.dropped == 7
    log.start()
    assert log.flush(5)
    log.close()
    assert len(read_prediction_log(tmp_path)) == 3


def test_spool_left_by_a_dead_process_is_replayed(tmp_path):
    folder = tmp_path / "predictions"
    folder.mkdir()
    row = ["gone-1", "main", 1.0, "m", 1, 200, 0.5, "[]", "[1]", None]
    (folder / "spool-999999999-deadbeef.jsonl").write_text(
        __import__("json").dumps(row) + "\n" + '["torn'
    )
    log = PredictionLog(tmp_path, retry_seconds=0.05).start()
    deadline = time.monotonic() + 5
    while log.replayed < 1 and time.monotonic() < deadline:
        time.sleep(0.02)
    log.close()
    frame_ = read_prediction_log(tmp_path)
    assert list(frame_.request_id) == ["gone-1"] and frame_.outputs[0] == [1]
    assert not list(folder.glob("spool-*"))


def test_rows_read_back_as_they_were_recorded(tmp_path):
    log = PredictionLog(tmp_path).start()
    rows = [
        ("r-1", "main", 1700000000.123456, "churn", 3, 200, 0.731, [{"f0": 1.5, "name": "Zoë 😀"}],
         [0.25], None),
        ("r-2", "shadow", 1700000001.5, "churn", 4, 422, 12.0, [{"f0": "x"}], None,
         "Field 'f0': expected a number, got \"x\""),
        ("r-3", "canary", 1700000002.0, "churn", None, 500, 1e-3, {"weird": [1, [2, {"3": None}]]},
         "a string output", "boom"),
    ]  # fmt: skip
    for rid, route, ts, model, version, status, ms, inputs, outputs, error in rows:
        assert log.record(rid, route, model, version, status, ms, inputs, outputs, error, ts=ts)
    assert log.flush(5)
    log.close()

    read = read_prediction_log(tmp_path)
    got = [
        (r.request_id, r.route, r.ts, r.model, None if r.version is pd.NA else r.version,
         r.status, r.latency_ms, r.inputs, r.outputs, r.error)
        for r in read.itertuples()
    ]  # fmt: skip
    assert got == rows
