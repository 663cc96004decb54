"""Interactive charts for the panels: Plotly figure specs (plain dicts, so the JupyterLab side
panel can draw the same ones with plotly.js) and the ``FigureWidget`` that shows them in a
notebook, offline (plotly.py ships plotly.js in its wheel).

Colours: Plotly writes colours into SVG attributes, where CSS variables do not work, so the
figures are transparent and :data:`CHART_CSS` (one <style> in an HTML widget of the panel) gives
their text and grid lines JupyterLab's theme colours."""

from __future__ import annotations

from html import escape
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import networkx as nx
    import pandas as pd

CHART_CLASS = "nbmlops-chart"
CHART_CSS = (
    "<style>"
    f".{CHART_CLASS} .xtick text,.{CHART_CLASS} .ytick text,.{CHART_CLASS} .legendtext,"
    f".{CHART_CLASS} .g-xtitle text,.{CHART_CLASS} .g-ytitle text,.{CHART_CLASS} .gtitle,"
    f".{CHART_CLASS} .textpoint text"
    "{fill:var(--jp-ui-font-color1,#212121)!important}"
    f".{CHART_CLASS} .gridlayer path,.{CHART_CLASS} .zerolinelayer path"
    "{stroke:var(--jp-border-color2,#e0e0e0)!important}"
    f".{CHART_CLASS} .modebar-btn path{{fill:var(--jp-ui-font-color2,#616161)!important}}"
    # hover labels: the theme's panel colour with its text colour (the trace's colour stays on
    # the border), instead of white or black text on the trace's colour, which can fall below AA
    f".{CHART_CLASS} .hoverlayer .hovertext path{{fill:var(--jp-layout-color1,#fff)!important}}"
    f".{CHART_CLASS} .hoverlayer .hovertext text{{fill:var(--jp-ui-font-color1,#212121)!important}}"
    "</style>"
)
X_AXES = {"step": "step", "time": "wall time", "relative": "seconds since the run's first value"}


def _layout(**extra: Any) -> dict[str, Any]:
    return {
        "paper_bgcolor": "rgba(0,0,0,0)",
        "plot_bgcolor": "rgba(0,0,0,0)",
        "font": {"size": 12},
        "margin": {"l": 50, "r": 20, "t": 30, "b": 40},
        "hovermode": "closest",
        **extra,
    }


def steps_per_metric(histories: dict[str, pd.DataFrame]) -> dict[str, int]:
    """metric -> the most values any one run logged of it."""
    return {
        key: int(frame.groupby("run_id").size().max()) if not frame.empty else 0
        for key, frame in histories.items()
    }


def default_metric(histories: dict[str, pd.DataFrame]) -> str:
    """The metric with the most steps (ties: by name), so curves open on a curve, not a dot."""
    counts = steps_per_metric(histories)
    return min(counts, key=lambda k: (-counts[k], k)) if counts else ""


def smooth(values: list[float], weight: float) -> list[float]:
    """Exponential moving average (TensorBoard's smoothing), ``weight`` in [0, 1)."""
    if not 0 < weight < 1:
        return list(values)
    out, last = [], None
    for v in values:
        last = v if last is None else last * weight + (1 - weight) * v
        out.append(last)
    return out


def curves_spec(
    history: pd.DataFrame,
    labels: dict[str, str],
    metric: str,
    x: str = "step",
    smoothing: float = 0.0,
) -> dict[str, Any]:
    """One line per run of ``metric`` (columns run_id, step, value, timestamp), x by step, wall
    time or seconds since the run's first value; hover shows run, x and value."""
    if x not in X_AXES:
        from nbmlops.exceptions import UsageError

        raise UsageError(f"No x axis {x!r}", fix=f"Use one of {', '.join(X_AXES)}.")
    data = []
    for run_id, rows in history.groupby("run_id", sort=False):
        rows = rows.sort_values(["step", "timestamp"])
        if x == "step":
            xs: list[Any] = rows["step"].tolist()
        elif x == "time":
            xs = [t.isoformat() for t in rows["timestamp"].astype("datetime64[ms]").tolist()]
        else:
            xs = ((rows["timestamp"] - rows["timestamp"].min()) / 1000).tolist()
        name = labels.get(str(run_id), str(run_id)[:8])
        data.append(
            {
                "type": "scatter",
                "mode": "lines+markers" if len(rows) < 50 else "lines",
                "name": name,
                "x": xs,
                "y": smooth(rows["value"].tolist(), smoothing),
                "hovertemplate": f"{escape(name)}<br>{X_AXES[x]} %{{x}}<br>{escape(metric)} "
                "%{y:.4g}<extra></extra>",
            }
        )
    layout = _layout(
        xaxis={"title": {"text": X_AXES[x]}},
        yaxis={"title": {"text": metric}},
        legend={"orientation": "h", "y": -0.2},
        height=360,
    )
    return {"data": data, "layout": layout}


