"""The panels in a real JupyterLab, driven by a real browser (Debian's chromium through
Playwright). One JupyterLab server, one notebook and one kernel serve every test of the module:
the notebook tracks three cells (one fits a model) and runs ``%mlops``; the tests select and
compare runs, register with a double click, promote from a terminal, switch to the dark theme,
and close and reopen the notebook. In the light and the dark theme every text in the outputs is
measured against WCAG AA contrast. Screenshots land in test-artifacts/."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import ARTIFACTS, write_notebook
from tests.e2e.jupyter_app import CHROMIUM_ARGS as CHROMIUM_ARGS
from tests.e2e.jupyter_app import (
    QUIET_SETTINGS,
    JupyterApp,
    launch_chromium,
    require_browser,
    start,
    stop,
)
from tests.e2e.jupyter_app import free_port as free_port

pytestmark = [pytest.mark.kernel, pytest.mark.slow]

CELLS = [
    "%load_ext nbmlops\nimport nbmlops",
    "%%track first-run\nimport pandas as pd\nalpha = 0.5\n"
    "raw = pd.DataFrame({'a': range(50), 'b': range(50)})\nscore = alpha * 3",
    "%%track second-run\nalpha = 0.25\n"
    "for _step in range(5):\n    nbmlops.log_metric('loss', 1 / (_step + 1) + alpha, step=_step)\n"
    "score = float(raw.a.mean()) * alpha",
    "%%track fit-model\nimport numpy as np\nfrom sklearn.linear_model import LogisticRegression\n"
    "X = np.random.default_rng(0).normal(size=(80, 3))\ny = (X[:, 0] > 0).astype(int)\n"
    "model = LogisticRegression().fit(X, y)\nacc = model.score(X, y)",
    "%track sync",
    "%mlops",
]

# WCAG 2.1 contrast of every visible text in the notebook's outputs against the background it
# is drawn on (semi-transparent colours blended down to the first opaque ancestor). Disabled
# controls are exempt (WCAG 1.4.3), as are the browser's own <option> lists.
CONTRAST_JS = """
(selector) => {
  const parse = (c) => {
    const m = c && c.match(/rgba?\\(([^)]+)\\)/);
    if (!m) return null;
    const p = m[1].split(/[\\s,\\/]+/).filter(Boolean).map(Number);
    return [p[0], p[1], p[2], p.length > 3 ? p[3] : 1];
  };
  const over = (top, below) => top.slice(0, 3).map((v, i) => v * top[3] + below[i] * (1 - top[3]));
  const background = (el) => {
    const layers = [];
    for (let e = el; e; e = e.parentElement) {
      if (e instanceof SVGElement) {  // SVG text sits on a sibling shape (a hover label's box)
        const shape = e.classList.contains('hovertext') && e.querySelector(':scope > path');
        const fill = shape && parse(getComputedStyle(shape).fill);
        if (fill && fill[3] > 0) { layers.push(fill); if (fill[3] >= 1) break; }
        continue;
      }
      const c = parse(getComputedStyle(e).backgroundColor);
      if (c && c[3] > 0) { layers.push(c); if (c[3] >= 1) break; }
    }
    let base = [255, 255, 255];
    for (let i = layers.length - 1; i >= 0; i--) base = over(layers[i], base);
    return base;
  };
  const lum = (c) => {
    const f = (v) => { v /= 255; return v <= 0.03928 ? v / 12.92 : Math.pow((v + 0.055) / 1.055, 2.4); };
    return 0.2126 * f(c[0]) + 0.7152 * f(c[1]) + 0.0722 * f(c[2]);
  };
  const failures = [];
  let checked = 0;
  for (const root of document.querySelectorAll(selector)) {
    for (const el of root.querySelectorAll('*')) {
      const text = [...el.childNodes].filter((n) => n.nodeType === 3).map((n) => n.textContent).join('').trim();
      if (!text || el.closest('option, select, style, script')) continue;
      if (el.closest('button:disabled, input:disabled, .mod-disabled')) continue;
      const rect = el.getBoundingClientRect();
      const cs = getComputedStyle(el);
      if (!rect.width || !rect.height || cs.visibility === 'hidden' || el.closest('[style*="display: none"]')) continue;
      if (!el.checkVisibility({ opacityProperty: true, visibilityProperty: true })) continue;
      const bg = background(el);
      const fgRaw = parse(el instanceof SVGElement ? cs.fill : cs.color);
      if (!fgRaw) continue;
      const fg = over(fgRaw, bg);
      const [a, b] = [lum(fg), lum(bg)].sort((x, y) => y - x);
      const ratio = (a + 0.05) / (b + 0.05);
      const size = parseFloat(cs.fontSize);
      const bold = parseInt(cs.fontWeight) >= 700;
      const needed = size >= 24 || (bold && size >= 18.66) ? 3 : 4.5;
      checked++;
      if (ratio < needed) failures.push(`${text.slice(0, 40)} | ${ratio.toFixed(2)} < ${needed} | fg ${fg.map(Math.round)} bg ${bg.map(Math.round)}`);
    }
  }
  return { checked, failures };
}
"""


# The server and browser start-up every browser test shares; the names stay importable from
# here for the tests that import them from this module.
Lab = JupyterApp
_stop = stop
LAB_SETTINGS = QUIET_SETTINGS


def start_lab(project: Path, work: Path) -> tuple[subprocess.Popen, Lab]:
    """JupyterLab on 127.0.0.1 with a token, serving ``project``; the app is exposed to the
    page (``window.jupyterapp``) so tests can run JupyterLab commands (theme, save, close)."""
    return start("jupyterlab", project, work, LAB_SETTINGS)


@pytest.fixture(scope="module")
def lab_project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("lab") / "project"
    folder.mkdir()
    write_notebook(folder / "board.ipynb", CELLS)
    return folder


@pytest.fixture(scope="module")
def jupyter_lab(lab_project: Path) -> Iterator[Lab]:
    proc, lab = start_lab(lab_project, lab_project.parent)
    try:
        yield lab
    finally:
        _stop(proc)


@dataclass
class Board:
    """The browser page showing board.ipynb after its cells ran."""

    page: Any
    lab: Lab
    project: Path

    def command(self, name: str, args: dict | None = None) -> Any:
        return self.page.evaluate(
            "([name, args]) => window.jupyterapp.commands.execute(name, args)",
            [name, args or {}],
        )

    def tab(self, title: str) -> Any:
        tab = self.page.locator(".jupyter-widget-tab > .lm-TabBar .lm-TabBar-tab", has_text=title)
        tab.first.click()
        return tab

    def contrast(self, what: str) -> None:
        """No text in the outputs below WCAG AA; a screenshot either way."""
        self.page.screenshot(path=str(ARTIFACTS / f"browser-{what}.png"), full_page=True)
        result = self.page.evaluate(CONTRAST_JS, ".jp-OutputArea-output")
        assert result["checked"] > 20, result
        assert result["failures"] == [], "\n".join(result["failures"])


def open_notebook(page: Any, lab: Lab) -> None:
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    page.goto(f"{lab.url}/lab/tree/board.ipynb?token={lab.token}")
    page.wait_for_selector(".jp-NotebookPanel .jp-Cell", state="visible")
    dialog = page.locator(".jp-Dialog button", has_text="Select")
    try:  # only when the setting that starts the kernel did not apply
        dialog.first.click(timeout=5_000)
    except PlaywrightTimeout:
        pass
    page.wait_for_selector(
        ".jp-NotebookPanel .jp-Notebook-ExecutionIndicator[data-status='idle']",
        state="attached",
        timeout=120_000,
    )


@pytest.fixture(scope="module")
def board(jupyter_lab: Lab, lab_project: Path) -> Iterator[Board]:
    require_browser()
    from playwright.sync_api import expect, sync_playwright

    ARTIFACTS.mkdir(exist_ok=True)
    for old in ARTIFACTS.glob("browser-*.png"):
        old.unlink()
    with sync_playwright() as pw:
        browser = launch_chromium(pw)
        try:
            page = browser.new_page(viewport={"width": 1500, "height": 1300})
            page.set_default_timeout(120_000)
            open_notebook(page, jupyter_lab)
            board = Board(page, jupyter_lab, lab_project)
            board.command("notebook:run-all-cells")
            tabs = page.locator(".jupyter-widget-tab .lm-TabBar-tab")
            expect(tabs.filter(has_text="Experiments")).to_be_visible(timeout=240_000)
            expect(
                page.locator(".jupyter-widget-tab tr.nbmlops-run", has_text="second-run")
            ).to_be_visible(timeout=120_000)
            yield board
        finally:
            browser.close()


def test_dashboard_selects_and_compares_runs(board: Board):
    from playwright.sync_api import expect

    page = board.page
    table = page.locator(".jupyter-widget-tab table.nbmlops-runs")
    expect(table.locator("tr.nbmlops-run", has_text="first-run")).to_be_visible()
    errors = page.locator(".nbmlops-error")
    assert errors.count() == 0, errors.first.inner_text()
    assert page.locator(".jp-OutputArea-output[data-mime-type*='error']").count() == 0
    # the static summary is hidden while the live dashboard follows it
    assert page.locator(".nbmlops-static").count() == 1
    expect(page.locator(".nbmlops-static")).to_be_hidden()

    # the check column selects runs for compare; a click on a row opens the run
    for name in ("first-run", "second-run"):
        row = table.locator("tr.nbmlops-run", has_text=name)
        row.locator("td.nbmlops-check").click()
        expect(row.locator("td.nbmlops-check")).to_have_attribute(
            "aria-checked", "true", timeout=60_000
        )
    table.locator("tr.nbmlops-run", has_text="first-run").locator("td").nth(2).click()
    expect(
        page.locator(".jupyter-widget-tab .nbmlops-details", has_text="run first-run")
    ).to_be_visible(timeout=60_000)
    compare = page.locator(".jupyter-widget-tab table.nbmlops-compare")
    expect(compare).to_be_visible(timeout=60_000)
    expect(compare).to_contain_text("first-run")
    expect(compare).to_contain_text("second-run")
    board.contrast("light-experiments")


def test_an_interactive_chart_shows_values_on_hover(board: Board):
    """The curves of the compared runs (selected in the test before): Plotly, offline."""
    from playwright.sync_api import expect

    page = board.page
    page.locator(".jupyter-widget-tab .lm-TabBar-tab", has_text="Curves").first.click()
    chart = page.locator(".jupyter-widget-tab .nbmlops-chart").first
    expect(chart.locator(".main-svg").first).to_be_visible(timeout=120_000)
    expect(page.get_by_text("loss for 1 of 2 runs")).to_be_visible(timeout=60_000)
    point = chart.locator(".scatterlayer .trace .points path.point").nth(2)
    point.scroll_into_view_if_needed()
    point.hover(force=True)  # the mouse over the point (Plotly's drag layer lies on top)
    hover = chart.locator(".hoverlayer .hovertext")
    expect(hover.first).to_contain_text("loss")
    board.contrast("light-curves")


def test_clicking_a_lineage_node_selects_it(board: Board):
    from playwright.sync_api import expect

    page = board.page
    board.tab("Lineage")
    chart = page.locator(".jupyter-widget-tab .nbmlops-chart").last
    expect(chart.locator(".main-svg").first).to_be_visible(timeout=120_000)
    details = page.locator(".jupyter-widget-tab .nbmlops-lineage-details .nbmlops-details")
    expect(details).to_be_visible(timeout=60_000)
    # the lineage of this notebook's newest run (fit-model), which is selected: click another
    nodes = chart.locator(".textpoint text")
    expect(nodes.first).to_be_visible(timeout=60_000)
    texts = nodes.all_text_contents()  # SVG text has no innerText
    index, label = next((i, t) for i, t in enumerate(texts) if "fit-model" not in t)
    expect(details).to_contain_text("fit-model")
    target = chart.locator(".scatterlayer .trace").last.locator(".point").nth(index)
    target.scroll_into_view_if_needed()
    target.click(force=True)
    expect(details.locator("div").first).to_contain_text(label, timeout=60_000)
    board.contrast("light-lineage")


def registry_tab(board: Board) -> Any:
    from playwright.sync_api import expect

    board.tab("Registry")
    panel = board.page.locator(
        ".jupyter-widget-tab .widget-vbox", has=board.page.locator("button", has_text="Register")
    ).last
    expect(panel.locator("button", has_text="Register")).to_be_visible(timeout=60_000)
    return panel


def test_a_double_clicked_register_makes_one_version(board: Board):
    from playwright.sync_api import expect

    page = board.page
    panel = registry_tab(board)
    panel.get_by_placeholder("runs:/RUN_ID/NAME, model id m-… or variable").fill("model")
    panel.get_by_placeholder("model name (default: the selected one)").fill("wine")
    page.keyboard.press("Tab")
    panel.locator("button", has_text="Register").dblclick()
    result = panel.locator(".nbmlops-result", has_text="Registered models:/wine/1")
    expect(result).to_be_visible(timeout=180_000)
    expect(panel.locator("button", has_text="Register")).to_be_enabled()
    versions = panel.locator("table.nbmlops-versions tbody tr")
    expect(versions).to_have_count(1)
    expect(versions.first).to_contain_text("v1")
    board.contrast("light-registry")

    panel.locator("button", has_text="Register").click()  # the same model again
    expect(panel.locator(".nbmlops-result", has_text="already version 1 of wine")).to_be_visible(
        timeout=120_000
    )
    expect(versions).to_have_count(1)


def test_a_promotion_from_a_terminal_appears_in_the_open_registry_tab(board: Board):
    from playwright.sync_api import expect

    panel = registry_tab(board)
    expect(panel.locator("table.nbmlops-versions")).to_be_visible(timeout=60_000)
    cli = Path(sys.executable).with_name("nbmlops")
    done = subprocess.run(
        [str(cli), "model", "promote", "wine", "1", "--alias", "champion"],
        cwd=board.project,
        capture_output=True,
        text=True,
        timeout=300,
        env={k: v for k, v in os.environ.items() if not k.startswith("NBMLOPS_")},
    )
    assert done.returncode == 0, done.stdout + done.stderr
    aliases = panel.locator("table.nbmlops-aliases")
    expect(aliases).to_contain_text("@champion", timeout=60_000)
    expect(panel.locator("table.nbmlops-versions tbody tr").first).to_contain_text("@champion")


def test_dark_theme_is_readable(board: Board):
    page = board.page
    board.command("apputils:change-theme", {"theme": "JupyterLab Dark"})
    page.wait_for_selector("body[data-jp-theme-light='false']", state="attached")
    page.wait_for_function(  # the theme's stylesheet applies after the attribute
        "getComputedStyle(document.body).getPropertyValue('--jp-layout-color0').trim() == '#111'"
    )
    registry_tab(board)
    board.contrast("dark-registry")
    board.tab("Lineage")
    page.locator(".jupyter-widget-tab .nbmlops-chart .main-svg").last.wait_for(state="visible")
    board.contrast("dark-lineage")
    board.tab("Experiments")
    inner = page.locator(".jupyter-widget-tab .jupyter-widget-tab .lm-TabBar-tab")
    inner.filter(has_text="Curves").first.click()
    page.locator(".jupyter-widget-tab .nbmlops-chart .main-svg").first.wait_for(state="visible")
    board.contrast("dark-curves")
    inner.filter(has_text="Compare").first.click()
    page.locator(".jupyter-widget-tab table.nbmlops-compare").wait_for(state="visible")
    board.contrast("dark-experiments")
    board.command("apputils:change-theme", {"theme": "JupyterLab Light"})
    page.wait_for_selector("body[data-jp-theme-light='true']", state="attached")


def test_the_dashboard_survives_closing_and_reopening_the_notebook(board: Board):
    from playwright.sync_api import expect

    page, lab = board.page, board.lab
    board.command("docmanager:save")
    page.wait_for_selector(".jp-NotebookPanel:not(.jp-mod-dirty)", state="attached")
    # a new kernel knows none of the old widgets: what a reopened notebook always meets
    sessions = json.loads(
        urllib.request.urlopen(f"{lab.url}/api/sessions?token={lab.token}", timeout=10).read()
    )
    board.command("application:close-all")
    for session in sessions:
        request = urllib.request.Request(
            f"{lab.url}/api/sessions/{session['id']}?token={lab.token}", method="DELETE"
        )
        urllib.request.urlopen(request, timeout=30).close()
    open_notebook(page, lab)
    static = page.locator(".nbmlops-static")
    expect(static).to_be_visible(timeout=60_000)
    expect(static).to_contain_text("second-run")
    expect(page.get_by_text("Error displaying widget")).to_be_hidden()
    page.screenshot(path=str(ARTIFACTS / "browser-reopened.png"), full_page=True)


# --- the Experiments panel's table tools, compare, and a 300-node lineage ---------------------------
# Each test runs its own new cell at the end of the notebook, so it works after the reopening
# above (a new kernel) and alone.
def run_new_cell(board: Board, code: str) -> Any:
    """Append a cell holding ``code`` to the notebook, run it; its output area."""
    page = board.page
    page.evaluate(
        "() => { const nb = window.jupyterapp.shell.currentWidget.content;"
        " nb.activeCellIndex = nb.widgets.length - 1; }"
    )
    board.command("notebook:insert-cell-below")
    page.evaluate(
        "(code) => window.jupyterapp.shell.currentWidget.content.activeCell.model.sharedModel"
        ".setSource(code)",
        code,
    )
    board.command("notebook:run-cell")
    return page.locator(".jp-NotebookPanel .jp-Notebook .jp-CodeCell").last.locator(
        ".jp-OutputArea"
    )


EXPERIMENTS_CELL = "%load_ext nbmlops\nimport nbmlops.panels\nnbmlops.panels.experiments()"


def test_runs_table_groups_folds_and_saves_a_note_by_clicking(board: Board):
    from playwright.sync_api import expect

    out = run_new_cell(board, EXPERIMENTS_CELL)
    table = out.locator("table.nbmlops-runs")
    expect(table.locator("tr.nbmlops-run", has_text="second-run").first).to_be_visible(
        timeout=120_000
    )
    assert out.get_by_text("ctrl/shift-click").count() == 0  # one way to select: the check column

    group = out.locator(".widget-dropdown", has_text="Group by").locator("select")
    group.select_option(index=1)  # the first param
    headers = out.locator(".nbmlops-group")
    expect(headers.first).to_be_visible(timeout=60_000)
    expect(headers.first).to_contain_text("run(s)")
    headers.first.click()
    expect(out.locator(".nbmlops-group").first).to_have_attribute(
        "aria-expanded", "false", timeout=60_000
    )
    group.select_option(index=0)  # no grouping
    expect(out.locator(".nbmlops-group")).to_have_count(0, timeout=60_000)

    out.locator("tr.nbmlops-run", has_text="first-run").first.locator("td").nth(2).click()
    note = out.locator(".widget-textarea textarea")
    expect(note).to_be_visible(timeout=60_000)
    note.fill("baseline, from the browser")
    out.locator("button", has_text="Save note and tags").click()
    expect(out.get_by_text("Saved to MLflow")).to_be_visible(timeout=60_000)
    board.contrast("light-runs-tools")


def test_compare_shows_code_differences_and_a_brush_narrows_the_table(board: Board):
    from playwright.sync_api import expect

    page = board.page
    out = run_new_cell(board, EXPERIMENTS_CELL)
    table = out.locator("table.nbmlops-runs").first
    for name in ("first-run", "second-run"):
        row = table.locator("tr.nbmlops-run", has_text=name).first
        expect(row).to_be_visible(timeout=120_000)
        row.locator("td.nbmlops-check").click()
        expect(row.locator("td.nbmlops-check")).to_have_attribute(
            "aria-checked", "true", timeout=60_000
        )
    tabs = out.locator(".lm-TabBar-tab")
    tabs.filter(has_text="Code").first.click()
    expect(out.locator("pre.nbmlops-diff").first).to_be_visible(timeout=60_000)
    expect(out.locator(".nbmlops-diff-added").first).to_contain_text("alpha = 0.25")

    tabs.filter(has_text="Parallel").first.click()
    chart = out.locator(".nbmlops-chart .parcoords").first
    expect(chart).to_be_visible(timeout=120_000)
    axis = out.locator(".nbmlops-chart .parcoords .axis-brush .background").first
    box = axis.bounding_box()
    assert box is not None
    x = box["x"] + box["width"] / 2
    # a drag along the first axis from its middle up past its top: the upper half, where
    # the line of the run with the higher value starts
    page.mouse.move(x, box["y"] + box["height"] / 2)
    page.mouse.down()
    page.mouse.move(x, box["y"] - 20, steps=10)
    page.mouse.up()
    expect(out.locator("div", has_text="brushed ranges").first).to_be_visible(timeout=60_000)
    expect(table.locator("tr.nbmlops-run")).to_have_count(1, timeout=60_000)
    board.contrast("light-parallel")


LINEAGE_CELL = """
from pathlib import Path
from nbmlops.config import load_settings
from nbmlops.core.lineage.store import LineageStore
from nbmlops.widgets.lineage import LineagePanel

