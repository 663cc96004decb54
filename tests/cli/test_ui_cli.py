"""``nbmlops ui`` in the foreground, stopped like a service manager stops it: the MLflow UI and
every process it started stop with it (RELIABILITY case 33)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import psutil
import pytest

from tests.services import find_free_port


def _group(pgid: int) -> list[psutil.Process]:
    found = []
    for proc in psutil.process_iter():
        try:
            if os.getpgid(proc.pid) == pgid:
                found.append(proc)
        except (ProcessLookupError, psutil.Error):
            continue
    return found


@pytest.mark.slow
def test_sigterm_stops_the_ui_and_every_process_it_started(project: Path):
    env = {**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "nbmlops.cli.main", "ui", "--port", str(find_free_port())],
        cwd=project, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    info_path = project / ".nbmlops" / "ui.json"
    ui_log = project / ".nbmlops" / "ui.log"
    started: list[psutil.Process] = []
    try:
        deadline = time.monotonic() + 600  # MLflow's server takes minutes on a loaded machine
        while True:  # until the UI answers on its port
            assert proc.poll() is None, proc.communicate()
            if info_path.exists():
                info = json.loads(info_path.read_text())
                try:
                    with urllib.request.urlopen(info["url"] + "/health", timeout=2) as resp:
                        if resp.status == 200:
                            break
                except OSError:
                    pass
            assert time.monotonic() < deadline, ui_log.read_text()[-3000:]
            time.sleep(0.3)
        started = [*psutil.Process(proc.pid).children(recursive=True), *_group(info["pid"])]
        assert any(p.pid == info["pid"] for p in started)
        assert len({p.pid for p in started}) >= 2  # mlflow ui runs a server process
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=60)
    _gone, alive = psutil.wait_procs(started, timeout=60)
    assert not alive, [" ".join(p.cmdline()) for p in alive]
    assert not info_path.exists()


@pytest.mark.slow
def test_ui_prints_its_runs_page_once_it_answers_and_a_fresh_browser_lands_on_the_runs(
    project: Path,
):
    """Progress while the server starts; the URL only when it answers, on the experiment's
    runs page; a fresh chromium (no stored view) shows the runs table there, not GenAI's
    empty Traces page."""
    import queue
    import threading

    from mlflow import MlflowClient

    from nbmlops.api.tracking import open_store
    from nbmlops.config import load_settings
    from tests.conftest import ARTIFACTS
    from tests.e2e.test_browser import CHROMIUM_ARGS, require_browser

    chromium = require_browser()
    settings = load_settings(project)
    open_store(settings)
    client = MlflowClient(settings.resolved_tracking_uri)
    exp_id = client.create_experiment("wine")
    run = client.create_run(exp_id, run_name="forest-depth-4")
    client.log_metric(run.info.run_id, "acc", 0.93)
    client.set_terminated(run.info.run_id)

    env = {**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "nbmlops.cli.main", "ui", "--port", str(find_free_port())],
        cwd=project, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    lines: queue.Queue[str] = queue.Queue()
    threading.Thread(target=lambda: [lines.put(x) for x in proc.stdout], daemon=True).start()
    try:
        url = None
        deadline = time.monotonic() + 600  # MLflow's server takes minutes on a loaded machine
        while url is None:
            assert proc.poll() is None, proc.stderr.read()
            assert time.monotonic() < deadline, (project / ".nbmlops" / "ui.log").read_text()
            try:
                line = lines.get(timeout=1)
            except queue.Empty:
                continue
            if "http://" in line:
                url = line.strip()
                # Printed only once the server answers: asked at once, it does.
                base = url.split("/#", 1)[0]
                with urllib.request.urlopen(base + "/health", timeout=30) as resp:
                    assert resp.status == 200
        assert url.endswith(f"/#/experiments/{exp_id}/runs?workflowType=machine_learning"), url

        from playwright.sync_api import sync_playwright

        ARTIFACTS.mkdir(exist_ok=True)
        with sync_playwright() as pw:
            browser = pw.chromium.launch(
                executable_path=chromium, args=[*CHROMIUM_ARGS, "--disable-quic"]
            )
            try:
                page = browser.new_context(viewport={"width": 1400, "height": 900}).new_page()
                page.goto(url, timeout=300_000, wait_until="domcontentloaded")
                try:
                    page.get_by_text("forest-depth-4").first.wait_for(timeout=300_000)
                finally:
                    page.screenshot(path=str(ARTIFACTS / "ui-runs-table.png"))
                assert "workflowType=machine_learning" in page.url
            finally:
                browser.close()
    finally:
        proc.send_signal(signal.SIGTERM)
        _out, err = proc.communicate(timeout=120)
    assert "starting the MLflow UI on http://127.0.0.1:" in err
    assert "the MLflow UI answers after" in err
    assert "stopping the MLflow UI (process group" in err
