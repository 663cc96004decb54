"""Lineage from tracked blocks: records, the graph, OpenLineage events (file and HTTP)."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.linear_model import LogisticRegression

import nbmlops
from nbmlops.core.lineage.graph import LineageGraph
from nbmlops.core.lineage.store import LineageStore
from nbmlops.core.tracking.session import get_tracker
from nbmlops.exceptions import UsageError


def three_steps() -> None:
    rng = np.random.default_rng(3)
    with nbmlops.track("load", experiment="lineage"):
        raw = pd.DataFrame({"a": rng.normal(size=120), "b": rng.normal(size=120)})
    with nbmlops.track("features", experiment="lineage"):
        X = raw.assign(ab=raw.a * raw.b)
        y = (raw.a > 0).astype(int)
    with nbmlops.track("train", experiment="lineage"):
        model = LogisticRegression().fit(X, y)
        acc = model.score(X, y)
    assert acc > 0.5
    assert get_tracker().flush(120)


def graph_of(project: Path) -> LineageGraph:
    return LineageGraph(LineageStore(project / ".nbmlops" / "lineage.db"))


def test_three_blocks_make_a_connected_lineage(project: Path):
    three_steps()
    g = graph_of(project)
    runs = {a["label"]: n for n, a in g.graph.nodes(data=True) if a["kind"] == "run"}
    assert set(runs) == {"load", "features", "train"}
    [model] = [n for n, a in g.graph.nodes(data=True) if a["kind"] == "model"]
    view = g.view(model)
    up = {g.graph.nodes[n]["label"] for n in view.upstream()}
    assert {"load", "features", "train", "raw", "X", "y"} <= up
    # asking by MLflow run id, by runs:/ URI and by logged model id all land on the same nodes
    train = g.graph.nodes[runs["train"]]
    assert g.resolve(train["run_id"]) == runs["train"]
    assert g.resolve(f"runs:/{train['run_id']}/model") == model
    assert g.resolve(g.graph.nodes[model]["model_id"]) == model
    assert g.latest_model("model") == model
    down = {g.graph.nodes[n]["label"] for n in g.view(runs["load"]).downstream()}
    assert {"raw", "features", "X", "train", "model"} <= down
    text = g.to_text(view)
    assert "upstream:" in text and "run load (FINISHED" in text
    fig = g.draw(view)
    fig.savefig(project / "lineage.png")
    assert (project / "lineage.png").read_bytes()[:4] == b"\x89PNG"


def test_unknown_things_get_a_clear_error(project: Path):
    three_steps()
    with pytest.raises(UsageError, match="NAME@k"):
        graph_of(project).resolve("no-such-thing")


def _check_event(event: dict) -> None:
    """Rebuild the event with openlineage-python's own models (their validators run)."""
    from openlineage.client.event_v2 import (
        InputDataset,
        Job,
        OutputDataset,
        Run,
        RunEvent,
        RunState,
    )
    from openlineage.client.serde import Serde

    rebuilt = RunEvent(
        eventType=RunState[event["eventType"]],
        eventTime=event["eventTime"],
        run=Run(runId=event["run"]["runId"]),
        job=Job(namespace=event["job"]["namespace"], name=event["job"]["name"]),
        inputs=[InputDataset(namespace=d["namespace"], name=d["name"]) for d in event["inputs"]],
        outputs=[OutputDataset(namespace=d["namespace"], name=d["name"]) for d in event["outputs"]],
        producer=event["producer"],
    )
    again = Serde.to_dict(rebuilt)
    for key in ("eventType", "eventTime", "producer"):
        assert again[key] == event[key]


def test_openlineage_events_in_the_default_file(project: Path):
    three_steps()
    lines = (project / ".nbmlops" / "openlineage" / "events.jsonl").read_text().splitlines()
    events = [json.loads(line) for line in lines]
    for event in events:
        _check_event(event)
    by_job: dict[str, list[str]] = {}
    for e in events:
        by_job.setdefault(e["job"]["name"], []).append(e["eventType"])
    assert by_job == {
        "lineage.load": ["START", "COMPLETE"],
        "lineage.features": ["START", "COMPLETE"],
        "lineage.train": ["START", "COMPLETE"],
    }
    train_done = next(
        e for e in events if e["job"]["name"] == "lineage.train" and e["eventType"] == "COMPLETE"
    )
    assert {d["name"] for d in train_done["inputs"]} == {"X", "y"}
    assert any(d["name"].endswith("/model") for d in train_done["outputs"])
    x = next(d for d in train_done["inputs"] if d["name"] == "X")
    assert [f["name"] for f in x["facets"]["schema"]["fields"]] == ["a", "b", "ab"]
    assert len(x["facets"]["version"]["datasetVersion"]) == 32


def test_failed_block_sends_fail_with_the_error(project: Path):
    with pytest.raises(ZeroDivisionError), nbmlops.track("bad", experiment="lineage"):
        ratio = 1 / 0  # noqa: F841
    assert get_tracker().flush(60)
    events = [
        json.loads(x)
        for x in (project / ".nbmlops/openlineage/events.jsonl").read_text().splitlines()
    ]
    fail = events[-1]
    assert fail["eventType"] == "FAIL"
    assert "ZeroDivisionError" in fail["run"]["facets"]["errorMessage"]["message"]


class _Receiver(BaseHTTPRequestHandler):
    received: list[dict] = []

    def do_POST(self):
        length = int(self.headers["Content-Length"])
        _Receiver.received.append({"path": self.path, "body": json.loads(self.rfile.read(length))})
        self.send_response(201)
        self.end_headers()

    def log_message(self, *args):
        pass


def test_openlineage_events_to_a_real_http_receiver(project: Path, monkeypatch: pytest.MonkeyPatch):
    server = HTTPServer(("127.0.0.1", 0), _Receiver)
    _Receiver.received = []
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        monkeypatch.setenv("NBMLOPS_OPENLINEAGE_URL", f"http://127.0.0.1:{server.server_port}")
        three_steps()
    finally:
        server.shutdown()
    assert [r["path"] for r in _Receiver.received] == ["/api/v1/lineage"] * 6
    for r in _Receiver.received:
        _check_event(r["body"])
    assert [r["body"]["eventType"] for r in _Receiver.received].count("COMPLETE") == 3