def layered_positions(g: nx.DiGraph, layers: dict[str, int]) -> dict[str, tuple[float, float]]:
    """Left to right by layer (sources left), nodes of a layer spread top to bottom, ordered by
    the mean row of their parents so edges cross less (one barycentre sweep: enough for a
    lineage, whose layers are few; a full Sugiyama layout would need graphviz)."""
    by_layer: dict[int, list[str]] = {}
    for node in g.nodes:
        by_layer.setdefault(layers.get(node, 0), []).append(node)
    row: dict[str, float] = {}
    positions: dict[str, tuple[float, float]] = {}
    for layer in sorted(by_layer):
        nodes = by_layer[layer]

        def key(n: str) -> tuple[float, str]:
            parents = [row[p] for p in g.predecessors(n) if p in row]
            return (sum(parents) / len(parents) if parents else 0.0, n)

        nodes.sort(key=key)
        offset = (len(nodes) - 1) / 2
        for i, node in enumerate(nodes):
            row[node] = i - offset
            positions[node] = (float(layer), -(i - offset))
    return positions


KIND_SYMBOL = {"data": "square", "run": "circle", "model": "diamond"}


def lineage_spec(
    g: nx.DiGraph,
    labels: dict[str, str],
    layers: dict[str, int],
    selected: str = "",
) -> tuple[dict[str, Any], list[str]]:
    """The lineage graph: edges as lines, nodes with their label beside them and their id on
    hover, the selected node ringed. Returns the spec and the node id of each point (the
    order of the node trace), for click handling."""
    pos = layered_positions(g, layers)
    ex: list[float | None] = []
    ey: list[float | None] = []
    for a, b in g.edges:
        (x0, y0), (x1, y1) = pos[a], pos[b]
        ex += [x0, x1, None]
        ey += [y0, y1, None]
    order = sorted(g.nodes, key=lambda n: (pos[n][0], -pos[n][1]))
    kinds = [str(g.nodes[n].get("kind", "")) for n in order]
    nodes = {
        "type": "scatter",
        "mode": "markers+text",
        "name": "nodes",
        "x": [pos[n][0] for n in order],
        "y": [pos[n][1] for n in order],
        "text": [labels.get(n, n) for n in order],
        "textposition": "middle right",
        "hovertext": [f"{k} {labels.get(n, n)}<br>{n}" for n, k in zip(order, kinds, strict=True)],
        "hoverinfo": "text",
        "marker": {
            "size": [16 if n == selected else 11 for n in order],
            "symbol": [KIND_SYMBOL.get(k, "circle") for k in kinds],
            "line": {"width": [3 if n == selected else 0 for n in order], "color": "#ff9800"},
            "color": [
                "#1976d2" if k == "run" else "#43a047" if k == "data" else "#8e24aa" for k in kinds
            ],
        },
    }
    edges = {
        "type": "scatter",
        "mode": "lines",
        "name": "edges",
        "x": ex,
        "y": ey,
        "hoverinfo": "skip",
        "line": {"width": 1, "color": "#9e9e9e"},
    }
    width = max((p[0] for p in pos.values()), default=0)
    rows = max(
        (len([1 for p in pos.values() if p[0] == x]) for x in {p[0] for p in pos.values()}),
        default=1,
    )
    layout = _layout(
        showlegend=False,
        dragmode="pan",
        xaxis={"visible": False, "range": [-0.3, width + 0.9]},
        yaxis={"visible": False, "scaleanchor": None},
        height=max(260, min(900, 36 * rows + 60)),
        margin={"l": 10, "r": 10, "t": 10, "b": 10},
    )
    return {"data": [edges, nodes], "layout": layout}, order


