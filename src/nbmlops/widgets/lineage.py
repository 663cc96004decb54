"""The lineage panel: the graph around a focus (a frame, NAME@k, a run id, runs:/ID/NAME, a
model), a node list to pick from, the picked node's details, and the drawing.

State: ``focus`` (the node whose upstream and downstream are drawn), ``selected`` (the node
whose details show, highlighted in the drawing), ``node_filter``. The graph and its drawing
come from :mod:`nbmlops.core.lineage.graph`; run details from :mod:`nbmlops.core.experiments`.
"""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime
from typing import Any

import ipywidgets as widgets
from traitlets import Unicode, observe

from nbmlops.api import experiments as core
from nbmlops.api.lineage import LineageGraph, LineageView, lineage_graph, node_layers, resolve
from nbmlops.api.tracking import get_tracker
from nbmlops.config import Settings
from nbmlops.exceptions import UsageError
from nbmlops.widgets._common import (
    PanelMixin,
    Worker,
    current_notebook,
    log,
    same_notebook,
    style_widget,
)
from nbmlops.widgets.charts import figure_widget, lineage_spec, update_figure
from nbmlops.widgets.html import details_html, note_html

MAX_LISTED = 500  # node list entries; the filter box narrows longer lists


def node_fields(graph: LineageGraph, node: str) -> tuple[str, list[tuple[str, Any]]]:
    """Title and key/value rows describing ``node`` from what the lineage records hold."""
    g = graph.graph
    attrs = g.nodes[node]
    kind = attrs.get("kind")

    def neighbours(direction: str, edge_kind: str | None = None) -> list[str]:
        edges = g.in_edges(node, data=True) if direction == "in" else g.out_edges(node, data=True)
        other = 0 if direction == "in" else 1
        return sorted(
            graph.label(e[other])
            for e in edges
            if edge_kind is None or e[2].get("kind") == edge_kind
        )

    if kind == "data":
        shape = attrs.get("shape") or []
        return graph.label(node), [
            ("kind", "data"),
            ("variable", attrs.get("label")),
            ("versions", attrs.get("versions") or "not committed as a version"),
            ("digest", attrs.get("digest")),
            ("type", attrs.get("data_kind")),
            ("shape", " x ".join(str(s) for s in shape) if shape else None),
            ("schema", attrs.get("schema") or None),
            ("written by", neighbours("in")),
            ("read by", neighbours("out")),
        ]
    if kind == "run":
        return graph.label(node), [
            ("kind", "run"),
            ("name", attrs.get("label")),
            ("run id", attrs.get("run_id")),
            ("status", attrs.get("status")),
            ("experiment", attrs.get("experiment")),
            ("started", _time(attrs.get("start_ms"))),
            ("ended", _time(attrs.get("end_ms"))),
            ("source", attrs.get("source")),
            ("read", neighbours("in")),
            ("produced", neighbours("out")),
        ]
    if kind == "model":
        run_id = attrs.get("run_id")
        return graph.label(node), [
            ("kind", "model"),
            ("variable", attrs.get("label")),
            ("class", attrs.get("class")),
            ("model id", attrs.get("model_id")),
            ("run id", run_id),
            ("load with", f"runs:/{run_id}/{attrs.get('label')}" if run_id else None),
            ("produced by", neighbours("in", "produced")),
            ("trained on", neighbours("in", "trained_on")),
        ]
    return graph.label(node), [(k, v) for k, v in attrs.items()]


def _time(ms: Any) -> str | None:
    if not isinstance(ms, int | float) or not ms:
        return None
    return datetime.fromtimestamp(ms / 1000, UTC).astimezone().strftime("%Y-%m-%d %H:%M:%S")


