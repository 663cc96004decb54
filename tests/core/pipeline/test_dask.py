"""Pipelines on real Dask clusters: a ``LocalCluster`` of worker processes, and a ``dask
scheduler`` with two ``dask worker`` processes started as commands. Steps run in real kernels
started by the workers; runs land in a real MLflow SQLite store."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from nbmlops.core.pipeline.events import StepFinished, StepStarted
from nbmlops.core.pipeline.runner import run_pipeline
from nbmlops.core.pipeline.scheduler import StepStatus
from nbmlops.core.tracking.session import get_tracker
from nbmlops.exceptions import PipelineError
from tests.conftest import write_notebook

pytestmark = [pytest.mark.kernel, pytest.mark.slow]

STEPS = ["prep", "total", "peak", "join"]
UPSTREAM = {"prep": [], "total": ["prep"], "peak": ["prep"], "join": ["total", "peak"]}

PREP = [
    "%load_ext nbmlops\nimport json, os",
    "%%track prep\nvalues = [i * i for i in range(1, n + 1)]\ncount = float(len(values))",
    "os.makedirs(os.path.dirname(numbers), exist_ok=True)\n"
    "json.dump({'values': values, 'ppid': os.getppid()}, open(numbers, 'w'))",
]
REDUCE = [
    "%load_ext nbmlops\nimport json, os",
    "%%track reduce\nvalues = json.load(open(numbers))['values']\n"
    "result = float(sum(values) if op == 'sum' else max(values))",
    "json.dump({'value': result, 'ppid': os.getppid()}, open(value, 'w'))",
]
JOIN = [
    "import json, os",
    "a, b = json.load(open(left)), json.load(open(right))\n"
    "json.dump({'sum': a['value'], 'max': b['value'], 'ppid': os.getppid()}, open(result, 'w'))",
]
PIPELINE = """\
name: dasked
experiment: dask-pipeline
steps:
  prep:
    notebook: prep.ipynb
    parameters: {n: 5}
    outputs: {numbers: out/numbers.json}
  total:
    notebook: reduce.ipynb
    parameters: {op: sum}
    inputs: {numbers: out/numbers.json}
    outputs: {value: out/total.json}
  peak:
    notebook: reduce.ipynb
    parameters: {op: max}
    inputs: {numbers: out/numbers.json}
    outputs: {value: out/peak.json}
  join:
    notebook: join.ipynb
    inputs: {left: out/total.json, right: out/peak.json}
    outputs: {result: out/result.json}
