"""Drift and realized performance of a prediction log computed on a real local Dask cluster
(two worker processes) over several time partitions: the same verdicts and statistics as on
this machine, one clear error for a scheduler that is not there, and nothing lost when a
worker dies mid-computation."""

from __future__ import annotations

import itertools
import json
import os
import socket
import sys
from pathlib import Path

import cloudpickle
import numpy as np
import pandas as pd
import pytest
from distributed import Client, LocalCluster, WorkerPlugin

import nbmlops.monitor as monitor
from nbmlops.api.monitor_performance import label, performance
from nbmlops.config import load_settings
from nbmlops.core.monitor.distributed import log_partitions, summarize_on_cluster
from nbmlops.core.monitor.summary import summarize_column
from nbmlops.core.monitor.traffic import Window, features_only, traffic_frame
from nbmlops.core.serving.predlog import PredictionLog
from nbmlops.exceptions import ConfigError, UsageError

T0 = 1_699_999_800.0  # the log's first request (epoch seconds, a multiple of 5 minutes)
REQUESTS = 900
# the plugin below is sent to the workers by value: they cannot import this test module
cloudpickle.register_pickle_by_value(sys.modules[__name__])


@pytest.fixture(scope="module")
def cluster():
    with (
        LocalCluster(
            n_workers=2, processes=True, threads_per_worker=1, dashboard_address=None
        ) as lc,
        Client(lc) as client,
    ):
        yield lc, client


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> tuple[object, pd.DataFrame]:
    """A classifier's prediction log (real SQLite written by the gateway's writer) over
    15 minutes: x shifts halfway, c gains a category, some requests hold three records;
    labels for every third request; and a reference frame of 800 rows."""
    folder = tmp_path_factory.mktemp("mondask")
    settings = load_settings(folder)
    rng = np.random.default_rng(7)
    log = PredictionLog(settings.home_dir).start()
    for i in range(REQUESTS):
        k = 3 if i % 10 == 0 else 1
        shift = 1.0 if i >= REQUESTS // 2 else 0.0
        recs = [
            {
                "x": float(rng.normal(shift)),
                "y": float(rng.normal()),
                "c": str(rng.choice(["a", "b", "d"] if shift else ["a", "b"])),
                "n": int(rng.integers(0, 3)),
            }
            for _ in range(k)
        ]
        p1 = rng.uniform(size=k)
        log.record(
            f"q{i}", "main", "clf", 1 + (i % 2), 200, 1.0, recs, [int(p > 0.5) for p in p1],
            ts=T0 + i, proba={"classes": [0, 1], "p": [[1 - p, p] for p in p1]},
        )  # fmt: skip
    log.record("bad", "main", "clf", 1, 422, 1.0, None, None, error="no", ts=T0 + 5)
    log.close()
    labelled = [(f"q{i}", r) for i in range(0, REQUESTS, 3) for r in range(3 if i % 10 == 0 else 1)]
    label(
        pd.DataFrame(
            {
                "request_id": [q for q, _ in labelled],
                "row": [r for _, r in labelled],
                "label": rng.integers(0, 2, len(labelled)),
            }
        ),
        settings=settings,
    )
    ref = pd.DataFrame(
        {
            "x": rng.normal(size=800),
            "y": rng.normal(size=800),
            "c": rng.choice(["a", "b"], 800),
            "n": rng.integers(0, 3, 800),
            "target": rng.integers(0, 2, 800),
        }
    )
    return settings, ref


WINDOW = {"since": T0, "until": T0 + REQUESTS}


