"""What monitoring reads from a serving gateway: a classifier's class probabilities logged
beside its predictions, samples of the process's CPU and memory, and prediction logs written
before the probabilities column existed."""

from __future__ import annotations

import json
import os
import sqlite3
import time

import numpy as np
import pytest

from nbmlops.core.serving.predlog import PredictionLog, predictions_dir, read_prediction_log
from nbmlops.core.serving.resources import read_resources
from tests.core.serving.conftest import frame, records


def test_class_probabilities_and_resource_samples(serve, store):
    name = store.register()
    running = serve(f"{name}@champion", resource_seconds=0.2)
    client = running.http()
    sent = {}
    for i in range(3):
        rows = frame(1 + i, seed=40 + i)
        assert client.post(records(rows), {"X-Request-Id": f"p{i}"}).status == 200
        sent[f"p{i}"] = rows
    assert client.post([{"f0": 1.0}], {"X-Request-Id": "bad"}).status == 422
    assert running.gateway.flush()
    log = read_prediction_log(running.settings.home_dir).set_index("request_id")
    est = store.estimators["a"]
    for rid, rows in sent.items():
        proba = log.loc[rid, "proba"]
        assert proba["classes"] == [0, 1]
        np.testing.assert_allclose(proba["p"], est.predict_proba(rows), rtol=1e-12)
        assert log.loc[rid, "outputs"] == store.expected("a", rows)  # predictions unchanged
    assert log.loc["bad", "proba"] is None

    deadline = time.monotonic() + 60
    while len(samples := read_resources(running.settings.home_dir)) < 2:
        assert time.monotonic() < deadline, "no resource samples within 60 s"
        time.sleep(0.1)
    assert set(samples.pid) == {os.getpid()}  # this process serves the gateway here
    assert (samples.rss_bytes > 10 * 2**20).all() and (samples.cpu_percent >= 0).all()
    assert samples.time.is_monotonic_increasing


OLD_SCHEMA = """
CREATE TABLE predictions (
    request_id TEXT NOT NULL, route TEXT NOT NULL, ts REAL NOT NULL, model TEXT,
    version INTEGER, status INTEGER NOT NULL, latency_ms REAL, inputs TEXT, outputs TEXT,
    error TEXT, PRIMARY KEY (request_id, route)
);
"""


@pytest.mark.parametrize("writer_opens_it", [False, True])
def test_a_log_from_before_the_probabilities_column_still_reads(tmp_path, writer_opens_it):
    folder = predictions_dir(tmp_path)
    folder.mkdir(parents=True)
    conn = sqlite3.connect(folder / "predictions.db")
    conn.executescript(OLD_SCHEMA)
    with conn:
        conn.execute(
            "INSERT INTO predictions VALUES ('old', 'main', 1.0, 'm', 1, 200, 2.0, '[{}]', "
            "'[1]', NULL)"
        )
    conn.close()
    old_line = ["spooled", "main", 2.0, "m", 1, 200, 2.0, "[{}]", "[0]", None]
    (folder / "spool-999999999-old.jsonl").write_text(json.dumps(old_line) + "\n")
    if writer_opens_it:
        log = PredictionLog(tmp_path).start()
        log.record(
            "new", "main", "m", 1, 200, 1.0, [{}], [1], proba={"classes": [0, 1], "p": [[0.3, 0.7]]}
        )
        log.close()
    frame_ = read_prediction_log(tmp_path).set_index("request_id")
    assert frame_.loc["old", "proba"] is None and frame_.loc["old", "outputs"] == [1]
    assert frame_.loc["spooled", "proba"] is None and frame_.loc["spooled", "outputs"] == [0]
    if writer_opens_it:
        assert frame_.loc["new", "proba"] == {"classes": [0, 1], "p": [[0.3, 0.7]]}