big = Path("big-lineage", ".nbmlops")
big.mkdir(parents=True, exist_ok=True)
store = LineageStore(big / "lineage.db")
for i in range(100):  # 301 nodes: data_0 -> run_0 -> data_1 (+ model_0) -> run_1 ...
    store.record_run(
        f"k{i:03d}", run_id=None, name=f"step-{i:03d}", experiment="chain", status="FINISHED",
        start_ms=1_700_000_000_000 + i, end_ms=1_700_000_000_500 + i, source=None,
        datasets=[
            {"name": "x", "digest": f"{i:032x}", "role": "input", "shape": [10, 2]},
            {"name": "x", "digest": f"{i + 1:032x}", "role": "output", "shape": [10, 2]},
        ],
        models=[{"name": "m", "class": "sklearn.linear_model.Ridge", "trained_on": "x"}],
        tracking_uri="sqlite://",
    )
LineagePanel("data:" + "0" * 32, settings=load_settings("big-lineage"), max_nodes=400)
"""


# the x axis' visible span of the Plotly chart in (or at) the element
PLOT_OF = "el.classList.contains('js-plotly-plot') ? el : el.querySelector('.js-plotly-plot')"
X_SPAN = f"(el) => {{ const r = ({PLOT_OF})._fullLayout.xaxis.range; return r[1] - r[0]; }}"


def test_a_300_node_lineage_renders_zooms_and_selects_a_clicked_node(board: Board):
    from playwright.sync_api import expect

    page = board.page
    out = run_new_cell(board, LINEAGE_CELL)
    chart = out.locator(".nbmlops-chart").last
    nodes = chart.locator(".scatterlayer .trace").last.locator(".point")
    expect(nodes).to_have_count(301, timeout=180_000)
    chart.scroll_into_view_if_needed()
    zoom = chart.evaluate(f"(el) => ({PLOT_OF})._context.scrollZoom")
    assert zoom, f"plotly's scrollZoom is {zoom!r}"
    before = chart.evaluate(X_SPAN)
    area = chart.locator(".nsewdrag").first  # the plot area
    area.scroll_into_view_if_needed()
    box = area.bounding_box()
    assert box is not None
    page.mouse.move(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
    page.mouse.wheel(0, -300)  # the wheel zooms in around the pointer
    deadline = time.monotonic() + 60
    while chart.evaluate(X_SPAN) >= before and time.monotonic() < deadline:
        page.wait_for_timeout(200)
    assert chart.evaluate(X_SPAN) < before
    texts = chart.locator(".textpoint text").all_text_contents()
    index = next(i for i, t in enumerate(texts) if "step-050" in t)  # near the zoom's centre
    target = nodes.nth(index)
    target.scroll_into_view_if_needed()
    target.click(force=True)
    details = out.locator(".nbmlops-lineage-details .nbmlops-details")
    expect(details.locator("div").first).to_contain_text("step-050", timeout=60_000)
    page.screenshot(path=str(ARTIFACTS / "browser-lineage-300.png"), full_page=True)
