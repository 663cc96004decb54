"""Shared fixtures: an isolated project folder, real notebooks run by papermill in real
kernels, and the tracking store in two lanes (embedded SQLite, and the server lane's
``mlflow server`` on PostgreSQL, whose fixtures live in tests/server/conftest.py)."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import nbformat
import pytest

# No test may reach outside this machine: MLflow's telemetry is off for us and our kernels.
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("DO_NOT_TRACK", "true")

pytest_plugins = ["tests.server_fixtures"]

ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts"


def forget_mlflow_tracking_uri() -> None:
    """Undo ``mlflow.set_tracking_uri`` of a test: it sets MLflow's process-wide URI and
    exports MLFLOW_TRACKING_URI, which kernels and CLIs started later (by module-scoped
    fixtures too, before any function fixture runs) would inherit."""
    os.environ.pop("MLFLOW_TRACKING_URI", None)
    utils = sys.modules.get("mlflow.tracking._tracking_service.utils")
    if utils is not None:
        utils.set_tracking_uri(None)


forget_mlflow_tracking_uri()


def kernel_env(**extra: str) -> dict[str, str]:
    """This process's environment for a kernel or CLI a test starts: no nbmlops setting or
    MLflow URI of the outside, no telemetry, plus ``extra``."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("NBMLOPS_") and k not in ("MLFLOW_TRACKING_URI", "JPY_SESSION_NAME")
    }
    env["MLFLOW_DISABLE_TELEMETRY"] = "true"
    env.update(extra)
    return env


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """No outside setting leaks into a test, nor out of it."""
    forget_mlflow_tracking_uri()
    for var in list(os.environ):
        if var.startswith("NBMLOPS_") or var == "JPY_SESSION_NAME":
            monkeypatch.delenv(var, raising=False)
    yield
    forget_mlflow_tracking_uri()


