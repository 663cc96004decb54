"""The Monitoring tab of ``%mlops`` in a real JupyterLab, driven by Debian's chromium through
Playwright. A champion is served by ``nbmlops serve`` on 127.0.0.1 and gets traffic whose
feature ``a`` moves in a later 20-second window (labels for the first window arrive at once);
the notebook runs ``%mlops``, the tab is opened with no model named, the heatmap flags ``a``
(hovered for its value), health and performance show, and traffic sent while the tab is open
appears by itself. Screenshots in the light and dark themes land in test-artifacts/, and every
text passes the WCAG AA contrast check of test_browser.py in both."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any

import numpy as np
import pandas as pd
import pytest

import nbmlops.monitor as monitor
from tests.cli.test_monitor_cli import label_frame, predict
from tests.cli.test_serve_cli import launch, stop
from tests.conftest import ARTIFACTS, write_notebook
from tests.core.registry.conftest import FEATURES, Zoo, unique, zoo  # noqa: F401 (fixture)
from tests.e2e.jupyter_app import stop as stop_server
from tests.e2e.test_browser import CHROMIUM_ARGS, Board, open_notebook, require_browser, start_lab

pytestmark = [pytest.mark.kernel, pytest.mark.slow]

WINDOW = 20.0  # seconds: the tab's window, typed into its window box
BATCH = 150  # records a batch (10 requests of 15)
CELLS = ["%load_ext nbmlops", "%mlops"]


def records(seed: int, shift: float = 0.0) -> tuple[pd.DataFrame, np.ndarray]:
    """Records as the zoo's training data draws them, ``a`` moved by ``shift`` std."""
    rng = np.random.default_rng(seed)
    x = pd.DataFrame({c: rng.normal(size=BATCH) for c in FEATURES})
    y = ((x.a + 0.5 * x.b + 0.3 * rng.normal(size=BATCH)) > 0).astype(int).to_numpy()
    x["a"] += shift
    return x, y


