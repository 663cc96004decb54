"""The `nbmlops` command line, run as users run it (a subprocess)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest


def cli(project: Path, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "nbmlops.cli.main", *args],
        cwd=project,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def test_help_lists_the_commands(project: Path):
    proc = cli(project, "--help")
    assert proc.returncode == 0
    for command in ("sync", "status", "config", "ui"):
        assert command in proc.stdout


def test_a_bad_setting_is_one_clear_line_and_exit_code_2(project: Path):
    (project / "nbmlops.yaml").write_text("exit_flush_seconds: -3\n")
    proc = cli(project, "status")
    assert proc.returncode == 2
    assert "exit_flush_seconds" in proc.stderr and "nbmlops.yaml" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_status_and_config_on_an_empty_project(project: Path):
    proc = cli(project, "status")
    assert proc.returncode == 0 and "runs not yet in MLflow" in proc.stdout
    conf = json.loads(cli(project, "config").stdout)
    assert conf["resolved_tracking_uri"] == f"sqlite:///{project}/.nbmlops/mlflow.db"


def test_sync_with_nothing_to_do(project: Path):
    proc = cli(project, "sync")
    assert proc.returncode == 0 and "runs shipped" in proc.stdout


@pytest.mark.slow
def test_ui_serves_the_project_store_on_localhost(project: Path):
    # --background returns once the UI answers: minutes on a loaded machine.
    proc = cli(project, "ui", "--background", "--port", "5731", timeout=600)
    assert proc.returncode == 0, proc.stderr
    info = json.loads((project / ".nbmlops" / "ui.json").read_text())
    assert info["url"].startswith("http://127.0.0.1:")
    try:
        deadline = time.monotonic() + 90
        while True:
            try:
                with urllib.request.urlopen(info["url"] + "/health", timeout=2) as resp:
                    assert resp.status == 200
                    break
            except OSError:
                if time.monotonic() > deadline:
                    raise AssertionError(
                        (project / ".nbmlops" / "ui.log").read_text()[-3000:]
                    ) from None
                time.sleep(0.5)
        from nbmlops.config import load_settings
        from nbmlops.core.tracking.session import ui_url

        assert ui_url(load_settings(project)) == info["url"]  # summaries link to it
    finally:
        os.killpg(info["pid"], signal.SIGTERM)