class LineagePanel(PanelMixin, widgets.VBox):
    """Lineage around a focus: node list, details of the selected node, the drawing."""

    focus = Unicode("", help="Node whose upstream and downstream are drawn ('' for none)")
    selected = Unicode("", help="Node whose details are shown, highlighted in the drawing")
    node_filter = Unicode("", help="Only list nodes whose label contains this text")
    error = Unicode("", help="The last error, shown in the red box; '' when all is well")

    def __init__(
        self,
        obj: Any = None,
        *,
        settings: Settings | None = None,
        namespace: dict[str, Any] | None = None,
        max_nodes: int = 200,
        autoload: bool = True,
        notebook: str | None = None,
    ):
        self.settings = settings or get_tracker().settings
        self.notebook = notebook if notebook is not None else current_notebook()
        self.namespace = namespace if namespace is not None else _user_namespace()
        self.max_nodes = max_nodes
        self.graph: LineageGraph | None = None
        self.view: LineageView | None = None
        self.figure: Any = None  # the Plotly spec (dict) of the drawn graph
        self.chart: Any = None  # its FigureWidget: hover for ids, click to select
        self.drawn_nodes: list[str] = []  # node of each point of the chart's node trace
        self.details_fields: list[tuple[str, Any]] = []
        self._lock = threading.RLock()
        self._quiet = threading.local()
        self._generation: dict[str, int] = {}
        self._loaded = threading.Event()
        self._closed = False
        self.worker = Worker(self.show_error)
        self._build_widgets()
        super().__init__(
            children=[
                style_widget(),
                self.header,
                self.error_box,
                self.middle,
                self.drawing_note,
                self.drawing,
            ],
            layout=widgets.Layout(width="100%"),
        )
        if autoload:
            self.load(obj)

    def _build_widgets(self) -> None:
        w = widgets
        self.what_box = w.Text(
            placeholder="NAME@k, run id, runs:/ID/NAME, model id or variable",
            continuous_update=False,  # the value arrives on Enter (or leaving the box)
            layout=w.Layout(width="360px"),
        )
        auto = w.Layout(width="auto")
        self.show_button = w.Button(description="Show lineage", icon="sitemap", layout=auto)
        self.refresh_button = w.Button(description="Refresh", icon="refresh", layout=auto)
        self.focus_button = w.Button(
            description="Centre on selected", icon="crosshairs", layout=auto
        )
        self.header = w.HBox(
            [self.what_box, self.show_button, self.focus_button, self.refresh_button],
            layout=w.Layout(flex_flow="row wrap"),
        )
        self.error_box = w.HTML("", layout=w.Layout(display="none"))
        self.filter_box = w.Text(placeholder="filter nodes…", layout=w.Layout(width="330px"))
        self.node_list = w.Select(options=[], rows=14, layout=w.Layout(width="330px"))
        self.list_note = w.HTML("")
        self.details = w.HTML(note_html("Pick a node to see its details."))
        self.details.add_class("nbmlops-lineage-details")
        self.middle = w.HBox(
            [
                w.VBox([self.filter_box, self.node_list, self.list_note]),
                w.VBox([self.details], layout=w.Layout(flex="1 1 auto", padding="0 0 0 12px")),
            ]
        )
        self.drawing_note = w.HTML("")
        self.drawing = w.Box(layout=w.Layout(display="none", width="100%"))

        self.filter_box.observe(lambda c: self._set("node_filter", c["new"]), "value")
        self.node_list.observe(lambda c: self._set("selected", c["new"] or ""), "value")
        self.show_button.on_click(lambda _b: self._guard(self.show, self.what_box.value))
        self.what_box.observe(self._on_what, "value")
        self.focus_button.on_click(lambda _b: self._set("focus", self.selected))
        self.refresh_button.on_click(lambda _b: self._guard(self.refresh))

    # --- loading and focusing ---------------------------------------------------------------
    def load(self, obj: Any = None) -> None:
        """Read the lineage records and centre on ``obj`` (None: the most recent run). A
        failure shows in the error box."""
        try:
            self.graph = lineage_graph(self.settings)
            node = self._latest_run() if obj is None else resolve(self.graph, obj, self.namespace)
            self.show_error(None)
            if node is None:
                self._list_nodes()
                self.drawing_note.value = note_html(
                    "No lineage yet: it appears once a %%track cell's run reaches MLflow."
                )
            elif self.focus == node:  # unchanged: the observer would not fire
                self._refocus()
            else:
                self.focus = node
        except Exception as err:
            log.debug("lineage load failed", exc_info=True)
            self.show_error(err)
            if self.graph is not None:
                self._guard(self._list_nodes)
        finally:
            self._loaded.set()

    def show(self, what: Any) -> None:
        """Centre on something else (same forms as the constructor's ``obj``)."""
        if self.graph is None:
            self.graph = lineage_graph(self.settings)
        if isinstance(what, str) and not what.strip():
            raise UsageError("Type what to show the lineage of", fix=self.what_box.placeholder)
        node = resolve(self.graph, what, self.namespace)
        self.show_error(None)
        self.focus = node

    def refresh(self) -> None:
        """Re-read the lineage records (runs shipped since), keeping the focus if it exists."""
        focus, selected = self.focus, self.selected
        self.graph = lineage_graph(self.settings)
        g = self.graph.graph
        with self._quietly():
            self.focus = focus if focus in g else ""
            self.selected = selected if selected in g else ""
        if self.focus:
            self._refocus()
        else:
            self.load(None)

    def _on_what(self, change: dict[str, Any]) -> None:
        if change["new"].strip():  # Enter in the box
            self._guard(self.show, change["new"])

    def _latest_run(self) -> str | None:
        """This notebook's newest run; the store's newest when this notebook has none."""
        assert self.graph is not None
        runs = [
            (
                same_notebook(attrs.get("source"), self.notebook),
                attrs.get("end_ms") or attrs.get("start_ms") or 0,
                node,
            )
            for node, attrs in self.graph.graph.nodes(data=True)
            if attrs.get("kind") == "run"
        ]
        return max(runs)[2] if runs else None

    @observe("focus")
    def _on_focus(self, change: dict[str, Any]) -> None:
        if not self._is_quiet:
            self._guard(self._refocus)

    def _refocus(self) -> None:
        assert self.graph is not None
        if not self.focus:
            self.view = None
            self._list_nodes()
            return
        self.view = self.graph.view(self.focus)
        self._list_nodes()
        if self.selected == self.focus:
            self._reselect()
        else:
            self.selected = self.focus

    @observe("node_filter")
    def _on_filter(self, change: dict[str, Any]) -> None:
        with self._quietly():
            self.filter_box.value = self.node_filter
        if not self._is_quiet:
            self._guard(self._list_nodes)

    def _list_nodes(self) -> None:
        """The node list: the drawn view's nodes (data left to right), or every node when
        nothing is focused; narrowed by the filter."""
        assert self.graph is not None
        g = self.view.graph if self.view is not None else self.graph.graph
        layers = node_layers(g) if g.number_of_nodes() else {}
        needle = self.node_filter.strip().lower()
        entries = []
        for node in g.nodes:
            label = self.graph.label(node, g)
            if needle and needle not in label.lower() and needle not in node.lower():
                continue
            entries.append((layers.get(node, 0), label, node))
        entries.sort()
        shown = entries[:MAX_LISTED]
        with self._quietly():
            self.node_list.options = [(label, node) for _l, label, node in shown]
            self.node_list.value = (
                self.selected if any(n == self.selected for *_x, n in shown) else None
            )
        scope = "in this lineage" if self.view is not None else "in the project"
        more = f" (first {MAX_LISTED}; type to narrow)" if len(entries) > MAX_LISTED else ""
        self.list_note.value = note_html(
            f"{len(entries)} of {g.number_of_nodes()} nodes {scope}{more}"
        )

    # --- selection: details and drawing -------------------------------------------------------
    @observe("selected")
    def _on_selected(self, change: dict[str, Any]) -> None:
        if not self._is_quiet:
            self._guard(self._reselect)

    def _reselect(self) -> None:
        assert self.graph is not None
        node = self.selected
        with self._quietly():
            if node in [v for _l, v in self.node_list.options]:
                self.node_list.value = node
        if not node:
            self.details.value = note_html("Pick a node to see its details.")
            return
        if node not in self.graph.graph:
            raise UsageError(f"No node {node!r} in the lineage", fix="Pick one from the list.")
        if self.view is None or node not in self.view.graph:
            with self._quietly():
                self.focus = node
            self.view = self.graph.view(node)
            self._list_nodes()
        title, fields = node_fields(self.graph, node)
        self.details_fields = fields
        self.details.value = details_html(title, fields)
        attrs = self.graph.graph.nodes[node]
        if attrs.get("kind") == "run" and attrs.get("run_id"):
            self._fetch_run(node, attrs["run_id"], title, fields)
        self._draw()

    def _fetch_run(self, node: str, run_id: str, title: str, fields: list[tuple[str, Any]]) -> None:
        generation = self._bump("details")
        self.details.value = details_html(title, [*fields, ("from MLflow", "reading…")])

        def job() -> None:
            try:
                run = core.run_details(self.settings, run_id)
            except Exception:
                if not self._stale("details", generation):
                    self.details.value = details_html(title, fields)
                raise
            if self._stale("details", generation):
                return
            more = [
                ("status (MLflow)", run["status"]),
                ("user", run["user"]),
                ("params", run["params"]),
                ("metrics", run["metrics"]),
                ("git commit", run["git_commit"]),
            ]
            self.details_fields = [*fields, *more]
            self.details.value = details_html(title, self.details_fields)

        self.worker.submit(job)

    def _draw(self) -> None:
        generation = self._bump("draw")
        if self.graph is None or self.view is None:
            return
        graph, view = self.graph, LineageView(self.selected or self.focus, self.view.graph)
        self.drawing_note.value = note_html("Drawing…")

        def job() -> None:
            if self._stale("draw", generation):
                return
            time.sleep(0.1)  # moving through the list: draw only where it stops
            if self._stale("draw", generation):
                return
            g = _nearest(view, self.max_nodes).graph
            labels = {n: graph.label(n, g) for n in g.nodes}
            spec, order = lineage_spec(g, labels, node_layers(g), self.selected)
            if self._stale("draw", generation):
                return
            self.figure, self.drawn_nodes = spec, order
            if self.chart is None:
                self.chart = figure_widget(spec, scroll_zoom=True)  # wheel zooms, drag pans
                self.chart.data[1].on_click(self._clicked)
                self.drawing.children = (self.chart,)
            else:
                update_figure(self.chart, spec)
                self.chart.data[1].on_click(self._clicked)
            n = view.graph.number_of_nodes()
            cut = f" (the {self.max_nodes} nearest drawn)" if n > self.max_nodes else ""
            self.drawing_note.value = note_html(
                f"{n} nodes upstream and downstream of {graph.label(self.focus)}{cut}, data "
                "flowing left to right; the selected node is ringed. Click a node to select "
                "it, hover for its id, drag to pan, zoom with the toolbar."
            )
            self.drawing.layout.display = "flex"

        self.worker.submit(job)

    def _clicked(self, _trace: Any, points: Any, _state: Any) -> None:
        """A click on a node of the chart selects it (its details show)."""
        for index in getattr(points, "point_inds", []) or []:
            if 0 <= index < len(self.drawn_nodes):
                self._set("selected", self.drawn_nodes[index])
                return

    # --- static fallback and lifecycle ----------------------------------------------------------
    def summary_html(self) -> str:
        from nbmlops.widgets._common import batch_kernel
        from nbmlops.widgets.html import error_html

        self.worker.wait(60 if batch_kernel() else 1)  # the drawing, when it is quick
        parts = ['<div class="nbmlops-panel nbmlops-lineage"><div><b>nbmlops lineage</b>']
        if self.graph is not None and self.focus in self.graph.graph:
            parts.append(f" of {self.graph.label(self.focus)}")
        parts.append("</div>")
        if self.error:
            parts.append(error_html(self.error))
        if self.graph is not None and self.view is not None:
            parts.append(
                "<pre>"
                + _escape(self.graph.to_text(LineageView(self.focus, self.view.graph)))
                + "</pre>"
            )
        parts.append("</div>")
        return "".join(parts)

    def close(self) -> None:
        self._closed = True
        self.worker.close()
        for child in (self.header, self.middle):
            for grand in child.children:
                for w in getattr(grand, "children", ()):
                    w.close()
                grand.close()
            child.close()
        for w in (self.error_box, self.drawing_note, self.drawing):
            w.close()
        super().close()


def _nearest(view: LineageView, max_nodes: int) -> LineageView:
    """The ``max_nodes`` nodes nearest the focus, found with one breadth-first search
    (LineageGraph.draw's own cut measures each node's distance separately: seconds at 200+)."""
    import networkx as nx

    g = view.graph
    if g.number_of_nodes() <= max_nodes:
        return view
    distance = nx.single_source_shortest_path_length(g.to_undirected(as_view=True), view.focus)
    keep = sorted(g.nodes, key=lambda n: (distance.get(n, len(g)), n))[:max_nodes]
    return LineageView(view.focus, g.subgraph(keep).copy())


def _escape(text: str) -> str:
    from html import escape

    return escape(text)


def _user_namespace() -> dict[str, Any]:
    import sys

    ipython = sys.modules.get("IPython")
    shell = ipython.get_ipython() if ipython is not None else None
    return getattr(shell, "user_ns", None) or {}
