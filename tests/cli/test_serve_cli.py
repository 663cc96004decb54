"""``nbmlops serve`` and ``nbmlops deploy export`` as a user runs them: the serve command in
its own process on a real port, stopped with SIGTERM like a service manager would."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest
import typer
import yaml
from typer.testing import CliRunner

from nbmlops.cli import serve
from nbmlops.core.serving.errors import ModelNotFoundError, ServingError
from nbmlops.core.serving.predlog import read_prediction_log
from nbmlops.exceptions import UsageError
from tests.core.serving.conftest import frame, records, store  # noqa: F401  (the registry)

app = typer.Typer()
app.command("serve")(serve.serve)
app.add_typer(serve.deploy_app, name="deploy")
runner = CliRunner()

# What `nbmlops` does once main.py mounts these commands (errors: one line, exit 2).
MAIN = """
import sys, typer
from nbmlops.cli import serve
from nbmlops.exceptions import NbmlopsError
app = typer.Typer()
app.command("serve")(serve.serve)
app.add_typer(serve.deploy_app, name="deploy")
try:
    app()
except NbmlopsError as err:
    print(f"error: {err}", file=sys.stderr)
    sys.exit(2)
"""


@pytest.fixture
def project(store, tmp_path, monkeypatch):  # noqa: F811
    folder = tmp_path / "project"
    folder.mkdir()
    monkeypatch.chdir(folder)
    monkeypatch.setenv("NBMLOPS_TRACKING_URI", store.uri)
    return folder


def test_parse_size():
    assert serve.parse_size("1MiB") == 1 << 20
    assert serve.parse_size("512 KiB") == 512 * 1024
    assert serve.parse_size("2MB") == 2_000_000
    assert serve.parse_size("4096") == 4096
    for bad in ("", "1 parsec", "0", "-1"):
        with pytest.raises(UsageError):
            serve.parse_size(bad)


def test_deploy_export_kserve(store, project):  # noqa: F811
    name = store.register(aliases={"champion": 1, "challenger": 2})
    result = runner.invoke(
        app,
        ["deploy", "export", f"{name}@champion", "--target", "kserve", "--out", "k8s",
         "--canary", f"{name}@challenger:25", "--storage-uri", "s3://bucket/churn"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "wrote" in result.output and "kubectl apply" in result.output
    canary = yaml.safe_load((project / "k8s" / "inferenceservice-canary.yaml").read_text())
    assert canary["spec"]["predictor"]["canaryTrafficPercent"] == 25


def test_deploy_export_docker(store, project):  # noqa: F811
    name = store.register()
    result = runner.invoke(app, ["deploy", "export", f"{name}@1", "-t", "docker", "-o", "img"])
    assert result.exit_code == 0, result.output
    assert (project / "img" / "Dockerfile").is_file()
    assert (project / "img" / "model" / "MLmodel").is_file()


def test_serve_names_a_missing_model(store, project):  # noqa: F811
    result = runner.invoke(app, ["serve", "no-such-model@champion", "--port", "0"])
    assert isinstance(result.exception, ModelNotFoundError)
    assert "No registered model 'no-such-model'" in str(result.exception)


def test_serve_refuses_a_taken_port_before_loading(store, project):  # noqa: F811
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = runner.invoke(app, ["serve", "anything@champion", "--port", str(port)])
    assert isinstance(result.exception, ServingError)
    assert f"Cannot listen on 127.0.0.1:{port}" in str(result.exception)


def launch(store, project: Path, spec: str) -> tuple[subprocess.Popen[str], str, list[str]]:  # noqa: F811
    """``nbmlops serve SPEC`` in its own process; (process, URL, the lines it printed)."""
    env = {**os.environ, "NBMLOPS_TRACKING_URI": store.uri, "MLFLOW_DISABLE_TELEMETRY": "true"}
    proc = subprocess.Popen(
        [sys.executable, "-c", MAIN, "serve", spec, "--port", "0", "--log-level", "warning"],
        cwd=project, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    printed = []
    began = time.monotonic()
    for line in proc.stdout:  # type: ignore[union-attr]
        printed.append(line)
        if line.startswith("serving on "):
            return proc, line.split()[2], printed
        assert time.monotonic() - began < 60
    proc.kill()
    raise AssertionError(proc.stderr.read())  # type: ignore[union-attr]


def stop(proc: subprocess.Popen[str]) -> None:
    proc.send_signal(signal.SIGTERM)
    _out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err


@pytest.mark.slow
def test_serve_answers_then_stops_cleanly_on_sigterm(store, project):  # noqa: F811
    name = store.register(aliases={"champion": 2})
    proc, url, _printed = launch(store, project, f"{name}@champion")
    try:
        health = json.load(urllib.request.urlopen(f"{url}/health", timeout=10))
        assert health["versions"] == [2]
        rows = frame(3, seed=8)
        request = urllib.request.Request(
            f"{url}/predict", data=json.dumps(records(rows)).encode(),
            headers={"Content-Type": "application/json", "X-Request-Id": "cli-1"},
        )  # fmt: skip
        answer = json.load(urllib.request.urlopen(request, timeout=10))
        assert answer["predictions"] == store.expected("b", rows) and answer["version"] == 2
    finally:
        stop(proc)
    log = read_prediction_log(Path(project) / ".nbmlops")
    assert list(log.request_id) == ["cli-1"]  # flushed before the process ended


@pytest.mark.slow
def test_a_second_start_serves_from_the_cache_and_follows_the_registry(store, project):  # noqa: F811
    name = store.register(aliases={"champion": 1})
    proc, _url, printed = launch(store, project, f"{name}@champion")
    stop(proc)
    assert not any("serving cache" in line for line in printed)
    store.client.set_registered_model_alias(name, "champion", "2")  # while it is down

    proc, url, printed = launch(store, project, f"{name}@champion")
    try:
        assert any("version 1" in line for line in printed)
        assert any("started from the serving cache" in line for line in printed)
        deadline = time.monotonic() + 30
        while True:  # the registry's answer arrives within seconds, and version 2 serves
            health = json.load(urllib.request.urlopen(f"{url}/health", timeout=10))
            if health["versions"] == [2] and health["confirmed"]:
                break
            assert time.monotonic() < deadline, health
            time.sleep(0.1)
    finally:
        stop(proc)


def launch_logging(
    store,  # noqa: F811
    project: Path,
    spec: str,
    log: Path,
    *args: str,
) -> tuple[subprocess.Popen[str], int]:
    """``nbmlops serve SPEC ARGS`` with its log (stderr) going to ``log``; (process, port)."""
    env = {**os.environ, "NBMLOPS_TRACKING_URI": store.uri, "MLFLOW_DISABLE_TELEMETRY": "true"}
    with open(log, "w") as err:
        proc = subprocess.Popen(
            [sys.executable, "-c", MAIN, "serve", spec, "--port", "0", "--log-level", "warning",
             *args],
            cwd=project, env=env, stdout=subprocess.PIPE, stderr=err, text=True,
        )  # fmt: skip
    began = time.monotonic()
    for line in proc.stdout:  # type: ignore[union-attr]
        if line.startswith("serving on "):
            return proc, int(line.split()[2].rsplit(":", 1)[1])
        assert time.monotonic() - began < 60
    proc.kill()
    raise AssertionError(log.read_text()[-3000:])


async def _burst(port: int, count: int, at_once: int) -> list[int]:
    """``count`` connections to 127.0.0.1:port, ``at_once`` at a time, each asking one
    request and closing; the HTTP status of each answer (0: none)."""
    import asyncio

    gate = asyncio.Semaphore(at_once)

    async def one() -> int:
        async with gate:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            try:
                writer.write(
                    b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
                )
                head = await asyncio.wait_for(reader.readline(), 60)
                return int(head.split()[1]) if head else 0
            finally:
                writer.close()
                with contextlib.suppress(OSError):
                    await writer.wait_closed()

    return await asyncio.gather(*(one() for _ in range(count)))


@pytest.mark.slow
def test_a_flood_of_refused_connections_is_summed_up_not_logged_line_by_line(
    store,  # noqa: F811
    project,
    tmp_path,
):
    import asyncio
    import re

    name = store.register()
    log = tmp_path / "gateway.log"
    # Two connections allowed; two held open with half a request head keep the gateway full,
    # so that every connection of the burst is refused.
    proc, port = launch_logging(
        store, project, f"{name}@champion", log, "--max-connections", "2", "--read-timeout", "600"
    )
    held = []
    try:
        for _ in range(2):
            conn = socket.create_connection(("127.0.0.1", port), timeout=30)
            conn.sendall(b"GET /health HTTP/1.1\r\n")
            held.append(conn)
        statuses = asyncio.run(_burst(port, 2000, at_once=50))
        refused = statuses.count(503)
        assert refused > 1500, sorted(set(statuses))

        def accounted() -> tuple[int, int, list[int]]:
            text = log.read_text()
            lines = text.count("Exceeded concurrency limit")
            summed = [
                int(n.replace(",", ""))
                for n in re.findall(
                    r"refused ([\d,]+) more connections? over the concurrency limit", text
                )
            ]
            return lines, lines + sum(summed), summed

        deadline = time.monotonic() + 120
        while accounted()[1] < refused:  # the summary comes within its interval (10 s)
            assert proc.poll() is None and time.monotonic() < deadline, log.read_text()[-3000:]
            time.sleep(0.2)
        lines, total, summaries = accounted()
        assert lines <= 5, lines  # not one line per refused connection
        assert summaries and total == refused  # and every refusal is counted
    finally:
        for conn in held:
            conn.close()
        stop(proc)


def _helpers_of(proc: subprocess.Popen[str]) -> list[Any]:
    import psutil

    return psutil.Process(proc.pid).children(recursive=True)


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_serve_stops_its_registry_helper_with_it(store, project, sig):  # noqa: F811
    import psutil

    name = store.register()
    proc, _url, _printed = launch(store, project, f"{name}@champion")
    try:
        children = _helpers_of(proc)
        assert any("nbmlops.core.serving.registry" in " ".join(c.cmdline()) for c in children)
    finally:
        proc.send_signal(sig)
        proc.communicate(timeout=60)
    _gone, alive = psutil.wait_procs(children, timeout=60)
    assert not alive, [" ".join(p.cmdline()) for p in alive]


def test_serve_refuses_an_untagged_version_that_would_run_code(store, project, tmp_path):  # noqa: F811
    from tests.core.registry.payloads import ISSUE_PAYLOADS
    from tests.core.serving.test_unscanned_versions import evil_folder, untagged

    marker = tmp_path / "ran"
    payload = ISSUE_PAYLOADS[0]
    offender = payload.offender
    name = untagged(store, evil_folder(store, payload, tmp_path / "model", marker))
    env = {**os.environ, "NBMLOPS_TRACKING_URI": store.uri, "MLFLOW_DISABLE_TELEMETRY": "true"}
    done = subprocess.run(
        [sys.executable, "-c", MAIN, "serve", f"{name}@champion", "--port", "0"],
        cwd=project, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 2, done.stderr
    assert "refused by the security scan (it has no scan verdict)" in done.stderr
    assert f"imports {offender} (" in done.stderr
    assert not marker.exists()
