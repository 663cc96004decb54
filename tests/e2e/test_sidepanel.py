"""The MLOps side panel in a real JupyterLab 4 and a real Notebook 7 (jupyter_server with the
nbmlops.server extension on 127.0.0.1 with a token), driven by Debian's chromium through
Playwright: a %%track cell's run shows up in the panel and as a badge on the cell, "Track this
cell" adds the magic, a promotion from the panel moves the alias and a gated one shows why it
was refused. Screenshots (light and dark) land in test-artifacts/."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from tests.conftest import ARTIFACTS, write_notebook
from tests.e2e.jupyter_app import (
    QUIET_SETTINGS,
    JupyterApp,
    launch_chromium,
    require_browser,
    start,
    stop,
)

pytestmark = [pytest.mark.kernel, pytest.mark.slow]

CONFIG = {
    "registry": {
        "scan": {"pip_audit": "off"},
        # gated-*: @champion needs acc >= 1.5, which no classifier reaches: always refused
        "models": {"gated*": {"gates": {"champion": [{"metric": {"name": "acc", "min": 1.5}}]}}},
    }
}

TRAIN = (
    "%%track first-fit\n"
    "import numpy as np\n"
    "from sklearn.linear_model import LogisticRegression\n"
    "rng = np.random.default_rng(0)\n"
    "X = rng.normal(size=(120, 3))\n"
    "y = (X[:, 0] > 0).astype(int)\n"
    "C = 0.5\n"
    "model = LogisticRegression(C=C).fit(X, y)\n"
    "for step in range(4):\n"
    "    nbmlops.log_metric('loss', 1.0 / (step + 1), step=step)\n"
    "acc = model.score(X, y)"
)

CELLS = ["%load_ext nbmlops\nimport nbmlops", TRAIN, "depth = 3\nscore = depth * 0.25"]

# the panel polls every 2 s after a change (the settings' lower bound) so the test sees a run
# soon after its cell ran; the back-off still grows while nothing changes
PANEL_SETTINGS = {"refreshInterval": 2, "maxRefreshInterval": 8}


@pytest.fixture
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A project of its own for each front end (the tests may run in any order, in different
    workers): its store, registry settings and notebook, and no runs yet."""
    root = tmp_path_factory.mktemp("sidepanel") / "project"
    root.mkdir()
    (root / "nbmlops.yaml").write_text(yaml.safe_dump(CONFIG))
    write_notebook(root / "board.ipynb", CELLS)
    return root


SETTINGS = {**QUIET_SETTINGS, "nbmlops:plugin": PANEL_SETTINGS}


@pytest.fixture
def lab(project: Path, tmp_path: Path) -> Iterator[JupyterApp]:
    proc, server = start("jupyterlab", project, tmp_path, SETTINGS)
    try:
        yield server
    finally:
        stop(proc)


@pytest.fixture
def notebook7(project: Path, tmp_path: Path) -> Iterator[JupyterApp]:
    proc, server = start("notebook", project, tmp_path, SETTINGS)
    try:
        yield server
    finally:
        stop(proc)


@pytest.fixture(scope="module")
def browser() -> Iterator:
    require_browser()
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        b = launch_chromium(pw)
        try:
            yield b
        finally:
            b.close()


def register_models(project: Path, run_id: str) -> None:
    """Register the run's model as free-model v1 and gated-model v1, and the same files logged
    again as free-model v2 (one logged model registers once), as a user would with %register;
    the panel must pick them up on its own."""
    import tempfile

    import mlflow.artifacts

    from nbmlops.api.registry import model_registry
    from nbmlops.api.tracking import open_store
    from nbmlops.config import load_settings

    settings = load_settings(project)
    registry = model_registry(settings)
    registry.register(f"runs:/{run_id}/model", "free-model")
    registry.register(f"runs:/{run_id}/model", "gated-model")
    client = open_store(settings)
    run = client.get_run(run_id)
    again = client.create_logged_model(
        run.info.experiment_id, name="model-again", source_run_id=run_id
    )
    [logged] = [
        m
        for m in client.search_logged_models([run.info.experiment_id])
        if m.source_run_id == run_id and m.model_id != again.model_id
    ]
    with tempfile.TemporaryDirectory() as tmp:
        folder = mlflow.artifacts.download_artifacts(
            artifact_uri=logged.artifact_location,
            dst_path=tmp,
            tracking_uri=settings.resolved_tracking_uri,
        )
        client.log_model_artifacts(again.model_id, folder)
    client.finalize_logged_model(again.model_id, "READY")
    registry.register(again.model_id, "free-model")


