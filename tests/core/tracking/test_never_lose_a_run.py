"""The journal's promises, with real processes and a real SQLite store or MLflow server."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

import nbmlops
from nbmlops.api import sync_journal
from nbmlops.config import load_settings
from nbmlops.core.tracking.journal import Journal, read_segment
from nbmlops.core.tracking.session import get_tracker
from tests.conftest import Lane, unique


def run_script(project: Path, code: str, env: dict[str, str] | None = None, check: bool = True):
    script = project / f"{unique('script')}.py"
    script.write_text(textwrap.dedent(code))
    proc = subprocess.run(
        [sys.executable, str(script)],
        cwd=project,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, **(env or {})},
    )
    if check:
        assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def test_a_plain_script_block_is_captured_like_a_cell(lane: Lane):
    exp = unique("script")
    run_script(
        lane.project,
        f"""
        import numpy as np
        from sklearn.linear_model import LogisticRegression
        import nbmlops
        X = np.random.default_rng(0).normal(size=(80, 3)); y = (X[:, 0] > 0).astype(int)
        with nbmlops.track("from-script", experiment="{exp}"):
            C = 0.25
            clf = LogisticRegression(C=C).fit(X, y)
            train_acc = clf.score(X, y)
            nbmlops.log_metrics({{"a": 1.0, "b": 2.0}}, step=3)
        try:
            with nbmlops.track("broken", experiment="{exp}"):
                ratio = 1 / 0
        except ZeroDivisionError:
            pass
    """,
        env=lane.env,
    )
    runs = {r.info.run_name: r for r in lane.runs(exp)}
    ok, broken = runs["from-script"], runs["broken"]
    assert ok.info.status == "FINISHED"
    own = {k: v for k, v in ok.data.params.items() if not k.startswith("clf.")}
    assert own == {"C": "0.25"} and ok.data.params["clf.C"] == "0.25"
    assert ok.data.metrics["train_acc"] > 0.9 and ok.data.metrics["a"] == 1.0
    assert ok.data.tags["mlflow.source.type"] == "LOCAL"
    assert {d.dataset.name for d in ok.inputs.dataset_inputs} == {"X", "y"}
    assert broken.info.status == "FAILED"
    assert broken.data.tags["nbmlops.error"].startswith("ZeroDivisionError")


def test_10000_metrics_then_os_exit_are_replayed_exactly(project: Path):
    """os._exit skips every exit hook: the journal alone brings the values back."""
    proc = run_script(
        project,
        """
        import os, nbmlops
        with nbmlops.track("many", experiment="exit"):
            for i in range(10_000):
                nbmlops.log_metric("m", i * 0.5, step=i)
        os._exit(0)
    """,
        env={"NBMLOPS_TRACKING_URI": "http://127.0.0.1:9"},
    )  # nothing listens: nothing ships
    assert proc.returncode == 0
    settings = load_settings(project)
    [segment] = Journal(settings.journal_dir).segments()
    assert len(read_segment(segment).runs) == 1

    report = sync_journal(settings)
    assert report.runs_finished == 1 and report.metrics == 10_000 and not report.errors
    client = Lane("sqlite", project, {}, settings.resolved_tracking_uri).client()
    [run] = client.search_runs([client.get_experiment_by_name("exit").experiment_id])
    history = client.get_metric_history(run.info.run_id, "m")
    assert len(history) == 10_000
    assert sorted((m.step, m.value) for m in history) == [(i, i * 0.5) for i in range(10_000)]
    assert run.info.status == "FINISHED"
    # a second replay finds nothing left and duplicates nothing
    again = sync_journal(settings)
    assert again.runs_finished == 0
    assert len(client.get_metric_history(run.info.run_id, "m")) == 10_000


def test_os_exit_inside_a_block_closes_the_run_as_killed(project: Path):
    run_script(
        project,
        """
        import os, nbmlops
        with nbmlops.track("cut-short", experiment="cut"):
            nbmlops.log_metric("seen", 1.0)
            os._exit(3)
    """,
        check=False,
    )
    report = sync_journal(load_settings(project))
    assert report.runs_killed == 1
    lane = Lane("sqlite", project, {}, load_settings(project).resolved_tracking_uri)
    [run] = lane.runs("cut")
    assert run.info.status == "FAILED" and run.data.tags["nbmlops.failure"] == "killed"
    assert run.data.metrics["seen"] == 1.0


def test_a_torn_last_journal_line_is_skipped_and_counted(project: Path):
    run_script(
        project,
        """
        import os, nbmlops
        with nbmlops.track("torn", experiment="torn"):
            nbmlops.log_metric("x", 1.0)
        os._exit(0)
    """,
        env={"NBMLOPS_TRACKING_URI": "http://127.0.0.1:9"},
    )
    settings = load_settings(project)
    [segment] = Journal(settings.journal_dir).segments()
    with open(segment, "ab") as fh:
        fh.write(b'{"t":"metric","key":"abc","na')  # a write cut by a crash
    report = sync_journal(settings)
    assert report.torn_lines == 1 and report.runs_finished == 1


@pytest.mark.slow
def test_store_write_lock_held_past_the_busy_timeout(
    project: Path, monkeypatch: pytest.MonkeyPatch
):
    """Another process holds SQLite's write lock for longer than MLflow's 20 s busy timeout:
    the tracked block returns at once, the shipper retries, and the run lands afterwards."""
    monkeypatch.setenv("NBMLOPS_RETRY_MAX_SECONDS", "1")
    tracker = get_tracker()
    with nbmlops.track("warm-up", experiment="locked"):
        pass
    assert tracker.flush(60)
    db = project / ".nbmlops" / "mlflow.db"
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            textwrap.dedent(f"""
        import sqlite3, time, sys
        con = sqlite3.connect({str(db)!r}, isolation_level=None)
        con.execute("BEGIN EXCLUSIVE")
        print("locked", flush=True)
        time.sleep(24)
        con.execute("COMMIT")
    """),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert holder.stdout.readline().strip() == "locked"
    began = time.monotonic()
    with nbmlops.track("while-locked", experiment="locked"):
        value = 41 + 1  # noqa: F841 - captured as a metric
    assert time.monotonic() - began < 5  # the block did not wait for the store
    assert not tracker.flush(5)  # still locked: not shipped yet, nothing lost
    holder.wait(60)
    assert tracker.flush(90)
    stats = tracker.shipper.stats
    assert stats.retries >= 1, stats
    assert "database is locked" in stats.last_error and str(db) in stats.last_error
    con = sqlite3.connect(db)
    rows = con.execute("select status from runs where name = 'while-locked'").fetchall()
    assert stats.runs_finished == 2 and tracker.shipper.pending == 0
    assert rows == [("FINISHED",)]


@pytest.mark.server
def test_a_dead_tracking_server_then_recovery(
    project: Path, mlflow_server, monkeypatch: pytest.MonkeyPatch
):
    """The server refuses connections while blocks run; they keep running; once it is back the
    runs ship with identical values, and replaying again duplicates nothing."""
    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_server.uri)
    monkeypatch.setenv("NBMLOPS_RETRY_MAX_SECONDS", "1")
    exp = unique("outage")
    tracker = get_tracker()
    mlflow_server.stop()
    try:
        for i in range(3):
            began = time.monotonic()
            with nbmlops.track(f"during-outage-{i}", experiment=exp):
                for step in range(50):
                    nbmlops.log_metric("loss", 1.0 / (step + 1 + i), step=step)
            assert time.monotonic() - began < 2
        assert not tracker.flush(3)
        assert "unreachable" in (tracker.shipper.stats.last_error or "")
    finally:
        mlflow_server.start()
    assert tracker.flush(120)
    lane = Lane("server", project, {}, mlflow_server.uri)
    runs = {r.info.run_name: r for r in lane.runs(exp)}
    assert set(runs) == {f"during-outage-{i}" for i in range(3)}
    client = lane.client()
    for i in range(3):
        run = runs[f"during-outage-{i}"]
        assert run.info.status == "FINISHED"
        hist = client.get_metric_history(run.info.run_id, "loss")
        assert sorted((m.step, m.value) for m in hist) == [
            (s, 1.0 / (s + 1 + i)) for s in range(50)
        ]
    # replaying this process's journal (as the next start would) adds nothing
    from nbmlops.core.tracking.session import reset_tracker

    reset_tracker()
    sync_journal(load_settings(project))
    assert len(lane.runs(exp)) == 3
    for run in lane.runs(exp):
        assert len(client.get_metric_history(run.info.run_id, "loss")) == 50


def test_a_normal_exit_with_the_store_down_says_where_the_runs_are(project: Path):
    proc = run_script(
        project,
        """
        import nbmlops
        with nbmlops.track("offline", experiment="offline"):
            x = 2 ** 0.5
    """,
        env={
            "NBMLOPS_TRACKING_URI": "http://127.0.0.1:9",
            "NBMLOPS_EXIT_FLUSH_SECONDS": "1",
            "NBMLOPS_HANDOFF_SECONDS": "0",  # no detached shipper: the sync below ships it
        },
    )
    # where the runs are and how to ship them (whether an attempt failed within the one second
    # depends on how fast the shipper's thread got going)
    assert "2 journal record(s) could not reach http://127.0.0.1:9 before exit" in proc.stderr
    assert str(project / ".nbmlops" / "journal") in proc.stderr.replace("\n", "")
    assert "nbmlops sync" in proc.stderr
    report = sync_journal(load_settings(project))
    assert report.runs_finished == 1


@pytest.mark.server
def test_a_postgresql_backend_without_a_server(project: Path, postgres_server):
    """MLFLOW_TRACKING_URI may name the database itself (postgresql://, psycopg2 driver)."""
    url = postgres_server.create_database(unique("direct"))
    assert url.startswith("postgresql://")
    run_script(
        project,
        """
        import nbmlops
        with nbmlops.track("direct-db", experiment="direct"):
            alpha = 0.3
            loss = alpha * 2
    """,
        env={"MLFLOW_TRACKING_URI": url},
    )
    from mlflow import MlflowClient

    from nbmlops.core.tracking.store import normalize_uri

    client = MlflowClient(normalize_uri(url))
    [run] = client.search_runs([client.get_experiment_by_name("direct").experiment_id])
    assert run.info.status == "FINISHED" and run.data.metrics == {"loss": 0.6}
