"""The Monitoring tab of ``%mlops`` without a browser: in an empty project it says how to start;
on a registered champion whose logged traffic (the gateway's own log writer, real SQLite)
shifts in one feature at a known minute, it shows the version served last, a drift heatmap
flagging that feature from that minute on, and it follows new traffic by itself."""

from __future__ import annotations

import time

import numpy as np
import pytest

import nbmlops.monitor as monitor
from nbmlops.core.serving.predlog import PredictionLog
from nbmlops.exceptions import UsageError
from nbmlops.widgets.dashboard import Dashboard, tab_titles
from nbmlops.widgets.monitor import NOTHING_SERVED
from tests.core.registry.conftest import Zoo, unique, zoo  # noqa: F401 (fixture)

MINUTE = 60.0
SHIFT_FROM = 3  # the first minute whose traffic has a shifted


def wait_for(check, what: str, timeout: float = 120.0):
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        assert time.monotonic() < deadline, f"waited {timeout:g} s for {what}"
        time.sleep(0.2)


def write_traffic(
    home, name: str, start: float, minutes: int, seed: int, shift_from: int, step: float = 5.0
) -> int:
    """``minutes`` minutes of 100 records a minute (in requests of 10, ``step`` seconds apart)
    from ``start``; ``a`` moves by two std from minute ``shift_from`` on."""
    rng = np.random.default_rng(seed)
    log = PredictionLog(home).start()
    n = 0
    for m in range(minutes):
        for r in range(10):
            recs = [
                {"a": rng.normal(2.0 if m >= shift_from else 0.0), "b": rng.normal(),
                 "c": rng.normal()}
                for _ in range(10)
            ]  # fmt: skip
            ts = start + m * MINUTE + r * step
            log.record(f"{name}-{seed}-{m}-{r}", "main", name, 1, 200, 3.0,
                       inputs=recs, outputs=[1] * 10, ts=ts)  # fmt: skip
            n += len(recs)
    log.close()
    return n


def test_with_nothing_served_the_tab_says_how_to_start(project):
    assert "Monitoring" in tab_titles()
    dash = Dashboard(select="Monitoring")
    try:
        panel = dash.panels["Monitoring"]
        assert panel.wait(60) and panel.error == "", panel.error
        assert panel.empty and panel.tabs.layout.display == "none"
        assert NOTHING_SERVED in panel.status_box.value.replace("&#x27;", "'")
        assert "nbmlops serve NAME@champion" in dash.summary_html()
        assert "Traceback" not in panel.status_box.value
    finally:
        dash.close()
    with pytest.raises(UsageError, match="the prediction log holds no model") as err:
        monitor.drift_over_time()
    assert "nbmlops serve" in str(err.value.fix)


def test_the_tab_shows_drift_over_time_of_the_last_served_version_and_follows_new_traffic(
    zoo: Zoo,  # noqa: F811
    monkeypatch,
):
    name = unique("tab")
    reg = zoo.registry()
    reg.register("good", name)
    reg.promote(name, 1)
    settings = zoo.settings()
    monkeypatch.chdir(zoo.project)
    start = (time.time() // MINUTE - 6) * MINUTE  # six ended minutes
    write_traffic(settings.home_dir, name, start, 6, seed=5, shift_from=SHIFT_FROM)

    from nbmlops.widgets.monitor import MonitorPanel

    panel = MonitorPanel(last="10m", window="1m", follow=True, settings=settings)
    try:
        assert panel.wait(180) and panel.error == "", panel.error
        assert panel.report is not None and panel.report.model == name  # served last
        timeline = panel.timeline
        assert timeline is not None and timeline.features == ["a", "b", "c"]
        assert timeline.drifted_from() == {"a": start + SHIFT_FROM * MINUTE, "b": None, "c": None}
        ended = timeline.windows[timeline.windows["start"] >= start].head(6)
        assert ended["source"].tolist() == ["profiles"] * 6  # minutes that ended: profiled
        assert ended["rows"].tolist() == [100] * 6
        [trace] = panel.heatmap.data
        assert trace.type == "heatmap" and list(trace.y) == ["a", "b", "c"]
        assert len(trace.x) == len(timeline.windows)
        first = timeline.windows["start"].tolist().index(start)
        row_a = list(trace.z[0])[first : first + 6]
        assert [v > 1 for v in row_a] == [m >= SHIFT_FROM for m in range(6)]
        assert all(v < 1 for v in list(trace.z[1])[first : first + 6])  # b never moved
        hover = trace.customdata[0][first + SHIFT_FROM]
        assert hover[0].startswith("KS p = ") and hover[2] == "drifted" and hover[3] == 100
        assert "%{customdata[0]}" in trace.hovertemplate
        assert "drifted: a (from" in panel.timeline_box.value
        assert panel.tabs.titles[0] == "Drift over time"
        assert panel.report.metrics["requests"] == 60  # requests of the span
        loads = panel.loads

        # new traffic, logged while the panel is open: it refreshes by itself
        now = time.time()
        write_traffic(settings.home_dir, name, now, 1, seed=6, shift_from=0, step=0.0)
        wait_for(lambda: panel.loads > loads and panel.wait(0), "the panel to follow the log")
        assert panel.wait(180) and panel.error == "", panel.error
        newest = panel.timeline.windows.set_index("start")
        current = (now // MINUTE) * MINUTE
        assert newest.loc[current, "rows"] == 100  # from rows, or profiled if it ended since
        assert panel.poller is not None and panel.poller.running
    finally:
        panel.close()
    assert not panel.poller.running

    with pytest.raises(UsageError, match="holds no successful predictions of " + name):
        monitor.drift_over_time(model=name, since="2001-01-01", until="2001-01-02",
                                settings=settings)  # fmt: skip
    with pytest.raises(UsageError, match="has no version 9"):
        monitor.drift_over_time(model=name, version=9, settings=settings)