"""
METRICS = {"prep": ("count", 5.0), "total": ("result", 55.0), "peak": ("result", 25.0)}


@dataclass
class Cluster:
    address: str
    worker_pids: set[int]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def worker_pids(address: str, n: int) -> set[int]:
    """Wait until ``n`` workers have registered; their process ids."""
    from distributed import Client

    with Client(address, timeout=60, set_as_default=False) as client:
        client.wait_for_workers(n, timeout=120)
        return set(client.run(os.getpid).values())


@pytest.fixture
def local_cluster(project: Path) -> Iterator[Cluster]:
    from distributed import LocalCluster

    with LocalCluster(
        n_workers=2,
        processes=True,
        threads_per_worker=1,
        host="127.0.0.1",
        dashboard_address=None,
    ) as cluster:
        yield Cluster(cluster.scheduler_address, worker_pids(cluster.scheduler_address, 2))


def _dask_command() -> list[str]:
    exe = Path(sys.executable).with_name("dask")
    return [str(exe)] if exe.is_file() else [sys.executable, "-m", "dask"]


def _stop(proc: subprocess.Popen) -> None:
    """End a process we started and its children (its own process group), by its id."""
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            proc.wait(20)


@pytest.fixture
def dask_processes(project: Path, tmp_path: Path) -> Iterator[Cluster]:
    """``dask scheduler`` and two ``dask worker`` processes on 127.0.0.1 (free ports)."""
    logs = tmp_path / "dask-logs"
    logs.mkdir()
    address = f"tcp://127.0.0.1:{free_port()}"
    procs: list[subprocess.Popen] = []

    def start(name: str, args: list[str]) -> None:
        with open(logs / f"{name}.log", "wb") as log:
            procs.append(
                subprocess.Popen(
                    [*_dask_command(), *args],
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    cwd=tmp_path,
                    start_new_session=True,
                )
            )

    try:
        port = address.rsplit(":", 1)[1]
        start("scheduler", ["scheduler", "--host", "127.0.0.1", "--port", port, "--no-dashboard"])
        for i in range(2):
            folder = str(tmp_path / f"w{i}")
            start(
                f"worker-{i}",
                [
                    *("worker", address, "--host", "127.0.0.1", "--nthreads", "1"),
                    *("--no-dashboard", "--name", f"w{i}", "--local-directory", folder),
                ],
            )
        try:
            pids = worker_pids(address, 2)
        except Exception as err:
            shown = "\n".join(f"--- {p.name}\n{p.read_text()[-2000:]}" for p in logs.iterdir())
            raise AssertionError(f"the Dask cluster did not come up: {err}\n{shown}") from err
        yield Cluster(address, pids)
    finally:
        for proc in reversed(procs):
            _stop(proc)


def write_pipeline(project: Path) -> Path:
    write_notebook(project / "prep.ipynb", PREP, parameters="n = 3\nnumbers = ''")
    write_notebook(
        project / "reduce.ipynb", REDUCE, parameters="op = 'sum'\nnumbers = ''\nvalue = ''"
    )
    write_notebook(project / "join.ipynb", JOIN, parameters="left = ''\nright = ''\nresult = ''")
    path = project / "pipeline.yaml"
    path.write_text(PIPELINE)
    return path


def mlflow_runs() -> list[Any]:
    from mlflow import MlflowClient

    from nbmlops.config import load_settings

    client = MlflowClient(load_settings().resolved_tracking_uri)
    exp = client.get_experiment_by_name("dask-pipeline")
    return [] if exp is None else client.search_runs([exp.experiment_id], max_results=1000)


def run_on(cluster: Cluster, project: Path) -> None:
    path = write_pipeline(project)
    events: list[tuple[type, str]] = []
    report = run_pipeline(
        path,
        cluster=cluster.address,
        progress=lambda e: events.append((type(e), getattr(e, "step", ""))),
    )
    assert report.ok, report.table()
    assert report.ran() == STEPS
    tracker = get_tracker()
    tracker.ship_ended_processes()
    assert tracker.flush(120), tracker.shipper.stats.last_error

    # Order: each step started only after every step it reads from had ended.
    for step, ups in UPSTREAM.items():
        started = events.index((StepStarted, step))
        for up in ups:
            assert events.index((StepFinished, up)) < started, (step, up, events)

    # Outputs: what flowed through the DAG, written by kernels the workers started.
    out = project / "out"
    written = {n: json.loads((out / f"{n}.json").read_text()) for n in ["numbers", "total", "peak"]}
    result = json.loads((out / "result.json").read_text())
    assert written["numbers"]["values"] == [1, 4, 9, 16, 25]
    assert (result["sum"], result["max"]) == (55.0, 25.0)
    for produced in [*written.values(), result]:
        assert produced["ppid"] in cluster.worker_pids

    # Records: the pipeline run, its step runs below it, their %%track runs below them.
    runs = mlflow_runs()
    (pipeline,) = [r for r in runs if r.data.tags.get("nbmlops.kind") == "pipeline"]
    assert pipeline.info.status == "FINISHED"
    assert pipeline.data.params["cluster"] == cluster.address
    assert pipeline.data.metrics["steps_ran"] == 4.0
    steps = {r.data.tags["nbmlops.step"]: r for r in runs if "nbmlops.step" in r.data.tags}
    assert set(steps) == set(STEPS)
    for name, run in steps.items():
        assert run.info.status == "FINISHED", (name, run.data.tags.get("nbmlops.error"))
        assert run.data.tags["mlflow.parentRunId"] == pipeline.info.run_id
        recorded = json.loads(run.data.tags["nbmlops.outputs"])
        assert recorded == {k: v["digest"] for k, v in report.steps[name].outputs.items()}
    for name, (metric, value) in METRICS.items():
        cells = [
            r for r in runs if r.data.tags.get("mlflow.parentRunId") == steps[name].info.run_id
        ]
        assert len(cells) == 1, (name, [c.info.run_name for c in cells])
        assert cells[0].info.status == "FINISHED"
        assert cells[0].data.metrics[metric] == value
    assert not [
        r for r in runs if r.data.tags.get("mlflow.parentRunId") == steps["join"].info.run_id
    ]

    # Nothing changed: the second run runs nothing.
    again = run_pipeline(path, cluster=cluster.address)
    assert again.ok and again.ran() == []
    assert {n: s.status for n, s in again.steps.items()} == dict.fromkeys(STEPS, StepStatus.CACHED)
    assert json.loads((out / "result.json").read_text()) == result


def test_a_pipeline_runs_on_a_local_cluster_of_worker_processes(
    project: Path, local_cluster: Cluster
):
    run_on(local_cluster, project)


def test_a_pipeline_runs_on_dask_scheduler_and_worker_commands(
    project: Path, dask_processes: Cluster
):
    assert shutil.which("dask") or Path(sys.executable).with_name("dask").is_file()
    run_on(dask_processes, project)


def test_an_address_with_no_scheduler_is_a_pipeline_error(project: Path):
    path = write_pipeline(project)
    address = f"tcp://127.0.0.1:{free_port()}"  # nothing listens there
    with pytest.raises(PipelineError, match="Cannot connect to the Dask scheduler") as err:
        run_pipeline(path, cluster=address)
    assert address in str(err.value) and "dask scheduler" in str(err.value)
    assert not (project / "out").exists()  # no step ran
    get_tracker().flush(30)
    assert mlflow_runs() == []  # and nothing was recorded as if it had
