"""The Experiments panel's Curves tab: its controls, and the selected runs' metric curves drawn
on the panel's worker thread (a Plotly ``FigureWidget``, kept and updated in place)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import ipywidgets as widgets

from nbmlops.api import experiments as core
from nbmlops.widgets.charts import curves_spec, default_metric, figure_widget, update_figure
from nbmlops.widgets.html import note_html

if TYPE_CHECKING:
    from nbmlops.widgets.experiments import ExperimentsPanel

HINT = "Select runs to plot their metric curves."


def build(panel: ExperimentsPanel) -> widgets.VBox:
    """The tab's widgets, set on the panel (``metric_menu``, ``x_menu``, ``smooth_slider``,
    ``curve_note``, ``curve_box``); returns the tab's box."""
    w = widgets
    panel.metric_menu = w.Dropdown(description="Metric", options=[], layout=w.Layout(width="300px"))
    panel.curve_note = w.HTML(note_html(HINT))
    panel.x_menu = w.ToggleButtons(
        options=[("step", "step"), ("time", "time"), ("relative", "relative")],
        value="step",
        description="x",
        style={"button_width": "70px", "description_width": "20px"},
    )
    panel.smooth_slider = w.FloatSlider(
        value=0.0,
        min=0.0,
        max=0.95,
        step=0.05,
        description="smoothing",
        continuous_update=False,
        layout=w.Layout(width="260px"),
    )
    panel.curve_box = w.Box(layout=w.Layout(width="100%"))
    controls = w.HBox(
        [panel.metric_menu, panel.x_menu, panel.smooth_slider],
        layout=w.Layout(flex_flow="row wrap"),
    )
    return w.VBox([controls, panel.curve_note, panel.curve_box])


def draw(panel: ExperimentsPanel) -> None:
    """Plot the chosen metric (else the one with the most steps) of the selected runs."""
    generation = panel._bump("curves")
    run_ids = list(panel.selected)
    metrics = [core.short(c) for c in core.metric_columns(panel.runs)]
    if not run_ids or not metrics:
        panel.curve_note.value = note_html(HINT if metrics else "These runs log no metrics.")
        panel.curve_box.layout.display = "none"
        panel.curve_figure = None
        return
    labels = core.run_labels(panel.runs, run_ids)
    chosen = panel.curve_metric if panel._metric_by_user and panel.curve_metric else ""
    x, smoothing, settings = panel.curve_x, panel.smoothing, panel.settings
    panel.curve_note.value = note_html("Reading the metrics' history…")

    def job() -> None:
        if panel._stale("curves", generation):
            return
        if chosen:
            key, history = chosen, core.metric_history(settings, run_ids, chosen)
        else:  # open on the metric with the most steps, not on a single point
            histories = {k: core.metric_history(settings, run_ids, k) for k in metrics[:20]}
            key = default_metric(histories)
            history = histories[key]
            with panel._quietly():
                panel.curve_metric = key
                panel.metric_menu.value = key
        if panel._stale("curves", generation):
            return
        if history.empty:
            panel.curve_note.value = note_html(f"The selected runs have no values of {key}.")
            panel.curve_box.layout.display = "none"
            return
        spec = curves_spec(history, labels, key, x, smoothing)
        show(panel, spec)
        if panel._stale("curves", generation):
            return
        panel.curve_figure = spec
        steps = history.groupby("run_id")["step"].nunique().max()
        have = history["run_id"].nunique()
        which = f"{have} run(s)" if have == len(run_ids) else f"{have} of {len(run_ids)} runs"
        panel.curve_note.value = note_html(
            f"{key} for {which}, up to {steps} step(s) each: hover for values, drag to "
            "zoom, double-click to reset"
        )
        panel.curve_box.layout.display = "flex"

    panel.worker.submit(job)


def show(panel: ExperimentsPanel, spec: dict[str, Any]) -> None:
    if panel.curve_chart is None:
        panel.curve_chart = figure_widget(spec)
        panel.curve_box.children = (panel.curve_chart,)
    else:
        update_figure(panel.curve_chart, spec)