def next_window(after: float) -> None:
    """Wait until the clock is in a later window than the one holding ``after``."""
    target = (after // WINDOW + 1) * WINDOW
    while time.time() < target:
        time.sleep(min(0.2, max(target - time.time(), 0.01)))


@dataclass
class Served:
    name: str
    url: str
    zoo: Zoo
    last_request: float


@pytest.fixture(scope="module")
def served(zoo: Zoo) -> Iterator[Served]:  # noqa: F811
    """The champion served by ``nbmlops serve``: a batch as in training (labelled at once),
    then, in a later window, a batch whose ``a`` moved."""
    name = unique("watched")
    reg = zoo.registry()
    reg.register("good", name)
    reg.promote(name, 1)
    settings = zoo.settings()
    proc, url, _printed = launch(
        SimpleNamespace(uri=settings.resolved_tracking_uri), zoo.project, f"{name}@champion"
    )
    try:
        # each batch starts a window and takes a second or two of its 20 s: one window holds
        # all of it, so what each window tests is fixed by the seeds
        next_window(time.time())
        x1, y1 = records(seed=21)
        ids1 = predict(url, x1)
        next_window(time.time())
        x2, _ = records(seed=22, shift=2.5)
        predict(url, x2)
        last = time.time()
        deadline = time.monotonic() + 60
        while not any(
            v["model"] == name and v["requests"] == 20 for v in monitor.served_versions(settings)
        ):
            assert time.monotonic() < deadline, "the gateway did not log the 20 requests"
            time.sleep(0.2)
        monitor.label(label_frame(ids1, y1), settings=settings)
        yield Served(name, url, zoo, last)
    finally:
        stop(proc)


@pytest.fixture(scope="module")
def board(served: Served, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Board]:
    chromium = require_browser()
    from playwright.sync_api import expect, sync_playwright

    project = served.zoo.project
    write_notebook(project / "board.ipynb", CELLS)
    proc, lab = start_lab(project, tmp_path_factory.mktemp("monitor-lab"))
    ARTIFACTS.mkdir(exist_ok=True)
    try:
        with sync_playwright() as pw:
            browser = pw.chromium.launch(
                executable_path=chromium, args=CHROMIUM_ARGS, headless=True
            )
            try:
                page = browser.new_page(viewport={"width": 1500, "height": 1300})
                page.set_default_timeout(120_000)
                open_notebook(page, lab)
                board = Board(page, lab, project)
                board.command("notebook:run-all-cells")
                tabs = page.locator(".jupyter-widget-tab .lm-TabBar-tab")
                expect(tabs.filter(has_text="Monitoring")).to_be_visible(timeout=240_000)
                yield board
            finally:
                browser.close()
    finally:
        stop_server(proc)


def monitoring(board: Board) -> Any:
    """The Monitoring tab's panel (opened), its window set to WINDOW."""
    from playwright.sync_api import expect

    board.tab("Monitoring")
    page = board.page
    panel = page.locator(".widget-vbox", has=page.get_by_placeholder("the last served")).last
    expect(panel.locator(".nbmlops-timeline, .nbmlops-empty")).to_be_visible(timeout=240_000)
    return panel


def inner_tab(board: Board, title: str) -> None:
    inner = board.page.locator(".jupyter-widget-tab .jupyter-widget-tab .lm-TabBar-tab")
    inner.filter(has_text=title).first.click()


def hover_text(board: Board, chart: Any, x: float, y: float) -> str:
    """The hover label of the point (x, y), after the last one's label went away."""
    hover = chart.locator(".hoverlayer .hovertext")
    board.page.mouse.move(5, 5)  # off the chart: the previous label goes
    hover.first.wait_for(state="detached", timeout=10_000)
    board.page.mouse.move(x, y)
    hover.first.wait_for(state="visible", timeout=10_000)
    return " ".join(hover.all_text_contents())


def windows_with_traffic(panel: Any) -> tuple[int, int]:
    text = panel.locator(".nbmlops-timeline").inner_text()
    m = re.search(r"(\d+) of (\d+) windows", text)
    assert m, text
    return int(m.group(1)), int(m.group(2))


def test_the_tab_flags_the_shifted_feature_shows_health_and_follows_new_traffic(
    board: Board, served: Served
):
    from playwright.sync_api import expect

    page = board.page
    panel = monitoring(board)
    assert page.locator(".jupyter-widget-tab .nbmlops-error").count() == 0
    # the version served last, with no model named; 20-second windows of the last 20 minutes
    expect(panel.locator(".nbmlops-timeline")).to_be_visible()
    panel.locator(".widget-text", has_text="last").locator("input").fill("20m")
    panel.locator(".widget-text", has_text="window").locator("input").fill("20s")
    panel.locator("button", has_text="Refresh").click()
    timeline = panel.locator(".nbmlops-timeline")
    expect(timeline).to_contain_text("windows of 20s", timeout=180_000)
    expect(timeline).to_contain_text("drifted: a (from")
    expect(panel.locator(".widget-html", has_text=served.name).first).to_be_visible()

    # the heatmap: hover row a from the newest window back until a drifted cell answers
    chart = panel.locator(".nbmlops-chart").first
    expect(chart.locator(".main-svg").first).to_be_visible(timeout=60_000)
    _, columns = windows_with_traffic(panel)
    chart.scroll_into_view_if_needed()
    box = chart.locator(".nsewdrag").first.bounding_box()
    assert box is not None
    rows = len(FEATURES)

    def cell(col: int, row: int) -> tuple[float, float]:
        return (
            box["x"] + (col + 0.5) * box["width"] / columns,
            box["y"] + (row + 0.5) * box["height"] / rows,
        )

    found = None
    for col in range(columns - 1, -1, -1):
        text = hover_text(board, chart, *cell(col, 0))
        if "drifted" in text:
            found = col, text
            break
    assert found is not None, "no drifted cell in row a"
    col, text = found
    assert text.startswith("a, window") and "KS p = " in text and "rows (read from rows)" in text
    assert "no drift" in hover_text(board, chart, *cell(col, 1))  # b did not move
    assert "no drift" in hover_text(board, chart, *cell(col, 2))  # nor c
    page.screenshot(path=str(ARTIFACTS / "monitor-tab-hover.png"), full_page=True)
    board.contrast("monitor-light")  # hover label included
    page.screenshot(path=str(ARTIFACTS / "monitor-tab-light.png"), full_page=True)

    # service health and performance of the same span
    inner_tab(board, "Service health")
    expect(panel.locator("table", has_text="latency_p99_ms").first).to_be_visible()
    inner_tab(board, "Performance")
    perf = panel.locator("table", has_text="accuracy").first
    expect(perf).to_be_visible()
    expect(perf).to_contain_text("accuracy_estimated")
    board.contrast("monitor-light-performance")
    inner_tab(board, "Drift over time")

    # traffic sent while the tab is open shows up by itself, in a window of its own
    before, _ = windows_with_traffic(panel)
    next_window(max(served.last_request, time.time()))
    x3, _ = records(seed=23, shift=2.5)
    predict(served.url, x3)
    deadline = time.monotonic() + 120
    while windows_with_traffic(panel)[0] <= before:  # no Refresh clicked: the tab follows
        assert time.monotonic() < deadline, "the new traffic did not appear in 120 s"
        page.wait_for_timeout(250)


def test_the_tab_is_readable_in_the_dark_theme(board: Board):
    page = board.page
    monitoring(board)
    board.command("apputils:change-theme", {"theme": "JupyterLab Dark"})
    page.wait_for_selector("body[data-jp-theme-light='false']", state="attached")
    page.wait_for_function(  # the theme's stylesheet applies after the attribute
        "getComputedStyle(document.body).getPropertyValue('--jp-layout-color0').trim() == '#111'"
    )
    try:
        inner_tab(board, "Drift over time")
        page.locator(".jupyter-widget-tab .nbmlops-chart .main-svg").first.wait_for(state="visible")
        board.contrast("monitor-dark")
        page.screenshot(path=str(ARTIFACTS / "monitor-tab-dark.png"), full_page=True)
        inner_tab(board, "Service health")
        board.contrast("monitor-dark-health")
    finally:
        board.command("apputils:change-theme", {"theme": "JupyterLab Light"})
        page.wait_for_selector("body[data-jp-theme-light='true']", state="attached")
