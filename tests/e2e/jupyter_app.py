"""A real JupyterLab 4 or Notebook 7 server for the browser tests: on 127.0.0.1 with a token,
its config, runtime, settings and workspaces in the test's own folder, and Debian's chromium
driven by Playwright to look at it."""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",  # we may run as root
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",  # without these Chromium keeps calling out
    "--disable-component-update",
    "--disable-sync",
]

# No news or update toasts over the notebook (and no request to the outside for them); a
# notebook's kernel starts without a "Select Kernel" dialog.
QUIET_SETTINGS: dict[str, dict[str, Any]] = {
    "@jupyterlab/apputils-extension/notification": {"fetchNews": "false", "checkForUpdates": False},
    "@jupyterlab/notebook-extension/tracker": {"autoStartDefaultKernel": True},
}

APPS = ("jupyterlab", "notebook")
START_TIMEOUT = 120


@dataclass
class JupyterApp:
    """A running server: where it answers, its token, and its log file."""

    url: str
    token: str
    log: Path


def require_browser() -> str:
    """Debian's chromium and the playwright package, or a failure saying which is missing."""
    chromium = shutil.which("chromium")
    if chromium is None:
        pytest.fail(
            "chromium is not installed: run `make system` (scripts/install-system-deps.sh) or "
            "`apt-get install chromium`; the browser tests drive Debian's chromium"
        )
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        pytest.fail(
            "the playwright Python package is missing: pip install playwright (never run "
            "`playwright install`: the tests use Debian's chromium)"
        )
    return chromium


def launch_chromium(playwright: Any) -> Any:
    """Debian's chromium, headless, through a started ``sync_playwright()``."""
    chromium = require_browser()
    return playwright.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS, headless=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def write_settings(settings_dir: Path, settings: dict[str, dict[str, Any]]) -> None:
    """JupyterLab user settings, one file per plugin id ("@scope/extension:plugin" or
    "@scope/extension/plugin")."""
    for plugin, values in settings.items():
        path = settings_dir / f"{plugin.replace(':', '/')}.jupyterlab-settings"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(values))


def jupyter_env(work: Path, python: str | Path = sys.executable) -> dict[str, str]:
    """The environment of a Jupyter process of the tests: its config, data, runtime and
    workspace folders are empty ones in ``work`` (nothing from ~/.jupyter or another venv),
    ``python``'s scripts come first on PATH, and no nbmlops or MLflow setting leaks in."""
    for folder in ("config", "data", "runtime", "workspaces", "settings"):
        (work / folder).mkdir(parents=True, exist_ok=True)
    return {
        **{
            k: v
            for k, v in os.environ.items()
            if not k.startswith(("NBMLOPS_", "JUPYTER"))
            and k not in ("MLFLOW_TRACKING_URI", "JPY_SESSION_NAME", "VIRTUAL_ENV")
        },
        "PATH": str(Path(python).parent) + os.pathsep + os.environ.get("PATH", ""),
        "JUPYTER_CONFIG_DIR": str(work / "config"),
        "JUPYTER_DATA_DIR": str(work / "data"),
        "JUPYTER_RUNTIME_DIR": str(work / "runtime"),
        "JUPYTERLAB_SETTINGS_DIR": str(work / "settings"),
        "JUPYTERLAB_WORKSPACES_DIR": str(work / "workspaces"),
        "MLFLOW_DISABLE_TELEMETRY": "true",
        "DO_NOT_TRACK": "true",
    }


def start(
    app: str,
    project: Path,
    work: Path,
    settings: dict[str, dict[str, Any]],
    *,
    python: str | Path = sys.executable,
) -> tuple[subprocess.Popen, JupyterApp]:
    """``python -m jupyterlab`` or ``python -m notebook`` on 127.0.0.1 with a token, serving
    ``project``, with ``settings`` as its user settings. Its config folder is an empty one in
    ``work``: the server extensions are the ones its Python's installs enable, nothing more.
    JupyterLab exposes itself to the page (``window.jupyterapp``) so tests can run commands."""
    if app not in APPS:
        raise ValueError(f"app must be one of {APPS}, not {app!r}")
    token = secrets.token_hex(16)
    port = free_port()
    env = jupyter_env(work, python)
    write_settings(work / "settings", settings)
    log = work / f"{app}.log"
    cmd = [
        str(python),
        "-m",
        app,
        "--no-browser",
        "--ip=127.0.0.1",
        f"--port={port}",
        "--ServerApp.port_retries=0",
        f"--IdentityProvider.token={token}",
        f"--ServerApp.root_dir={project}",
        "--LabServerApp.extension_manager=readonly",  # the default one queries PyPI
    ]
    if app == "jupyterlab":
        cmd += [
            "--LabApp.news_url=",
            "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
            "--LabApp.expose_app_in_browser=True",
        ]
    if os.geteuid() == 0:
        cmd.append("--allow-root")
    with log.open("wb") as out:
        proc = subprocess.Popen(
            cmd, cwd=project, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + START_TIMEOUT
    while True:
        if proc.poll() is not None:
            pytest.fail(f"{app} exited ({proc.returncode}):\n{log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(f"{url}/api/status?token={token}", timeout=2) as r:
                if r.status == 200:
                    break
        except OSError:
            pass
        if time.monotonic() > deadline:
            stop(proc)
            pytest.fail(f"{app} did not answer in {START_TIMEOUT} s:\n{log.read_text()[-3000:]}")
        time.sleep(0.3)
    return proc, JupyterApp(url, token, log)


def stop(proc: subprocess.Popen) -> None:
    """Stop the server we started (it shuts its kernels down), then anything left in the
    process group it leads (a kernel that did not exit)."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
