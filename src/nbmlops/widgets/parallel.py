"""The Experiments panel's Parallel tab: an interactive Plotly parallel-coordinates plot of the
selected runs' params and a chosen metric. Dragging along an axis (brushing) narrows the runs
table to the runs whose lines pass every brushed range."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import ipywidgets as widgets

from nbmlops.api import experiments as core
from nbmlops.widgets.charts import brushed_runs, figure_widget, parallel_spec, update_figure
from nbmlops.widgets.html import note_html

if TYPE_CHECKING:
    from nbmlops.widgets.experiments import ExperimentsPanel

HINT = "Tick two or more runs to see their params and a metric as parallel coordinates."


class ParallelView:
    """Widgets and drawing of the Parallel tab; the state is the panel's ``parallel_metric``
    and ``brushed`` traits."""

    def __init__(self, panel: ExperimentsPanel):
        self.panel = panel
        w = widgets
        self.metric_menu = w.Dropdown(
            description="Metric", options=[], layout=w.Layout(width="300px")
        )
        self.note = w.HTML(note_html(HINT))
        self.box = w.Box(layout=w.Layout(width="100%", display="none"))
        self.view = w.VBox([self.metric_menu, self.note, self.box])
        self.chart: Any = None
        self.spec: dict[str, Any] | None = None
        self.run_ids: list[str] = []
        self.metric_menu.observe(lambda c: panel._set("parallel_metric", c["new"] or ""), "value")

    def update_menus(self) -> None:
        panel = self.panel
        metrics = core.metric_columns(panel.runs)
        with panel._quietly():
            self.metric_menu.options = [(core.short(m), m) for m in metrics]
            if panel.parallel_metric not in metrics:
                panel.parallel_metric = metrics[0] if metrics else ""
            self.metric_menu.value = panel.parallel_metric or None

    def draw(self) -> None:
        """Draw the selected runs (at least two) on the panel's worker thread."""
        panel = self.panel
        generation = panel._bump("parallel")
        run_ids = list(panel.selected)
        if len(run_ids) < 2:
            self.note.value = note_html(HINT)
            self.box.layout.display = "none"
            self.spec = None
            return
        runs, metric = panel.runs, panel.parallel_metric
        chosen = runs[runs["run_id"].isin(run_ids)]
        present = [m for m in core.metric_columns(runs) if chosen[m].notna().any()]
        if metric not in present and present:  # none of them logged it: one they all can show
            metric = max(present, key=lambda m: chosen[m].notna().sum())
            with panel._quietly():
                panel.parallel_metric = metric
                self.metric_menu.value = metric

        def job() -> None:
            if panel._stale("parallel", generation):
                return
            spec, order = parallel_spec(runs, run_ids, metric)
            if panel._stale("parallel", generation):
                return
            self.spec, self.run_ids = spec, order
            if self.chart is None:
                self.chart = figure_widget(spec)
                self.chart.data[0].on_change(self._brushed, "dimensions")
                self.box.children = (self.chart,)
            else:
                update_figure(self.chart, spec)
                self.chart.data[0].on_change(self._brushed, "dimensions")
            left = len(run_ids) - len(order)
            self.note.value = note_html(
                f"Params and {core.short(metric) or 'no metric'} of {len(order)} runs"
                + (f" ({left} without {core.short(metric)} left out)" if left else "")
                + ": drag along an axis to narrow the table to the runs inside the range"
            )
            self.box.layout.display = "flex"

        panel.worker.submit(job)

    def _brushed(self, trace: Any, dimensions: Any) -> None:
        """A brush in the browser changed an axis' ``constraintrange``."""
        dims = [
            {"values": list(d.values), "constraintrange": d.constraintrange} for d in dimensions
        ]
        self.panel._set("brushed", brushed_runs(dims, self.run_ids))

    def brush(self, axis: int, low: float, high: float) -> None:
        """What dragging along axis number ``axis`` in the browser does (for tests and
        scripts): the same restyle message Plotly sends."""
        if self.chart is None:
            raise ValueError("No parallel-coordinates plot is shown: tick two or more runs.")
        self.chart.plotly_restyle({f"dimensions[{axis}].constraintrange": [[low, high]]}, [0])

    def close(self) -> None:
        if self.chart is not None:
            self.chart.close()
        for w in (self.metric_menu, self.note, self.box, self.view):
            w.close()