def wait_kernel_idle(page) -> None:
    """The notebook's cells are shown and its kernel is idle (the status bar says so: the
    toolbar's indicator can read idle while the notebook still loads)."""
    from playwright.sync_api import expect

    cells = page.locator(".jp-NotebookPanel .jp-Notebook .jp-Cell")
    expect(cells).to_have_count(len(CELLS), timeout=180_000)
    expect(page.locator(".jp-StatusBar-Widget", has_text="| Idle").first).to_be_visible(
        timeout=180_000
    )


def open_panel(page) -> None:
    """View > Show MLOps Panel (the command also sits in the palette, on Alt+M)."""
    page.locator(".lm-MenuBar-itemLabel", has_text="View").first.click()
    page.locator(".lm-Menu-itemLabel", has_text="Show MLOps Panel").first.click()
    page.wait_for_selector("#nbmlops-panel .nbmlops-sp-panel-body", state="visible")


# Every text of the panel is whole: no element wider than its box (an ellipsis or a hidden
# overflow), none past the panel's right edge, and the panel itself never scrolls sideways.
# Only the lineage drawing may scroll sideways (in its own box), and its long labels end in an
# ellipsis with the whole id on hover.
CUT_JS = """
(panel) => {
  const box = panel.getBoundingClientRect();
  const cut = [];
  if (panel.scrollWidth > panel.clientWidth + 1)
    cut.push(`panel scrolls sideways: ${panel.scrollWidth} > ${panel.clientWidth}`);
  let checked = 0;
  for (const el of panel.querySelectorAll('*')) {
    if (el.closest('.nbmlops-sp-lineage-box') || el instanceof SVGElement) continue;
    const own = [...el.childNodes].filter((n) => n.nodeType === 3).map((n) => n.textContent).join('').trim();
    if (!own || !el.getClientRects().length) continue;
    const r = el.getBoundingClientRect();
    if (!r.width || !r.height) continue;
    checked++;
    const cs = getComputedStyle(el);
    if (cs.display !== 'inline' && el.scrollWidth > el.clientWidth + 1)
      cut.push(`${own.slice(0, 40)} | its text is ${el.scrollWidth}px in ${el.clientWidth}px`);
    if (r.right > box.right + 1 || r.left < box.left - 1)
      cut.push(`${own.slice(0, 40)} | ${Math.round(r.left)}..${Math.round(r.right)} outside the panel's ${Math.round(box.left)}..${Math.round(box.right)}`);
  }
  return { width: box.width, checked, cut };
}
"""


def assert_nothing_cut(panel) -> None:
    result = panel.evaluate(CUT_JS)
    assert result["checked"] > 20, result
    assert result["cut"] == [], f"panel {result['width']}px wide:\n" + "\n".join(result["cut"])


def code_of(cell) -> str:
    return cell.locator(".cm-content").inner_text()