def test_partitions_cover_the_window_and_merge_to_the_whole(cluster, project):
    _lc, client = cluster
    settings, _ref = project
    home = settings.home_dir
    parts = log_partitions(home, T0, T0 + REQUESTS, parts=5)
    assert len(parts) == 5 and parts[0][0] == T0 and parts[-1][1] == T0 + REQUESTS
    assert all(a[1] == b[0] for a, b in itertools.pairwise(parts))
    kinds = {"x": "numeric", "y": "numeric", "c": "categorical", "n": "categorical"}
    merged = summarize_on_cluster(client, home, T0, T0 + REQUESTS, "clf", kinds, parts=5)
    whole = features_only(traffic_frame(home, Window(T0, T0 + REQUESTS), model="clf"))
    assert merged.rows == len(whole) == REQUESTS + 2 * (REQUESTS // 10)
    assert set(merged.columns) == set(whole.columns) and merged.models == ["clf"]
    for col, kind in kinds.items():
        one = summarize_column(whole[col], kind, "current")
        got = merged.summaries[col]
        assert (got.rows, got.nulls) == (one.rows, one.nulls)
        if kind == "numeric":  # the exact values, so KS and Wasserstein are exact
            np.testing.assert_array_equal(got.numeric.values, one.numeric.values)
        else:
            pd.testing.assert_series_equal(got.counts.sort_index(), one.counts.sort_index())


def test_drift_and_performance_on_the_cluster_equal_this_machines(cluster, project, tmp_path):
    lc, _ = cluster
    settings, ref = project
    here = monitor.drift(ref, model="clf", settings=settings, **WINDOW)
    there = monitor.drift(
        ref, model="clf", settings=settings, scheduler=lc.scheduler_address, **WINDOW
    )
    assert there.drifted == here.drifted == ["x", "c"]  # KS on x, chi-square on c
    assert list(here.features["test"]) == ["ks", "ks", "chi2", "chi2"]
    assert (there.dataset_drift, there.current_rows) == (here.dataset_drift, here.current_rows)
    assert there.notes == here.notes and there.current_label == here.current_label
    pd.testing.assert_frame_equal(there.features, here.features, rtol=1e-9)
    # monitor.dask_scheduler in nbmlops.yaml does the same as the argument
    (tmp_path / "nbmlops.yaml").write_text(
        f"home: {settings.home_dir}\nmonitor:\n  dask_scheduler: {lc.scheduler_address}\n"
    )
    s = load_settings(tmp_path)
    assert s.monitor.dask_scheduler == lc.scheduler_address
    pd.testing.assert_frame_equal(
        monitor.drift(ref, model="clf", settings=s, test="psi", **WINDOW).features,
        monitor.drift(ref, model="clf", settings=settings, test="psi", **WINDOW).features,
        rtol=1e-9,
    )
    (tmp_path / "nbmlops.yaml").write_text("monitor:\n  scheduler: tcp://x:1\n")
    with pytest.raises(ConfigError, match="dask_scheduler"):
        load_settings(tmp_path)
    kw = {"window": "5m", "reference_until": T0 + REQUESTS / 2}
    here_p = performance(settings=settings, **kw).table
    there_p = performance(settings=settings, scheduler=lc.scheduler_address, **kw).table
    assert len(here_p) == 2 * 3 and here_p["labelled"].sum() > 0
    pd.testing.assert_frame_equal(there_p, here_p, rtol=1e-9)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_an_unreachable_scheduler_is_one_clear_error(project):
    settings, ref = project
    address = f"tcp://127.0.0.1:{_free_port()}"
    with pytest.raises(UsageError) as err:
        monitor.drift(ref, model="clf", settings=settings, scheduler=address, **WINDOW)
    assert f"Cannot connect to the Dask scheduler at {address}" in str(err.value)
    assert "dask scheduler" in str(err.value) and "dask worker" in str(err.value)
    with pytest.raises(UsageError, match="Cannot connect to the Dask scheduler at"):
        performance(settings=settings, scheduler=address)
    with pytest.raises(UsageError, match="is not a Dask scheduler address"):
        monitor.drift(ref, model="clf", settings=settings, scheduler="localhost:8786", **WINDOW)


class DieOnce(WorkerPlugin):
    """Ends its worker's process as the first partition task starts there (once in all:
    the marker file is created atomically by the first worker to get there)."""

    def __init__(self, marker: str):
        self.marker = marker

    def transition(self, key, start, finish, **kwargs):
        if finish == "executing" and "summarize_partition" in str(key):
            try:
                os.close(os.open(self.marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
            except FileExistsError:
                return
            os._exit(1)


def test_a_worker_dying_mid_computation_loses_nothing(cluster, project, tmp_path: Path):
    _lc, client = cluster
    settings, ref = project
    db = settings.home_dir / "predictions" / "predictions.db"
    before = db.read_bytes()
    here = monitor.drift(ref, model="clf", settings=settings, **WINDOW)
    marker = tmp_path / "died"
    client.register_plugin(DieOnce(str(marker)), name="die-once")
    try:
        there = monitor.drift(ref, model="clf", settings=settings, scheduler=client, **WINDOW)
    finally:
        client.unregister_worker_plugin("die-once")
    assert marker.exists()  # a worker did die
    pd.testing.assert_frame_equal(there.features, here.features, rtol=1e-9)
    assert db.read_bytes() == before  # the log is read only


def test_the_drift_command_takes_a_scheduler(cluster, project, monkeypatch):
    from typer.testing import CliRunner

    from nbmlops.api.data import commit
    from nbmlops.cli.monitor import app

    lc, _ = cluster
    settings, ref = project
    version = commit(ref, "mondask-ref", settings=settings).version.ref
    monkeypatch.chdir(settings.project_dir)  # the command reads the project from here
    args = ["drift", "--model", "clf", "--reference", version, "--json"]
    iso = [pd.Timestamp(t, unit="s").isoformat() for t in (T0, T0 + REQUESTS)]
    args += ["--since", iso[0], "--until", iso[1]]
    runner = CliRunner()
    here = runner.invoke(app, args)
    there = runner.invoke(app, [*args, "--scheduler", lc.scheduler_address])
    assert there.exit_code == here.exit_code == 1, here.output  # 1: the dataset drifted
    assert json.loads(there.stdout) == json.loads(here.stdout)
    gone = runner.invoke(app, [*args, "--scheduler", f"tcp://127.0.0.1:{_free_port()}"])
    assert isinstance(gone.exception, UsageError)
    assert "Cannot connect to the Dask scheduler at tcp://127.0.0.1:" in str(gone.exception)