def figure_widget(spec: dict[str, Any], *, scroll_zoom: bool = False) -> Any:
    """A plotly ``FigureWidget`` of ``spec`` with the theme class (``scroll_zoom``: the mouse
    wheel zooms); clear error without plotly."""
    import importlib.util

    missing = [m for m in ("plotly", "anywidget") if importlib.util.find_spec(m) is None]
    if missing:
        from nbmlops.exceptions import MissingDependencyError

        raise MissingDependencyError(
            f"The 'charts' extra of nbmlops (interactive charts) is not installed: "
            f"{', '.join(missing)} cannot be imported",
            fix="Install it: pip install 'nbmlops[charts]' (then restart the kernel).",
        )
    import plotly.graph_objects as go

    fig = go.FigureWidget(spec)
    fig.add_class(CHART_CLASS)
    if scroll_zoom:  # plotly.js's config, which FigureWidget syncs as its _config trait
        fig._config = {**fig._config, "scrollZoom": True}
    return fig


def update_figure(fig: Any, spec: dict[str, Any]) -> None:
    """Replace a FigureWidget's traces and layout in one message (keeps the widget, so the
    front end does not load plotly.js again)."""
    with fig.batch_update():
        fig.data = []
        fig.add_traces(spec["data"])
        fig.layout = spec["layout"]


# --- parallel coordinates ---------------------------------------------------------------------
def parallel_spec(
    runs: pd.DataFrame, run_ids: list[str], metric: str
) -> tuple[dict[str, Any], list[str]]:
    """Plotly parcoords of the runs' params (those that vary; all when none does) and
    ``metric`` (full name) as the last axis, lines coloured by it; text params get one tick
    per value. Runs without the metric are left out. Returns the spec and the run ids of its
    lines, in order (what :func:`brushed_runs` maps back)."""
    import pandas as pd

    rows = runs[runs["run_id"].isin(run_ids)]
    if metric in rows.columns:
        rows = rows[rows[metric].notna()]
    params = [c for c in rows.columns if c.startswith("params.")]
    varying = [c for c in params if rows[c].astype("str").nunique() > 1] or params
    dims = []
    for col in varying:
        values = rows[col]
        numbers = pd.to_numeric(values, errors="coerce")
        label = col.split(".", 1)[1]
        if numbers.notna().all() and len(values):
            dims.append({"label": label, "values": numbers.astype(float).tolist()})
        else:
            text = values.map(lambda v: "(none)" if v is None or v != v else str(v))
            cats = sorted(text.unique())
            codes = {c: i for i, c in enumerate(cats)}
            dims.append(
                {
                    "label": label,
                    "values": [codes[t] for t in text],
                    "tickvals": list(range(len(cats))),
                    "ticktext": cats,
                }
            )
    line: dict[str, Any] = {"color": "#1976d2"}
    if metric in rows.columns:
        values = rows[metric].astype(float).tolist()
        dims.append({"label": metric.split(".", 1)[-1], "values": values})
        line = {"color": values, "colorscale": "Viridis", "showscale": True}
    trace = {"type": "parcoords", "dimensions": dims, "line": line}
    layout = _layout(height=380, margin={"l": 60, "r": 60, "t": 50, "b": 30})
    return {"data": [trace], "layout": layout}, list(rows["run_id"])


def _inside(value: float, ranges: Any) -> bool:
    if not ranges:
        return True
    pairs = ranges if isinstance(ranges[0], list | tuple) else [ranges]
    return any(lo <= value <= hi for lo, hi in pairs)


def brushed_runs(dimensions: list[dict[str, Any]], run_ids: list[str]) -> tuple[str, ...] | None:
    """The runs whose line passes every brushed range (a dimension's ``constraintrange``, one
    ``[lo, hi]`` or a list of them); None when nothing is brushed."""
    brushes = [(d["values"], d.get("constraintrange")) for d in dimensions]
    if not any(r for _v, r in brushes):
        return None
    return tuple(
        rid
        for i, rid in enumerate(run_ids)
        if all(_inside(values[i], r) for values, r in brushes if r)
    )
