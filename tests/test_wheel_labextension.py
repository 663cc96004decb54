"""The wheel carries the JupyterLab extension prebuilt (users need no Node.js) and the config
that enables the server extension: built once per test run with ``pip wheel .``, then installed
into a fresh venv, where ``jupyter lab`` shows the MLOps side panel in a real browser."""

from __future__ import annotations

import fcntl
import json
import os
import re
import subprocess
import sys
import urllib.request
import zipfile
from importlib.metadata import version
from pathlib import Path

import pytest

from tests.conftest import ARTIFACTS, write_notebook
from tests.e2e.jupyter_app import (
    QUIET_SETTINGS,
    jupyter_env,
    launch_chromium,
    require_browser,
    start,
    stop,
)

ROOT = Path(__file__).resolve().parent.parent
EXT = "share/jupyter/labextensions/nbmlops"


def _env() -> dict[str, str]:
    """jlpm and jupyter-builder (dev extras) are found next to this Python, as `make env`
    installs them; the hook only builds when labextension/prebuilt is missing."""
    bin_dir = str(Path(sys.executable).parent)
    return {**os.environ, "PATH": bin_dir + os.pathsep + os.environ.get("PATH", "")}


@pytest.fixture(scope="session")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One wheel for the whole run: pytest-xdist's workers share the folder above their own
    temporary folders, and the first one to take the lock builds it there."""
    root = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        root = root.parent
    out = root / "nbmlops-wheel"
    with (root / "nbmlops-wheel.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        built = sorted(out.glob("nbmlops-*.whl"))
        if not built:
            proc = subprocess.run(
                [
                    *(sys.executable, "-m", "pip", "wheel", str(ROOT), "--no-deps"),
                    *("--no-build-isolation", "--wheel-dir", str(out), "--quiet"),
                ],
                env=_env(),
                capture_output=True,
                text=True,
                timeout=900,
            )
            assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
            built = sorted(out.glob("nbmlops-*.whl"))
    (whl,) = built
    return whl


def test_wheel_holds_the_prebuilt_labextension(wheel: Path):
    with zipfile.ZipFile(wheel) as zf:
        names = zf.namelist()
        data = next(n.split("/data/")[0] + "/data/" for n in names if ".data/data/" in n)
        ext = data + EXT
        package = json.loads(zf.read(f"{ext}/package.json"))
        static = [n for n in names if n.startswith(f"{ext}/static/")]
        install = json.loads(zf.read(f"{ext}/install.json"))
        schema = json.loads(zf.read(f"{ext}/schemas/nbmlops/plugin.json"))
        server = json.loads(zf.read(data + "etc/jupyter/jupyter_server_config.d/nbmlops.json"))
    assert package["name"] == "nbmlops"
    # the server extension behind the panel is enabled by the wheel's own config file
    assert server["ServerApp"]["jpserver_extensions"]["nbmlops.server"] is True
    # the federated build names the entry point it loads from static/
    load = package["jupyterlab"]["_build"]["load"]
    assert f"{ext}/{load}" in names, (load, static)
    assert f"{ext}/static/style.js" in names
    assert any(n.endswith(".js") and "remoteEntry" in n for n in static), static
    assert install["packageName"] == "nbmlops"
    assert schema["properties"]["refreshInterval"]["minimum"] >= 1


def _run(cmd: list[str], env: dict[str, str], timeout: int = 300) -> str:
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)
    out = re.sub(r"\x1b\[[0-9;]*m", "", done.stdout + done.stderr)  # no colours
    assert done.returncode == 0, f"{' '.join(cmd)} exited {done.returncode}:\n{out[-4000:]}"
    return out


def _block(listing: str, folder: Path) -> str:
    """The part of a `jupyter ... extension list` output that one config or data folder has."""
    _, sep, rest = listing.partition(str(folder))
    assert sep, f"{folder} is not in the listing:\n{listing}"
    return rest.split("dir:", 1)[0].split("\n/", 1)[0]


@pytest.mark.slow
@pytest.mark.timeout(1800)
def test_a_fresh_venv_with_only_the_wheel_shows_the_side_panel(wheel: Path, tmp_path: Path):
    """What a user does: a new venv (no system site-packages), `pip install` of the wheel alone,
    its dependencies (JupyterLab among them) from the package index; then `jupyter lab` with no
    config of ours. The wheel's own files enable the server extension and the labextension."""
    require_browser()
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=300)
    python = venv / "bin" / "python"
    # pip resolves JupyterLab to the version the labextension was built and tested against (a
    # constraint, not a second package to install), which pip's cache also holds
    constraints = tmp_path / "constraints.txt"
    constraints.write_text(f"jupyterlab=={version('jupyterlab')}\n")
    # --no-compile: compiling ~190 packages to bytecode is a minute of CPU this test needs not
    pip = subprocess.run(
        [
            *(str(python), "-m", "pip", "install", "--no-compile"),
            *(str(wheel), "-c", str(constraints)),
        ],
        env={k: v for k, v in os.environ.items() if k != "VIRTUAL_ENV"},
        capture_output=True,
        text=True,
        timeout=1200,
    )
    assert pip.returncode == 0, (
        "installing the wheel into a fresh venv failed: its dependencies come from the "
        "package index (PyPI through pip's configuration here), which must be reachable; "
        f"pip said:\n{(pip.stdout + pip.stderr)[-4000:]}"
    )

    work = tmp_path / "jupyter"
    env = jupyter_env(work, python)
    where = _run([str(python), "-c", "import nbmlops; print(nbmlops.__file__)"], env)
    assert where.strip().startswith(str(venv)), where  # the wheel's copy, not this checkout's
    jupyter = str(venv / "bin" / "jupyter")
    servers = _run([jupyter, "server", "extension", "list"], env)
    mine = _block(servers, venv / "etc" / "jupyter")
    assert "nbmlops.server enabled" in mine, servers
    assert re.search(r"Validating nbmlops\.server\.\.\.\n\s+nbmlops\.server .*OK", mine), servers
    labexts = _run([jupyter, "labextension", "list"], env)
    mine = _block(labexts, venv / "share" / "jupyter" / "labextensions")
    assert "nbmlops v" in mine and "enabled" in mine and "OK" in mine, labexts

    project = tmp_path / "project"
    project.mkdir()
    write_notebook(project / "fresh.ipynb", ["x = 1"])
    proc, lab = start("jupyterlab", project, work, QUIET_SETTINGS, python=python)
    shot = ARTIFACTS / "wheel-venv-sidepanel.png"
    ARTIFACTS.mkdir(exist_ok=True)
    shot.unlink(missing_ok=True)
    try:
        # the server extension answers on its own (token in the query, as the page's fetch has)
        url = f"{lab.url}/nbmlops/api/runs?notebook=fresh.ipynb&token={lab.token}"
        with urllib.request.urlopen(url, timeout=120) as r:
            assert r.status == 200
            runs = json.loads(r.read())
        assert runs["runs"] == [], runs

        from playwright.sync_api import expect, sync_playwright

        with sync_playwright() as pw:
            browser = launch_chromium(pw)
            try:
                page = browser.new_page(viewport={"width": 1400, "height": 1000})
                page.set_default_timeout(120_000)
                page.goto(f"{lab.url}/lab/tree/fresh.ipynb?token={lab.token}")
                page.wait_for_selector(".jp-NotebookPanel .jp-Cell", state="visible")
                page.locator(".lm-MenuBar-itemLabel", has_text="View").first.click()
                page.locator(".lm-Menu-itemLabel", has_text="Show MLOps Panel").first.click()
                panel = page.locator("#nbmlops-panel")
                expect(panel.locator(".nbmlops-sp-panel-body")).to_be_visible()
                expect(panel.locator(".nbmlops-sp-notebook")).to_have_text("fresh.ipynb")
                expect(panel).to_contain_text("No tracked runs yet")
                # every endpoint the panel reads answered: alerts, and the journal in the status bar
                expect(panel).to_contain_text("No open alerts")
                expect(page.locator(".nbmlops-sp-statusbar")).to_contain_text("0 pending")
                # the notebook itself is shown with its kernel (of the fresh venv) ready
                expect(page.locator(".jp-NotebookPanel .jp-Cell").first).to_be_visible()
                expect(page.locator(".jp-StatusBar-Widget", has_text="| Idle").first).to_be_visible(
                    timeout=180_000
                )
                errors = panel.locator(".nbmlops-sp-error")
                assert errors.count() == 0, errors.first.inner_text()
                page.screenshot(path=str(shot), full_page=True)
            finally:
                browser.close()
    finally:
        stop(proc)
    assert shot.stat().st_size > 10_000, shot
