"""The Monitoring tab's drift heatmap: a Plotly spec (a plain dict, as in
:mod:`nbmlops.widgets.charts`) of features x time windows, coloured by drift severity, with
each cell's test, score, threshold and rows on hover."""

from __future__ import annotations

import math
import time
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from nbmlops.api.monitor import DriftTimeline

SEVERITY_MAX = 3.0  # colours saturate at three times the threshold
# Blue below the threshold, a step to orange at it, red far above: the verdict reads at a
# glance in both themes (the figure is transparent; cells are the only filled shapes).
COLORSCALE = [
    [0.0, "#3f6fb5"],
    [1 / SEVERITY_MAX - 0.001, "#b9d3ee"],
    [1 / SEVERITY_MAX, "#f6a04d"],
    [1.0, "#c62828"],
]
# Colour bar text in the theme's colour (CHART_CSS covers the axes, not the colour bar).
HEATMAP_CSS = (
    "<style>.nbmlops-chart .colorbar text,.nbmlops-chart .cbtitle text"
    "{fill:var(--jp-ui-font-color1,#212121)!important}</style>"
)


def window_label(start: float, window_seconds: float) -> str:
    """A window's start as short UTC text, as precise as the window needs."""
    fmt = (
        "%H:%M:%S"
        if window_seconds < 60
        else "%m-%d %H:%M"
        if window_seconds < 86400
        else "%Y-%m-%d"
    )
    return time.strftime(fmt, time.gmtime(start))


def _score_text(test: str, score: float) -> str:
    if test == "none" or not math.isfinite(score):
        return "not tested"
    name = {"ks": "KS p", "chi2": "chi-square p", "jensenshannon": "Jensen-Shannon"}.get(test, test)
    return f"{name} = {score:.3g}"


def _verdict(cell: dict[str, Any]) -> str:
    if cell["source"] == "empty":
        return "no traffic"
    if cell["test"] == "none":
        return f"not tested ({cell['note'] or 'too few rows'})"
    return "drifted" if cell["drifted"] else "no drift"


def drift_heatmap_spec(timeline: DriftTimeline) -> dict[str, Any]:
    """Features (rows, in the reference's order) x windows (columns, oldest left); a cell's
    colour is its severity (1 at the test's threshold), blank where untested."""
    windows = timeline.windows["start"].tolist()
    xs = [window_label(t, timeline.window_seconds) for t in windows]
    if len(set(xs)) < len(xs):  # labels too coarse for the span: fall back to full times
        xs = [time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(t)) for t in windows]
    col = {t: i for i, t in enumerate(windows)}
    row = {f: i for i, f in enumerate(timeline.features)}
    z: list[list[float | None]] = [[None] * len(xs) for _ in timeline.features]
    custom: list[list[list[Any]]] = [[["", "", "", "", ""]] * len(xs) for _ in timeline.features]
    for cell in timeline.table.to_dict("records"):
        i, j = row[cell["feature"]], col[cell["window_start"]]
        sev = cell["severity"]
        z[i][j] = None if not math.isfinite(sev) else min(float(sev), SEVERITY_MAX)
        threshold = cell["threshold"]
        custom[i][j] = [
            _score_text(cell["test"], cell["score"]),
            f"{threshold:.3g}" if math.isfinite(threshold) else "-",
            _verdict(cell),
            int(cell["rows"]),
            cell["source"],
        ]
    trace = {
        "type": "heatmap",
        "x": xs,
        "y": list(timeline.features),
        "z": z,
        "zmin": 0.0,
        "zmax": SEVERITY_MAX,
        "colorscale": COLORSCALE,
        "xgap": 2,
        "ygap": 2,
        "hoverongaps": True,
        "customdata": custom,
        "hovertemplate": "%{y}, window %{x} UTC<br>%{customdata[0]} (threshold "
        "%{customdata[1]}): %{customdata[2]}<br>%{customdata[3]} rows (read from %{customdata[4]})"
        "<extra></extra>",
        "colorbar": {
            "title": {"text": "drift<br>(1 = threshold)", "side": "right"},
            "tickvals": [0, 1, 2, 3],
            "ticktext": ["0", "1", "2", "3+"],
            "thickness": 12,
        },
    }
    layout = {
        "paper_bgcolor": "rgba(0,0,0,0)",
        "plot_bgcolor": "rgba(0,0,0,0)",
        "font": {"size": 12},
        "margin": {"l": 90, "r": 20, "t": 10, "b": 60},
        "hovermode": "closest",
        "xaxis": {"type": "category", "title": {"text": "window start (UTC)"}},
        "yaxis": {"type": "category", "autorange": "reversed"},
        "height": max(220, 110 + 30 * len(timeline.features)),
        # a FigureWidget does not follow its box's width: wide enough for the windows
        "width": int(min(900, max(520, 230 + 20 * len(xs)))),
    }
    return {"data": [trace], "layout": layout}