@pytest.fixture(autouse=True)
def fresh_tracker() -> Iterator[None]:
    """Each test gets this process's tracker anew (settings are read per project folder)."""
    from nbmlops.core.tracking.session import reset_tracker

    reset_tracker()
    yield
    reset_tracker()


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty project folder as the working folder."""
    folder = tmp_path / "project"
    folder.mkdir()
    monkeypatch.chdir(folder)
    return folder


@dataclass
class Lane:
    """Where runs go: the embedded SQLite store, or an MLflow server on PostgreSQL."""

    name: str
    project: Path
    env: dict[str, str] = field(default_factory=dict)
    uri: str = ""

    def client(self):
        from mlflow import MlflowClient

        return MlflowClient(self.uri)

    def runs(self, experiment: str) -> list[Any]:
        client = self.client()
        exp = client.get_experiment_by_name(experiment)
        if exp is None:
            return []
        return client.search_runs([exp.experiment_id], max_results=1000)


@pytest.fixture(params=["sqlite", pytest.param("server", marks=pytest.mark.server)])
def lane(request: pytest.FixtureRequest, project: Path, monkeypatch: pytest.MonkeyPatch) -> Lane:
    if request.param == "sqlite":
        uri = f"sqlite:///{project / '.nbmlops' / 'mlflow.db'}"
        return Lane("sqlite", project, {}, uri)
    server = request.getfixturevalue("mlflow_server")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", server.uri)
    return Lane("server", project, {"MLFLOW_TRACKING_URI": server.uri}, server.uri)


def unique(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex[:8]}"


def write_notebook(path: Path, cells: list[str], parameters: str | None = None) -> Path:
    """A notebook of code cells; ``parameters`` becomes a papermill 'parameters' cell first."""
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {
        "name": "python3",
        "display_name": "Python 3",
        "language": "python",
    }
    if parameters is not None:
        cell = nbformat.v4.new_code_cell(parameters)
        cell.metadata["tags"] = ["parameters"]
        nb.cells.append(cell)
    nb.cells += [nbformat.v4.new_code_cell(src) for src in cells]
    nbformat.write(nb, str(path))
    return path


def papermill_command(
    notebook: Path, out: Path, cwd: Path, parameters: dict[str, Any] | None = None
) -> list[str]:
    cmd = [
        sys.executable,
        "-m",
        "papermill",
        str(notebook),
        str(out),
        "-k",
        "python3",
        "--cwd",
        str(cwd),
        "--no-progress-bar",
        "--execution-timeout",
        "600",
        # dozens of kernels starting at once on two busy cores can take more than papermill's
        # default minute to answer; how long a kernel takes to start is not what tests check
        "--start-timeout",
        "300",
    ]
    for key, value in (parameters or {}).items():
        cmd += ["-p", key, str(value)]
    return cmd


def run_papermill_parallel(
    notebook: Path, cwd: Path, parameter_sets: list[dict[str, Any]], timeout: float = 900
) -> list[tuple[int, str]]:
    """Start one papermill process per parameter set at once; (exit code, stderr) of each."""
    procs = []
    for i, params in enumerate(parameter_sets):
        out = notebook.with_name(f"{notebook.stem}-{i}.out.ipynb")
        procs.append(
            subprocess.Popen(
                papermill_command(notebook, out, cwd, params),
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
        )
    results = []
    for i, proc in enumerate(procs):
        _out, err = proc.communicate(timeout=timeout)
        if proc.returncode != 0 and _KERNEL_NEVER_STARTED in err:
            # The plain papermill CLI picks TCP ports for its kernel by binding and releasing
            # them, so dozens of papermill processes starting at once can race for a port and
            # a kernel dies before it runs anything (no nbmlops code ran). That is a property
            # of jupyter_client's TCP transport, not of what these tests check; nbmlops's own
            # runner uses IPC sockets for this reason. Run such a notebook once more.
            out = notebook.with_name(f"{notebook.stem}-{i}.out.ipynb")
            retry = subprocess.run(
                papermill_command(notebook, out, cwd, parameter_sets[i]),
                capture_output=True,
                text=True,
                timeout=timeout,
            )
            results.append((retry.returncode, retry.stderr))
            continue
        results.append((proc.returncode, err))
    wait_handed_off(cwd)
    return results


_KERNEL_NEVER_STARTED = "Kernel died before replying to kernel_info"


def run_papermill(
    notebook: Path,
    cwd: Path,
    parameters: dict[str, Any] | None = None,
    env: dict[str, str] | None = None,
    check: bool = True,
    timeout: float = 300,
) -> subprocess.CompletedProcess:
    """Run a notebook with the papermill CLI in a real kernel (a separate process, as users do)."""
    out = notebook.with_name(notebook.stem + ".out.ipynb")
    cmd = papermill_command(notebook, out, cwd, parameters)
    proc = subprocess.run(
        cmd, capture_output=True, text=True, timeout=timeout, env={**os.environ, **(env or {})}
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"papermill failed ({proc.returncode}):\n{proc.stderr[-4000:]}")
    wait_handed_off(cwd)
    return proc


def wait_handed_off(project: Path, timeout: float = 300) -> None:
    """Wait until the detached shipper of a batch kernel (plain papermill or nbclient, ``ship:
    auto``) has shipped every segment handed to it: the runs are then in MLflow."""
    import time

    journal = project / ".nbmlops" / "journal"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not any(m.with_suffix(".jsonl").exists() for m in journal.glob("*.handoff")):
            return
        time.sleep(0.2)


def outputs_text(notebook: Path) -> str:
    """All text the executed notebook shows (streams, results, errors)."""
    nb = nbformat.read(str(notebook), as_version=4)
    parts = []
    for cell in nb.cells:
        for out in cell.get("outputs", []):
            if "text" in out:
                parts.append(out["text"])
            for key in ("text/plain", "text/html"):
                if key in out.get("data", {}):
                    parts.append(out["data"][key])
            if out.get("output_type") == "error":
                parts.append(out["ename"] + ": " + out["evalue"])
    return "\n".join(parts)