def test_sidepanel_in_jupyterlab(project: Path, lab: JupyterApp, browser):
    from playwright.sync_api import expect

    ARTIFACTS.mkdir(exist_ok=True)
    shots = {k: ARTIFACTS / f"sidepanel-lab-{k}.png" for k in ("light", "dark", "refused")}
    for shot in shots.values():
        shot.unlink(missing_ok=True)
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    page.set_default_timeout(120_000)
    try:
        page.goto(f"{lab.url}/lab/tree/board.ipynb?token={lab.token}")
        page.wait_for_selector(".jp-NotebookPanel .jp-Cell", state="visible")
        wait_kernel_idle(page)
        open_panel(page)
        panel = page.locator("#nbmlops-panel")
        expect(panel.locator(".nbmlops-sp-notebook")).to_have_text("board.ipynb")
        expect(panel).to_contain_text("No tracked runs yet")

        page.locator(".lm-MenuBar-itemLabel", has_text="Run").first.click()
        page.locator(".lm-Menu-itemLabel", has_text="Run All Cells").first.click()

        # the run shows up in the panel while the notebook is open, with its key metrics
        run = panel.locator(".nbmlops-sp-run", has_text="first-fit")
        expect(run).to_be_visible(timeout=180_000)
        expect(run.locator(".nbmlops-sp-status")).to_have_text("FINISHED", timeout=120_000)
        expect(run).to_contain_text("acc")
        run_id = run.get_attribute("data-run-id")
        assert run_id and len(run_id) == 32, run_id

        # ... and as a badge on its cell, which opens the run's details
        cells = page.locator(".jp-NotebookPanel .jp-Notebook .jp-Cell")
        badge = cells.nth(1).locator(".nbmlops-sp-badge")
        expect(badge).to_have_attribute("data-status", "FINISHED", timeout=60_000)
        expect(cells.nth(2).locator(".nbmlops-sp-badge")).to_have_count(0)
        badge.click()
        details = panel.locator(f".nbmlops-sp-details[data-run-id='{run_id}']")
        expect(details).to_be_visible()
        expect(details.locator(".nbmlops-sp-params")).to_contain_text("C")
        expect(details.locator(".nbmlops-sp-sparkline path")).to_have_count(1)
        expect(details.locator(".nbmlops-sp-code")).to_contain_text("LogisticRegression")
        expect(panel.locator(".nbmlops-sp-lineage .nbmlops-sp-node")).not_to_have_count(0)
        assert panel.locator(".nbmlops-sp-error").count() == 0, panel.locator(
            ".nbmlops-sp-error"
        ).first.inner_text()

        # "Track this cell" from the cell's toolbar adds %%track as the first line; running the
        # cell makes a second run of the notebook
        cells.nth(2).click()
        toggle = cells.nth(2).locator("[data-command='nbmlops:toggle-track']")
        toggle.click()
        expect(cells.nth(2).locator(".cm-content")).to_contain_text("%%track")
        assert code_of(cells.nth(2)).startswith("%%track"), code_of(cells.nth(2))
        expect(cells.nth(2).locator(".nbmlops-sp-badge")).to_have_count(1)
        # (the toolbar button keeps the focus: Shift+Enter would press it again)
        page.locator(".lm-MenuBar-itemLabel", has_text="Run").first.click()
        page.locator(".lm-Menu-itemLabel", has_text="Run Selected Cell").first.click()
        expect(panel.locator(".nbmlops-sp-run")).to_have_count(2, timeout=180_000)
        expect(cells.nth(2).locator(".nbmlops-sp-badge")).to_have_attribute(
            "data-status", "FINISHED", timeout=60_000
        )
        assert "score" in panel.locator(".nbmlops-sp-run").first.inner_text()

        # models registered meanwhile appear with their versions; promote free-model v2
        register_models(project, run_id)
        panel.locator("button[data-key='refresh']").click()
        free = panel.locator(".nbmlops-sp-model[data-model='free-model']")
        expect(free.locator(".nbmlops-sp-version[data-version='2']")).to_be_visible(timeout=60_000)
        free.locator("button[data-key='promote:free-model:2']").click()
        dialog = page.locator(".jp-Dialog")
        dialog.locator("input[name='alias']").fill("champion")
        dialog.locator(".jp-mod-accept").click()
        expect(free.locator(".nbmlops-sp-alias[data-alias='champion']")).to_have_attribute(
            "data-version", "2", timeout=60_000
        )
        expect(free.locator(".nbmlops-sp-version[data-version='2']")).to_contain_text("@champion")
        page.screenshot(path=str(shots["light"]), full_page=True)
        assert_nothing_cut(panel)

        # the gate refuses gated-model's promotion: its reasons show in the model's card
        gated = panel.locator(".nbmlops-sp-model[data-model='gated-model']")
        gated.locator("button[data-key='promote:gated-model:1']").click()
        dialog.locator("input[name='alias']").fill("champion")
        dialog.locator(".jp-mod-accept").click()
        refusal = gated.locator(".nbmlops-sp-refusal")
        expect(refusal).to_be_visible(timeout=60_000)
        expect(refusal).to_contain_text("acc")
        expect(gated.locator(".nbmlops-sp-alias[data-alias='champion']")).to_have_count(0)
        # buttons are usable again once the action is answered
        expect(gated.locator("button[data-key='promote:gated-model:1']")).to_be_enabled()
        refusal.scroll_into_view_if_needed()
        page.screenshot(path=str(shots["refused"]), full_page=True)
        assert_nothing_cut(panel)

        # the dark theme: the panel follows JupyterLab's variables
        page.locator(".lm-MenuBar-itemLabel", has_text="Settings").first.click()
        page.locator(".lm-Menu-itemLabel", has_text="Theme").first.hover()
        page.locator(".lm-Menu-itemLabel", has_text="JupyterLab Dark").first.click()
        expect(page.locator("body[data-jp-theme-light='false']")).to_have_count(1)
        # a theme change shows JupyterLab's splash until the new theme's CSS is in
        expect(page.locator("#jupyterlab-splash")).to_have_count(0, timeout=60_000)
        expect(panel.locator(".nbmlops-sp-run").first).to_be_visible()
        page.screenshot(path=str(shots["dark"]), full_page=True)
        assert_nothing_cut(panel)
    finally:
        if not shots["light"].exists():
            page.screenshot(path=str(shots["light"]), full_page=True)
        page.close()
    for shot in shots.values():
        assert shot.stat().st_size > 10_000, shot


