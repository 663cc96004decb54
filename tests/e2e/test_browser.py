"""The dashboard in a real JupyterLab, driven by a real browser (Debian's chromium through
Playwright): a notebook loads nbmlops, tracks two cells and runs ``%mlops``; the dashboard's
tabs and the tracked runs must be visible. A screenshot lands in test-artifacts/."""

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
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import ARTIFACTS, write_notebook

pytestmark = [pytest.mark.kernel, pytest.mark.slow]

CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",  # we may run as root
    "--disable-gpu",
    "--disable-background-networking",  # without these Chromium keeps calling out
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]

CELLS = [
    "%load_ext nbmlops\nimport nbmlops",
    "%%track first-run\nimport pandas as pd\nalpha = 0.5\n"
    "raw = pd.DataFrame({'a': range(50), 'b': range(50)})\nscore = alpha * 3",
    "%%track second-run\nalpha = 0.25\n"
    "for _step in range(5):\n    nbmlops.log_metric('loss', 1 / (_step + 1) + alpha, step=_step)\n"
    "score = float(raw.a.mean()) * alpha",
    "%track sync",
    "%mlops",
]


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


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Lab:
    url: str
    token: str
    log: Path


def _lab_settings(settings_dir: Path) -> None:
    """No news or update toasts over the notebook (and no request to the outside for them);
    the notebook's kernel starts without a "Select Kernel" dialog."""
    for plugin, values in {
        "apputils-extension/notification": {"fetchNews": "false", "checkForUpdates": False},
        "notebook-extension/tracker": {"autoStartDefaultKernel": True},
    }.items():
        path = settings_dir / "@jupyterlab" / f"{plugin}.jupyterlab-settings"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(values))


@pytest.fixture
def jupyter_lab(project: Path, tmp_path: Path) -> Iterator[Lab]:
    token = secrets.token_hex(16)
    port = free_port()
    settings_dir = tmp_path / "lab-settings"
    _lab_settings(settings_dir)
    env = {
        **os.environ,
        "JUPYTER_RUNTIME_DIR": str(tmp_path / "runtime"),
        "JUPYTERLAB_SETTINGS_DIR": str(settings_dir),
        "JUPYTERLAB_WORKSPACES_DIR": str(tmp_path / "workspaces"),
        "MLFLOW_DISABLE_TELEMETRY": "true",
        "DO_NOT_TRACK": "true",
    }
    log = tmp_path / "jupyter-lab.log"
    cmd = [
        sys.executable,
        "-m",
        "jupyterlab",
        "--no-browser",
        "--ip=127.0.0.1",
        f"--port={port}",
        "--ServerApp.port_retries=0",
        f"--IdentityProvider.token={token}",
        f"--ServerApp.root_dir={project}",
        "--LabApp.news_url=",
        "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
        "--LabApp.extension_manager=readonly",  # the default one queries PyPI
    ]
    if os.geteuid() == 0:
        cmd.append("--allow-root")
    with log.open("wb") as out:
        proc = subprocess.Popen(
            cmd, cwd=project, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 90
        while True:
            if proc.poll() is not None:
                pytest.fail(f"jupyter lab exited ({proc.returncode}):\n{log.read_text()[-3000:]}")
            try:
                with urllib.request.urlopen(f"{url}/api/status?token={token}", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"jupyter lab did not answer in 90 s:\n{log.read_text()[-3000:]}")
            time.sleep(0.3)
        yield Lab(url, token, log)
    finally:
        _stop(proc)


def _stop(proc: subprocess.Popen) -> None:
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


def test_dashboard_renders_in_jupyterlab(project: Path, jupyter_lab: Lab):
    chromium = require_browser()
    from playwright.sync_api import TimeoutError as PlaywrightTimeout
    from playwright.sync_api import expect, sync_playwright

    write_notebook(project / "board.ipynb", CELLS)
    ARTIFACTS.mkdir(exist_ok=True)
    shot = ARTIFACTS / "browser-dashboard.png"
    lineage_shot = ARTIFACTS / "browser-dashboard-lineage.png"
    for old in (shot, lineage_shot):
        old.unlink(missing_ok=True)
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS, headless=True)
        try:
            page = browser.new_page(viewport={"width": 1500, "height": 1300})
            page.set_default_timeout(120_000)
            page.goto(f"{jupyter_lab.url}/lab/tree/board.ipynb?token={jupyter_lab.token}")
            page.wait_for_selector(".jp-NotebookPanel .jp-Cell", state="visible")
            dialog = page.locator(".jp-Dialog button", has_text="Select")
            try:  # only when the setting above did not apply
                dialog.first.click(timeout=5_000)
            except PlaywrightTimeout:
                pass
            # the kernel is up when the toolbar's kernel status reads idle
            page.wait_for_selector(
                ".jp-NotebookPanel .jp-Notebook-ExecutionIndicator[data-status='idle']",
                state="attached",
                timeout=120_000,
            )
            try:
                page.locator(".lm-MenuBar-itemLabel", has_text="Run").first.click()
                page.locator(".lm-Menu-itemLabel", has_text="Run All Cells").first.click()
                tabs = page.locator(".jupyter-widget-tab .lm-TabBar-tab")
                expect(tabs.filter(has_text="Experiments")).to_be_visible(timeout=180_000)
                expect(tabs.filter(has_text="Lineage")).to_be_visible()
                table = page.locator("table.nbmlops-runs")
                expect(table.locator("tr.nbmlops-run", has_text="second-run")).to_be_visible(
                    timeout=120_000
                )
                expect(table.locator("tr.nbmlops-run", has_text="first-run")).to_be_visible()
                errors = page.locator(".nbmlops-error")
                assert errors.count() == 0, errors.first.inner_text()
                assert page.locator(".jp-OutputArea-output[data-mime-type*='error']").count() == 0

                # picking both runs in the list sends the selection to the kernel
                picker = page.locator(".widget-select-multiple select").first
                labels = [o.strip() for o in picker.locator("option").all_inner_texts()]
                assert len(labels) == 2, labels
                picker.select_option(label=labels)
                compare = page.locator("table.nbmlops-compare")
                expect(compare).to_be_visible(timeout=60_000)
                expect(compare).to_contain_text("first-run")
                expect(compare).to_contain_text("second-run")
                tabs.filter(has_text="Curves").click()
                expect(page.get_by_text("loss for 1 of 2 runs")).to_be_visible(timeout=60_000)
                page.screenshot(path=str(shot), full_page=True)

                # the lineage tab is built when first shown
                tabs.filter(has_text="Lineage").click()
                nodes = page.locator(
                    ".jupyter-widget-tab .widget-select:not(.widget-select-multiple) option"
                )
                expect(nodes.filter(has_text="run second-run")).to_have_count(1, timeout=60_000)
                expect(page.locator(".nbmlops-details")).to_contain_text("second-run")
                expect(nodes.filter(has_text="run first-run")).to_have_count(1)
                expect(page.get_by_text("the selected node is outlined")).to_be_visible(
                    timeout=60_000
                )
                drawing = page.locator(".jupyter-widget-tab img.widget-image:visible").last
                drawing.scroll_into_view_if_needed()
            finally:
                page.screenshot(
                    path=str(shot if not shot.exists() else lineage_shot), full_page=True
                )
        finally:
            browser.close()
    assert shot.stat().st_size > 10_000 and lineage_shot.stat().st_size > 10_000
