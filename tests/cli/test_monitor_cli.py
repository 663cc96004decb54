"""``nbmlops monitor drift`` and ``nbmlops.monitor`` on a real project: a registered champion
whose training data version comes from its lineage, and a prediction log written by the
gateway's own writer (real SQLite) whose traffic shifted in one feature."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import nbmlops.monitor as monitor
from nbmlops.core.serving.predlog import PredictionLog
from nbmlops.exceptions import UsageError
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


def test_an_empty_window_of_the_log_is_a_clear_error(served):
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
    with pytest.raises(UsageError, match="has no alias 'gold'"):
        monitor.drift(model=f"{name}@gold", last="3h", settings=project_zoo.settings())
