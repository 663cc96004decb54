"""End to end with real parts: a classifier trained, logged to a SQLite MLflow store,
registered (scanned) and served by ``nbmlops serve`` on 127.0.0.1; traffic whose features
shift halfway towards the decision boundary; the CBPE estimate falls before any label
arrives, the late labels' realized accuracy confirms it; health and resources from the log."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import typer
from typer.testing import CliRunner

from nbmlops.api import monitor_performance as monitor
from nbmlops.api.registry import model_registry
from nbmlops.cli.monitor_performance import register
from nbmlops.config import load_settings
from tests.cli.test_serve_cli import launch, stop
from tests.conftest import ARTIFACTS

FEATURES = ["f0", "f1", "f2", "f3"]
PER_REQUEST = 15


def concept(n: int, scale: float, seed: int) -> tuple[pd.DataFrame, np.ndarray]:
    """One fixed P(y|x) = sigmoid(2 (f0 + f1)); ``scale`` spreads the features."""
    rng = np.random.default_rng(seed)
    x = pd.DataFrame(rng.normal(scale=scale, size=(n, len(FEATURES))), columns=FEATURES)
    p = 1.0 / (1.0 + np.exp(-2.0 * (x.f0 + x.f1)))
    return x, (rng.random(n) < p).astype(int)


def train_and_register(project: Path) -> str:
    import mlflow
    import mlflow.sklearn
    from mlflow.tracking._tracking_service.utils import _use_tracking_uri
    from sklearn.linear_model import LogisticRegression

    settings = load_settings(project, environ={})
    x, y = concept(3000, 2.0, seed=0)
    est = LogisticRegression().fit(x, y)
    with _use_tracking_uri(settings.resolved_tracking_uri):
        mlflow.set_experiment("monitored")
        with mlflow.start_run():
            info = mlflow.sklearn.log_model(
                est, name="model", input_example=x.head(3), pip_requirements=["scikit-learn"]
            )
    registry = model_registry(settings)
    registry.register(info.model_id, "monitored")
    registry.set_alias("monitored", "champion", 1)
    return settings.resolved_tracking_uri


def predict(url: str, x: pd.DataFrame) -> list[str]:
    """POST the records in requests of PER_REQUEST; the request id of each."""
    ids = []
    for start in range(0, len(x), PER_REQUEST):
        body = json.dumps(x.iloc[start : start + PER_REQUEST].to_dict(orient="records")).encode()
        req = urllib.request.Request(
            f"{url}/predict", data=body, headers={"Content-Type": "application/json"}
        )
        with urllib.request.urlopen(req, timeout=30) as resp:
            answer = json.load(resp)
            assert resp.headers["X-Request-Id"] == answer["request_id"]
        ids.append(answer["request_id"])
    return ids


def label_frame(ids: list[str], y: np.ndarray) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "request_id": np.repeat(ids, PER_REQUEST),
            "row": np.tile(np.arange(PER_REQUEST), len(ids)),
            "label": y,
        }
    )


def wait_for(check, what: str, timeout: float = 60.0):
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value is not None and value is not False:
            return value
        assert time.monotonic() < deadline, f"waited {timeout:g} s for {what}"
        time.sleep(0.2)


@pytest.mark.slow
def test_estimated_accuracy_falls_before_labels_and_late_labels_confirm_it(tmp_path, monkeypatch):
    project = tmp_path / "project"
    project.mkdir()
    monkeypatch.chdir(project)
    uri = train_and_register(project)
    settings = load_settings(project, environ={})
    proc, url, _printed = launch(SimpleNamespace(uri=uri), project, "monitored@champion")

    def logged(count: int):
        table = monitor.health(settings=settings, window=None).table
        return table if not table.empty and int(table.requests.sum()) == count else None

    try:
        # reference traffic, labelled at once: what the estimate calibrates on
        x_ref, y_ref = concept(300, 2.0, seed=1)
        ids_ref = predict(url, x_ref)
        wait_for(lambda: logged(20), "the reference requests in the prediction log")
        monitor.label(label_frame(ids_ref, y_ref), settings=settings)
        t0 = time.time()
        x1, y1 = concept(300, 2.0, seed=2)  # as in training
        ids1 = predict(url, x1)
        t1 = time.time()
        x2, y2 = concept(300, 0.3, seed=3)  # shifted: near the boundary, the model errs
        ids2 = predict(url, x2)
        own = urllib.request.Request(
            f"{url}/predict", data=json.dumps([{"f0": 1.0}]).encode(),
            headers={"Content-Type": "application/json", "X-Request-Id": "client-chosen-1"},
        )  # fmt: skip
        with pytest.raises(urllib.error.HTTPError) as refused:  # a missing feature: 422
            urllib.request.urlopen(own, timeout=30)
        assert (
            refused.value.code == 422 and refused.value.headers["X-Request-Id"] == "client-chosen-1"
        )
        t2 = time.time()

        health = wait_for(lambda: logged(61), "the prediction log to hold every request")
        before = [
            monitor.performance(settings=settings, since=a, until=b, window=None).table.iloc[0]
            for a, b in ((t0, t1), (t1, t2))
        ]
        assert [r.labelled for r in before] == [0, 0] and [r.n for r in before] == [300, 300]
        assert np.isnan(before[0].accuracy) and np.isnan(before[1].accuracy)
        assert before[0].accuracy_estimated > 0.8
        assert before[1].accuracy_estimated < before[0].accuracy_estimated - 0.15

        # the labels arrive late, through the command line
        labels = pd.concat([label_frame(ids1, y1), label_frame(ids2, y2)])
        labels.to_csv(tmp_path / "late.csv", index=False)
        app = register(typer.Typer())
        runner = CliRunner()
        done = runner.invoke(app, ["label", str(tmp_path / "late.csv"), "--json"])
        assert done.exit_code == 0, done.output
        assert json.loads(done.output)["added"] == 600

        after = [
            monitor.performance(settings=settings, since=a, until=b, window=None)
            for a, b in ((t0, t1), (t1, t2))
        ]
        rows = [r.table.iloc[0] for r in after]
        assert [r.labelled for r in rows] == [300, 300]
        assert rows[1].accuracy < rows[0].accuracy - 0.15  # realized: the model got worse
        for row in rows:
            assert abs(row.accuracy - row.accuracy_estimated) < 0.1
        assert 0.0 < rows[1].roc_auc < rows[0].roc_auc and rows[1].log_loss > rows[0].log_loss

        shown = runner.invoke(app, ["performance", "--window", "all", "--json"])
        assert shown.exit_code == 0, shown.output
        [whole] = json.loads(shown.output)
        assert whole["n"] == 900 and whole["labelled"] == 900 and "accuracy_estimated" in whole

        worst = monitor.slices(settings=settings, since=t0, limit=3)
        assert worst.feature[0] in ("f0", "f1")  # the shifted features' central range

        version = health.iloc[0]
        assert (version.model, version.version, version.errors_4xx) == ("monitored", 1, 1)
        assert version.errors_5xx == 0 and version.latency_p99_ms >= version.latency_p50_ms > 0
        res = wait_for(
            lambda: None if (r := monitor.health(settings=settings)).resources.empty else r,
            "a resource sample of the gateway (every 5 s)",
        )
        assert res.resources.rss_mb.iloc[-1] > 10
        shown = runner.invoke(app, ["health", "--window", "all", "--json"])
        assert shown.exit_code == 0, shown.output
        assert json.loads(shown.output)["windows"][0]["requests"] == 61

        ARTIFACTS.mkdir(exist_ok=True)
        per_second = monitor.performance(settings=settings, window="1s")
        assert set(per_second.figures) >= {"accuracy", "f1", "roc_auc", "log_loss"}
        per_second.figures["accuracy"].savefig(ARTIFACTS / "monitor-accuracy.png", dpi=90)
        latency = monitor.health(settings=settings, window="1s")
        latency.figures["latency"].savefig(ARTIFACTS / "monitor-latency.png", dpi=90)
        res.figures["resources"].savefig(ARTIFACTS / "monitor-resources.png", dpi=90)
    finally:
        stop(proc)