def test_sidepanel_in_notebook7(project: Path, notebook7: JupyterApp, browser):
    """The same panel beside a notebook in Notebook 7: a tracked cell's run and badge, "Track
    this cell" from the cell toolbar, and a promotion from the panel."""
    from playwright.sync_api import expect

    ARTIFACTS.mkdir(exist_ok=True)
    shot = ARTIFACTS / "sidepanel-notebook7.png"
    shot.unlink(missing_ok=True)
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    page.set_default_timeout(120_000)
    sockets = KernelSockets(page)
    try:
        page.goto(f"{notebook7.url}/notebooks/board.ipynb?token={notebook7.token}")
        page.wait_for_selector(".jp-Notebook .jp-Cell", state="visible")
        wait_kernel_idle_nb7(page, sockets)
        open_panel(page)
        panel = page.locator("#nbmlops-panel")
        expect(panel.locator(".nbmlops-sp-notebook")).to_have_text("board.ipynb")
        expect(panel).to_contain_text("No tracked runs yet")
        runs = panel.locator(".nbmlops-sp-run")

        # run the first two cells: the tracked one shows up in the panel and on its cell
        cells = page.locator(".jp-Notebook .jp-Cell")
        # one cell at a time: a second Shift+Enter sent while the first still runs can be lost
        for i in range(2):
            cells.nth(i).click()
            page.keyboard.press("Shift+Enter")
            expect(cells.nth(i).locator(".jp-InputPrompt")).to_have_text(
                f"[{i + 1}]:", timeout=180_000
            )
        run = panel.locator(".nbmlops-sp-run", has_text="first-fit")
        expect(run).to_be_visible(timeout=180_000)
        expect(run.locator(".nbmlops-sp-status")).to_have_text("FINISHED", timeout=120_000)
        expect(cells.nth(1).locator(".nbmlops-sp-badge")).to_have_attribute(
            "data-status", "FINISHED", timeout=60_000
        )
        run_id = run.get_attribute("data-run-id")
        assert run_id and len(run_id) == 32, run_id

        # "Track this cell" sits in Notebook 7's cell toolbar too
        cells.nth(2).click()
        cells.nth(2).locator("[data-command='nbmlops:toggle-track']").click()
        expect(cells.nth(2).locator(".cm-content")).to_contain_text("%%track")
        assert code_of(cells.nth(2)).startswith("%%track"), code_of(cells.nth(2))
        page.locator(".lm-MenuBar-itemLabel", has_text="Run").first.click()
        page.locator(".lm-Menu-itemLabel", has_text="Run Selected Cell").first.click()
        expect(runs).to_have_count(2, timeout=180_000)
        expect(cells.nth(2).locator(".nbmlops-sp-badge")).to_have_attribute(
            "data-status", "FINISHED", timeout=60_000
        )

        # a promotion from the panel moves the alias
        register_models(project, run_id)
        panel.locator("button[data-key='refresh']").click()
        free = panel.locator(".nbmlops-sp-model[data-model='free-model']")
        expect(free.locator(".nbmlops-sp-version[data-version='2']")).to_be_visible(timeout=60_000)
        free.locator("button[data-key='promote:free-model:1']").click()
        dialog = page.locator(".jp-Dialog")
        dialog.locator("input[name='alias']").fill("champion")
        dialog.locator(".jp-mod-accept").click()
        expect(free.locator(".nbmlops-sp-alias[data-alias='champion']")).to_have_attribute(
            "data-version", "1", timeout=60_000
        )
        assert_nothing_cut(panel)
    finally:
        page.screenshot(path=str(shot), full_page=True)
        page.close()
    assert shot.stat().st_size > 10_000


def wait_kernel_idle_nb7(page, sockets: KernelSockets) -> None:
    """Notebook 7 shows the kernel's state in its toolbar's status indicator; a cell runs once
    the page's kernel connection has answered."""
    page.wait_for_selector(
        ".jp-Notebook-ExecutionIndicator[data-status='idle']", state="attached", timeout=180_000
    )
    sockets.wait_answered(page)


class KernelSockets:
    """The page's kernel websockets. Notebook 7 may close its first one before it connects and
    open another while the notebook loads (its indicator says idle all the while): a cell run
    in between is lost, so the test waits for an open one that the kernel answered on."""

    def __init__(self, page) -> None:
        self.answered: list = []
        page.on("websocket", self._seen)

    def _seen(self, ws) -> None:
        if "/api/kernels/" in ws.url:
            ws.on("framereceived", lambda _frame: self.answered.append(ws))

    def wait_answered(self, page, timeout: float = 180) -> None:
        deadline = time.monotonic() + timeout
        while not any(not ws.is_closed() for ws in self.answered):
            if time.monotonic() > deadline:
                pytest.fail(f"no kernel websocket of the page answered in {timeout} s")
            page.wait_for_timeout(200)  # lets Playwright deliver the page's events
