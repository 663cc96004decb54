"""``nbmlops monitor`` and ``nbmlops.monitor`` on a real project: a registered champion whose
training data version comes from its lineage (a %%track cell on committed data), a prediction
log written by the gateway's own writer (real SQLite) whose traffic shifted in one feature, and
end to end: the champion served by ``nbmlops serve`` on 127.0.0.1, traffic shifting halfway in
two features, labels arriving late, and the monitoring report landing in MLflow."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

import nbmlops.monitor as monitor
from nbmlops.cli.monitor import app as monitor_app
from nbmlops.core.serving.predlog import PredictionLog
from nbmlops.exceptions import UsageError
from tests.cli.test_serve_cli import launch, stop
from tests.conftest import ARTIFACTS
from tests.core.registry.conftest import FEATURES, Zoo, unique, zoo  # noqa: F401 (fixture)

HOUR = 3600.0


def cli(project: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "nbmlops.cli.main", *args],
        cwd=project,
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.fixture(scope="module")
def served(zoo: Zoo) -> tuple[Zoo, str]:  # noqa: F811
    """``good`` registered as the champion of a new model, and an hour of its traffic (the
    hour that last ended) in the prediction log: feature a moved by one std, c has three
    values far outside the training range."""
    name = unique("churn")
    reg = zoo.registry()
    reg.register("good", name)
    reg.promote(name, 1)
    rng = np.random.default_rng(11)
    start = (time.time() // HOUR - 1) * HOUR
    log = PredictionLog(zoo.settings().home_dir).start()
    for i in range(600):
        rec = {"a": rng.normal(1.0), "b": rng.normal(), "c": rng.normal()}
        if i < 3:
            rec["c"] = 50.0
        log.record(
            f"{name}-{i}", "main", name, 1, 200, 2.0, inputs=[rec], outputs=[1], ts=start + i * 5.0
        )
    log.close()
    return zoo, name


def test_cli_drift_compares_the_log_with_the_champions_training_data(served, tmp_path):
    project_zoo, name = served
    html = tmp_path / "drift.html"
    proc = cli(
        project_zoo.project,
        "monitor",
        "drift",
        "--model",
        f"{name}@champion",
        "--last",
        "3h",
        "--json",
        "--html",
        str(html),
    )
    assert proc.returncode == 0, proc.stderr  # one of three features: no dataset drift
    report = json.loads(proc.stdout)
    assert report["drifted"] == ["a"]
    assert report["reference"]["label"].startswith(
        f"train@1 (training data of {name} v1, champion)"
    )
    assert report["current"]["rows"] == 600
    assert [f["feature"] for f in report["features"]] == FEATURES
    assert {f["test"] for f in report["features"]} == {"ks"}  # 400 training rows
    assert any("label" in n for n in report["notes"])  # the target is not in the traffic
    assert "data:image/png;base64," in html.read_text()


def test_drift_from_profiles_and_quality_of_the_same_window(served):
    project_zoo, name = served
    s = project_zoo.settings()
    report = monitor.drift(model=name, profiles=True, last="3h", settings=s)
    assert report.drifted == ["a"] and report.current_rows == 600
    assert (s.home_dir / "predictions" / "profiles.db").is_file()
    q = monitor.quality(model=name, last="3h", window="1h", settings=s)
    rows = q.table.set_index("column")
    assert rows.loc["c", "out_of_range"] >= 3 and rows.loc["c", "unseen"] == 0
    assert rows.loc["a", "out_of_range"] > 0  # a moved: some values beyond the training max
    assert any(
        v.startswith("c (") and "values outside the trained range" in v for v in q.violations
    )
    assert q.missing_columns == []  # the target (label) is not an input: not a violation


def test_an_empty_window_of_the_log_is_a_clear_error(served, monkeypatch):
    project_zoo, name = served
    proc = cli(
        project_zoo.project,
        "monitor",
        "drift",
        "--model",
        name,
        "--since",
        "2001-01-01",
        "--until",
        "2001-01-02",
    )
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "is empty: no successful predictions of " + name in proc.stderr
    assert "widen the window" in proc.stderr
    # in process (a subprocess costs seconds): `nbmlops` prints a NbmlopsError as one line, exit 2
    from nbmlops.exceptions import NbmlopsError

    monkeypatch.chdir(project_zoo.project)  # the command reads the project from here
    unknown = CliRunner().invoke(monitor_app, ["report", "--model", "no-such-model"])
    assert isinstance(unknown.exception, NbmlopsError), unknown.output
    assert "No registered model 'no-such-model'" in str(unknown.exception)
    with pytest.raises(UsageError, match="has no alias 'gold'"):
        monitor.drift(model=f"{name}@gold", last="3h", settings=project_zoo.settings())


# end to end: served, shifted, labelled late, reported

PER_REQUEST = 15
SHIFTED = ["a", "b"]  # the two features the second half of the traffic moves


def concept(n: int, seed: int, shrink: float = 1.0) -> tuple[pd.DataFrame, np.ndarray]:
    """Records as the zoo's training data draws them (label = a + 0.5 b + noise > 0), with
    ``a`` and ``b`` shrunk by ``shrink`` towards the decision boundary, where the model errs."""
    rng = np.random.default_rng(seed)
    x = pd.DataFrame({c: rng.normal(size=n) for c in FEATURES})
    x[SHIFTED] *= shrink
    y = ((x.a + 0.5 * x.b + 0.3 * rng.normal(size=n)) > 0).astype(int).to_numpy()
    return x, y


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
def test_served_model_drifts_in_two_features_estimate_falls_labels_confirm_report_lands(
    zoo: Zoo,  # noqa: F811
    tmp_path,
    monkeypatch,
):
    name = unique("served")
    reg = zoo.registry()
    registered = reg.register("good", name)  # trained in a %%track cell on train@1
    assert registered.data_versions == ["train@1"]
    reg.promote(name, 1)
    settings = zoo.settings()
    monkeypatch.chdir(zoo.project)  # the commands read the project from the working folder
    proc, url, _printed = launch(
        SimpleNamespace(uri=settings.resolved_tracking_uri), zoo.project, f"{name}@champion"
    )

    def logged(count: int):
        table = monitor.health(settings=settings, window=None, model=name).table
        return table if not table.empty and int(table.requests.sum()) == count else None

    try:
        # reference traffic, labelled at once: what the estimate calibrates on
        x_ref, y_ref = concept(300, seed=1)
        ids_ref = predict(url, x_ref)
        wait_for(lambda: logged(20), "the reference requests in the prediction log")
        monitor.label(label_frame(ids_ref, y_ref), settings=settings)
        t0 = time.time()
        x1, y1 = concept(300, seed=2)  # as in training
        ids1 = predict(url, x1)
        t1 = time.time()
        x2, y2 = concept(300, seed=3, shrink=0.15)  # a and b shifted
        ids2 = predict(url, x2)
        own = urllib.request.Request(
            f"{url}/predict", data=json.dumps([{"a": 1.0}]).encode(),
            headers={"Content-Type": "application/json", "X-Request-Id": "client-chosen-1"},
        )  # fmt: skip
        with pytest.raises(urllib.error.HTTPError) as refused:  # a missing feature: 422
            urllib.request.urlopen(own, timeout=30)
        assert (
            refused.value.code == 422 and refused.value.headers["X-Request-Id"] == "client-chosen-1"
        )
        t2 = time.time()
        health = wait_for(lambda: logged(61), "the prediction log to hold every request")

        # drift against the champion's training data (train@1, from its lineage)
        halves = [
            monitor.drift(model=name, since=a, until=b, settings=settings)
            for a, b in ((t0, t1), (t1, t2))
        ]
        assert halves[0].drifted == [] and halves[1].drifted == SHIFTED
        assert halves[1].reference_label.startswith("train@1 (training data of")

        # before any late label: the estimate falls with the shift
        before = [
            monitor.performance(
                settings=settings, since=a, until=b, window=None, model=name
            ).table.iloc[0]
            for a, b in ((t0, t1), (t1, t2))
        ]
        assert [r.labelled for r in before] == [0, 0] and [r.n for r in before] == [300, 300]
        assert np.isnan(before[0].accuracy) and np.isnan(before[1].accuracy)
        assert before[0].accuracy_estimated > 0.8
        assert before[1].accuracy_estimated < before[0].accuracy_estimated - 0.1

        # the labels arrive late, through the command line
        labels = pd.concat([label_frame(ids1, y1), label_frame(ids2, y2)])
        labels.to_csv(tmp_path / "late.csv", index=False)
        runner = CliRunner()
        done = runner.invoke(monitor_app, ["label", str(tmp_path / "late.csv"), "--json"])
        assert done.exit_code == 0, done.output
        assert json.loads(done.output)["added"] == 600

        rows = [
            monitor.performance(
                settings=settings, since=a, until=b, window=None, model=name
            ).table.iloc[0]
            for a, b in ((t0, t1), (t1, t2))
        ]
        assert [r.labelled for r in rows] == [300, 300]
        assert rows[1].accuracy < rows[0].accuracy - 0.1  # realized: the model got worse
        for row in rows:
            assert abs(row.accuracy - row.accuracy_estimated) < 0.1
        assert 0.0 < rows[1].roc_auc < rows[0].roc_auc and rows[1].log_loss > rows[0].log_loss

        shown = runner.invoke(
            monitor_app, ["performance", "--window", "all", "--model", name, "--json"]
        )
        assert shown.exit_code == 0, shown.output
        [whole] = json.loads(shown.output)
        assert whole["n"] == 900 and whole["labelled"] == 900 and "accuracy_estimated" in whole

        worst = monitor.slices(settings=settings, model=name, since=t0, limit=3)
        assert worst.feature[0] in SHIFTED  # the shifted features' central range

        version = health.iloc[0]
        assert (version.model, version.version, version.errors_4xx) == (name, 1, 1)
        assert version.errors_5xx == 0 and version.latency_p99_ms >= version.latency_p50_ms > 0
        res = wait_for(
            lambda: None if (r := monitor.health(settings=settings)).resources.empty else r,
            "a resource sample of the gateway (every 5 s)",
        )
        assert res.resources.rss_mb.iloc[-1] > 10

        # the report: bad input records nothing ...
        client = zoo.client()
        with pytest.raises(UsageError, match="has no successful predictions of " + name):
            monitor.report(name, since="2001-01-01", until="2001-01-02", settings=settings)
        with pytest.raises(UsageError, match="has no version 7"):
            monitor.report(name, 7, settings=settings)
        assert client.get_experiment_by_name(f"monitoring/{name}") is None

        # ... and a good one lands in MLflow as a run linked to the version
        html = tmp_path / "report.html"
        out = runner.invoke(
            monitor_app, ["report", "--model", name, "--window", "1m", "--html", str(html),
                          "--json"],
        )  # fmt: skip
        assert out.exit_code == 0, out.output
        shown = json.loads(out.output)
        assert shown["version"] == 1 and shown["drift"]["drifted"] == SHIFTED
        page = html.read_text()
        assert page.count("data:image/png;base64,") >= 3  # histograms, accuracy, latency
        experiment = client.get_experiment_by_name(f"monitoring/{name}")
        [run] = client.search_runs([experiment.experiment_id])
        assert run.info.run_id == shown["run_id"] and run.info.status == "FINISHED"
        assert run.data.tags["nbmlops.monitor.model"] == name
        assert run.data.tags["nbmlops.monitor.version"] == "1"
        assert run.data.tags["nbmlops.model_id"] == registered.model_id
        m = run.data.metrics
        assert m["drift_share"] == pytest.approx(2 / 3)
        for row in shown["drift"]["features"]:  # KS p-values, corrected
            assert m[f"drift_score.{row['feature']}"] == pytest.approx(row["score"])
        assert m["accuracy"] == pytest.approx(whole["accuracy"])
        assert m["estimated_accuracy"] == pytest.approx(whole["accuracy_estimated"])
        assert m["latency_p99"] >= m["latency_p50"] > 0 and m["error_rate"] == 0
        files = {f.path for f in client.list_artifacts(run.info.run_id)}
        assert {"report.html", "tables"} <= files
        tables = {f.path for f in client.list_artifacts(run.info.run_id, "tables")}
        assert {"tables/drift.csv", "tables/performance.csv", "tables/health.csv"} <= tables

        # the Monitoring panel over the same traffic: the worst slices are in the shifted features
        from nbmlops.panels import monitor as monitoring_panel

        panel = monitoring_panel(name, window="1m")
        assert panel.wait(120) and panel.error == "", panel.error
        assert panel.report.drift.drifted == SHIFTED and panel.slices.feature[0] in SHIFTED
        assert "accuracy_estimated" in panel.perf_table.value

        ARTIFACTS.mkdir(exist_ok=True)
        (ARTIFACTS / "monitor-report.html").write_text(page)
        per_second = monitor.performance(settings=settings, window="1s", model=name)
        assert set(per_second.figures) >= {"accuracy", "f1", "roc_auc", "log_loss"}
        res.figures["resources"].savefig(ARTIFACTS / "monitor-resources.png", dpi=90)
    finally:
        stop(proc)


def test_the_monitoring_panel_shows_drift_performance_health_and_refreshes(served, monkeypatch):
    from nbmlops.panels import monitor as monitoring_panel

    project_zoo, name = served
    monkeypatch.chdir(project_zoo.project)
    panel = monitoring_panel(name, last="3h", window="1h")
    assert panel.wait(120) and panel.error == "", panel.error
    assert panel.report is not None and panel.report.drift.drifted == ["a"]
    assert "<b>1 of 3 features drifted" in panel.drift_table.value
    assert bytes(panel.drift_plot.value).startswith(b"\x89PNG")
    assert bytes(panel.perf_plot.value).startswith(b"\x89PNG")  # realized only: no probabilities
    assert "no estimated performance" in panel.perf_table.value
    assert bytes(panel.health_plot.value).startswith(b"\x89PNG")
    assert ">600<" in panel.health_table.value  # requests in the hour
    assert "Estimated slices need a classifier that logged class probabilities" in (
        panel.slices_table.value
    )
    styles = "".join(w.value for w in (panel.drift_table, panel.health_table, panel.status_box))
    assert "var(--jp-ui-font-color1)" in styles and "#" not in styles.replace("&#", "")
    assert project_zoo.client().get_experiment_by_name(f"monitoring/{name}") is None  # no run
    panel.refresh_button.click()
    assert panel.wait(120) and panel.loads == 2
    panel.model_box.value = "no-such-model"
    panel.refresh()
    assert panel.wait(120) and "no-such-model" in panel.error
    panel.close()

    live = monitoring_panel(name, last="3h", window="1h", every=0.2)
    try:  # it reloads by itself while open
        wait_for(lambda: live.loads >= 2, "the panel to refresh by itself", timeout=120)
    finally:
        live.close()


def test_a_report_whose_logging_fails_keeps_no_run_and_writes_no_file(served, tmp_path):
    from mlflow.entities import ViewType

    from nbmlops.exceptions import StoreError

    project_zoo, name = served
    client = project_zoo.client()
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")  # artifacts cannot go beneath a file: logging fails
    exp_id = client.create_experiment(
        f"monitoring/{name}", artifact_location=(blocker / "artifacts").as_uri()
    )
    html = tmp_path / "report.html"
    with pytest.raises(StoreError, match=f"could not log the monitoring run of {name} v1"):
        monitor.report(name, last="3h", window="all", html=html, settings=project_zoo.settings())
    assert client.search_runs([exp_id]) == [] and not html.exists()
    [deleted] = client.search_runs([exp_id], run_view_type=ViewType.DELETED_ONLY)
    assert deleted.data.tags["nbmlops.monitor.model"] == name
