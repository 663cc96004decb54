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
        deadline = time.monotonic() + 120
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
