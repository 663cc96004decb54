"""The Monitoring panel (and the Monitoring tab of ``%mlops``): drift per feature over time (a
heatmap of :func:`nbmlops.api.monitor.drift_over_time`), drift per feature, performance
(estimated and realized) over time, service health and the worst slices of one served model
version, from :func:`nbmlops.api.monitor_report.report` (nothing logged) and
:func:`nbmlops.api.monitor_performance.slices`. Without a model it shows the version the
gateway served last, and says how to start when nothing was served. Colours come from
JupyterLab's CSS variables, so the panel follows the light and dark themes."""

from __future__ import annotations

import io
import threading
from html import escape
from typing import TYPE_CHECKING, Any

from nbmlops.widgets._common import PanelMixin, Worker, widgets
from nbmlops.widgets.charts import CHART_CSS
from nbmlops.widgets.live import Poller
from nbmlops.widgets.monitor_charts import HEATMAP_CSS

if TYPE_CHECKING:
    import pandas as pd

    from nbmlops.api.monitor import DriftTimeline
    from nbmlops.api.monitor_report import MonitorReport
    from nbmlops.config import Settings

__all__ = ["MonitorPanel"]

_FONT = "font-family:var(--jp-ui-font-family);font-size:var(--jp-ui-font-size1)"
_TEXT = f"color:var(--jp-ui-font-color1);{_FONT}"
_TH = (
    "text-align:left;padding:2px 8px;color:var(--jp-ui-font-color1);"
    "background:var(--jp-layout-color2);border-bottom:1px solid var(--jp-border-color1)"
)
_TD = "padding:2px 8px;border-bottom:1px solid var(--jp-border-color2)"
_BAD = "background:var(--jp-error-color3);color:var(--jp-ui-font-color0)"


def _cell(v: Any) -> str:
    if v is None or (isinstance(v, float) and v != v):
        return "-"
    if isinstance(v, float):
        return f"{v:.4g}"
    if hasattr(v, "strftime"):
        return v.strftime("%Y-%m-%d %H:%M")
    if isinstance(v, (list, tuple)):
        return ", ".join(map(str, v[:5]))
    return str(v)


def table_html(frame: pd.DataFrame, columns: list[str], bad: str | None = None) -> str:
    """A themed table of ``columns``; rows where the boolean column ``bad`` is true marked."""
    if frame.empty:
        return f'<div style="{_TEXT}">nothing in this window</div>'
    cols = [c for c in columns if c in frame.columns]
    head = "".join(f'<th style="{_TH}">{escape(c)}</th>' for c in cols)
    rows = []
    for r in frame.to_dict("records"):
        style = f' style="{_BAD}"' if bad and bool(r.get(bad)) else ""
        cells = "".join(f'<td style="{_TD}">{escape(_cell(r[c]))}</td>' for c in cols)
        rows.append(f"<tr{style}>{cells}</tr>")
    return (
        f'<table style="border-collapse:collapse;{_TEXT}"><thead><tr>{head}</tr></thead>'
        f"<tbody>{''.join(rows)}</tbody></table>"
    )


def _png(fig: Any) -> bytes:
    if fig is None:
        return b""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=80)
    return buf.getvalue()


NOTHING_SERVED = (
    "Nothing to monitor yet: no model has served predictions in this project. Serve a "
    "registered model from the project folder with `nbmlops serve NAME@champion` and send it "
    "requests (POST /predict); this tab follows the prediction log and shows its traffic here."
)


class MonitorPanel(PanelMixin, widgets.VBox):
    """One model version's monitoring over the ``last`` span of the prediction log, per
    ``window``; Refresh reads the log again, and so does the panel itself every ``every``
    seconds while it is open (None: only on Refresh), or, with ``follow``, whenever a
    prediction is logged (polled with back-off). ``model`` None (or an empty model box): the
    version the gateway served last."""

    def __init__(
        self,
        model: str | None = None,
        version: int | None = None,
        *,
        last: str = "24h",
        window: str = "1h",
        every: float | None = None,
        follow: bool = False,
        settings: Settings | None = None,
        autoload: bool = True,
    ):
        self.settings = settings
        self.version = version
        self.report: MonitorReport | None = None
        self.timeline: DriftTimeline | None = None
        self.slices: pd.DataFrame | None = None
        self.empty = False  # nothing served: the panel shows how to start
        self.error = ""
        self.loads = 0  # finished loads, so a caller can tell a refresh happened
        self._quiet = threading.local()
        self._lock = threading.Lock()
        self._generation: dict[str, int] = {}
        self._loaded = threading.Event()
        self._closed = False
        self.worker = Worker(self._failed)
        w = widgets
        self.model_box = w.Text(
            value=model or "", description="model", placeholder="the last served",
            layout=w.Layout(width="18em"),
        )  # fmt: skip
        self.last_box = w.Text(value=last, description="last", layout=w.Layout(width="10em"))
        self.window_box = w.Text(value=window, description="window", layout=w.Layout(width="10em"))
        self.refresh_button = w.Button(description="Refresh", icon="refresh")
        self.refresh_button.on_click(lambda _b: self.refresh())
        self.status_box = w.HTML()
        self.error_box = w.HTML(layout=w.Layout(display="none"))
        self.drift_table, self.drift_plot = w.HTML(), w.Image(format="png")
        self.perf_table, self.perf_plot = w.HTML(), w.Image(format="png")
        self.health_table, self.health_plot = w.HTML(), w.Image(format="png")
        self.slices_table = w.HTML()
        self.timeline_box = w.HTML()
        self.heatmap = _heatmap_widget()
        # the FigureWidget's own .layout is Plotly's: a box shows and hides it
        self.heatmap_box = w.VBox(
            [w.HTML(CHART_CSS + HEATMAP_CSS), self.heatmap] if self.heatmap is not None else [],
            layout=w.Layout(width="100%"),
        )
        timeline_children: list[Any] = [self.timeline_box, self.heatmap_box]
        self.tabs = w.Tab(
            children=[
                w.VBox(timeline_children, layout=w.Layout(width="100%")),
                w.VBox([self.drift_table, self.drift_plot]),
                w.VBox([self.perf_plot, self.perf_table]),
                w.VBox([self.health_plot, self.health_table]),
                w.VBox([self.slices_table]),
            ],
            titles=["Drift over time", "Drift", "Performance", "Service health", "Worst slices"],
        )
        bar = w.HBox([self.model_box, self.last_box, self.window_box, self.refresh_button])
        super().__init__(
            children=[bar, self.error_box, self.status_box, self.tabs],
            layout=w.Layout(width="100%"),
        )
        self._stop = threading.Event()
        self.poller: Poller | None = None
        self._dirty = False  # the log changed while a load ran
        if follow:
            self.poller = Poller(
                self._fingerprint, self._log_changed, fast=2.0, slow=15.0,
                name="nbmlops-monitor-follow",
            )  # fmt: skip
            self.poller.start()
        if autoload:
            self.refresh()
        else:
            self._loaded.set()
        if every is not None:
            if every <= 0:
                from nbmlops.exceptions import UsageError

                raise UsageError(f"every must be a positive number of seconds, got {every!r}")
            threading.Thread(
                target=self._keep_fresh, args=(float(every),), daemon=True,
                name="nbmlops-monitor-refresh",
            ).start()  # fmt: skip

    def _keep_fresh(self, every: float) -> None:
        """Refresh every ``every`` seconds until closed, skipping a beat while a load runs."""
        while not self._stop.wait(every):
            if not self.worker.busy:
                self.refresh()

    def _log_changed(self) -> None:
        """New predictions: reload, or, while a load runs, once more after it (so steady
        traffic queues one load at a time, not one per poll)."""
        if self.worker.busy:
            self._dirty = True
        else:
            self.refresh()

    def _fingerprint(self) -> Any:
        from nbmlops.api.monitor import log_fingerprint

        return log_fingerprint(self.settings)

    def close(self) -> None:
        if self.poller is not None:
            self.poller.stop()
        self._stop.set()
        self._closed = True
        self.worker.close()
        super().close()

    def _failed(self, err: BaseException) -> None:
        self.show_error(err)
        self._loaded.set()

    def refresh(self) -> None:
        """Read the log again and redraw (in the background)."""
        generation = self._bump("load")
        if self.report is None:  # a shown report stays until the new one replaces it
            self.status_box.value = f'<div style="{_TEXT}">loading ...</div>'
        self.worker.submit(lambda: self._load(generation))

    def _target(self) -> tuple[str, int | None] | None:
        """(model, version) to show: the model box's, else the version served last (None:
        nothing served; the empty state is shown)."""
        from nbmlops.api.monitor import served_versions

        model = self.model_box.value.strip()
        if model:
            return model, self.version
        served = served_versions(self.settings)
        if not served:
            return None
        return served[0]["model"], served[0]["version"]

    def _load(self, generation: int) -> None:
        self._dirty = False
        try:
            self._load_target(generation)
        finally:
            if self._dirty and not self._closed:
                self._dirty = False
                self.refresh()

    def _load_target(self, generation: int) -> None:
        from nbmlops.api.monitor import drift_over_time
        from nbmlops.api.monitor_performance import slices
        from nbmlops.api.monitor_report import report
        from nbmlops.exceptions import UsageError

        target = self._target()
        if target is None:
            if not self._stale("load", generation):
                self._show_empty()
            return
        model, version = target
        last, window = self.last_box.value.strip(), self.window_box.value.strip()
        r = report(model, version, last=last, window=window, log=False, settings=self.settings)
        try:
            timeline = drift_over_time(
                model=r.model, version=r.version, last=last, window=window,
                settings=self.settings,
            )  # fmt: skip
            timeline_note = ""
        except UsageError as err:
            timeline, timeline_note = None, str(err)
        labelled = r.metrics.get("labelled", 0.0) > 0
        try:
            worst = slices(
                settings=self.settings, model=r.model, version=r.version,
                last=last, source="realized" if labelled else "estimated", limit=10,
            )  # fmt: skip
            worst_html = table_html(worst, ["slice", "n", "score", "overall", "gap", "metric"])
        except UsageError as err:
            worst, worst_html = None, f'<div style="{_TEXT}">{escape(str(err))}</div>'
        if self._stale("load", generation):
            return
        self._show_timeline(timeline, timeline_note)
        self._show(r, worst, worst_html)

    def _show_empty(self) -> None:
        self.empty = True
        self.report = self.timeline = self.slices = None
        self.tabs.layout.display = "none"
        self.show_error(None)
        self.status_box.value = (
            f'<div class="nbmlops-empty" style="{_TEXT}">{escape(NOTHING_SERVED)}</div>'
        )
        self.loads += 1
        self._loaded.set()

    def _show_timeline(self, timeline: DriftTimeline | None, note: str) -> None:
        from nbmlops.widgets.charts import update_figure
        from nbmlops.widgets.monitor_charts import drift_heatmap_spec

        self.timeline = timeline
        if timeline is None:
            self.timeline_box.value = f'<div style="{_TEXT}">{escape(note)}</div>'
            self.heatmap_box.layout.display = "none"
            return
        notes = "".join(f'<div style="{_TEXT}">{escape(n)}</div>' for n in timeline.notes)
        if self.heatmap is None:
            notes += f'<div style="{_TEXT}">{escape(_NO_CHARTS)}</div>'
        else:  # the figure first: once the summary shows, the heatmap matches it
            self.heatmap_box.layout.display = None
            update_figure(self.heatmap, drift_heatmap_spec(timeline))
        self.timeline_box.value = (
            f'<div class="nbmlops-timeline" style="{_TEXT}"><b>{escape(timeline.summary())}</b>'
            f"<br>against {escape(timeline.reference_label)}</div>{notes}"
        )

    def _show(self, r: MonitorReport, worst: pd.DataFrame | None, worst_html: str) -> None:
        perf_cols = ["window_start", "n", "labelled", "accuracy", "accuracy_estimated"]
        perf_cols += ["f1", "f1_estimated", "roc_auc", "roc_auc_estimated", "rmse", "mae"]
        health_cols = ["window_start", "requests", "error_rate", "errors_4xx"]
        health_cols += ["latency_p50_ms", "latency_p95_ms", "latency_p99_ms"]
        figures = r.figures
        drift_cols = ["feature", "kind", "test", "score", "threshold", "drifted", "psi"]
        self.drift_table.value = (
            f'<div style="{_TEXT}"><b>{escape(r.drift.summary())}</b></div>'
            + table_html(r.drift.features, drift_cols, bad="drifted")
        )
        self.drift_plot.value = _png(figures["drift"])
        self.perf_table.value = table_html(r.performance.table, perf_cols) + "".join(
            f'<div style="{_TEXT}">{escape(n)}</div>' for n in r.notes
        )
        self.perf_plot.value = _png(figures["performance"])
        self.health_table.value = table_html(r.health.table, health_cols)
        self.health_plot.value = _png(figures["latency"])
        self.slices_table.value = worst_html
        self.report, self.slices = r, worst
        self.empty = False
        self.tabs.layout.display = None
        self.show_error(None)
        self.status_box.value = f'<div style="{_TEXT}">{escape(r.summary())}</div>'
        self.loads += 1
        self._loaded.set()

    def summary_html(self) -> str:
        """The static HTML saved with the notebook: the summary and the drift table."""
        if self.empty:
            return self.status_box.value
        if self.report is None:
            return f'<div style="{_TEXT}">{escape(self.error or "not loaded")}</div>'
        return self.status_box.value + self.timeline_box.value + self.drift_table.value


_NO_CHARTS = "The heatmap needs the charts extra: pip install 'nbmlops[charts]'."


def _heatmap_widget() -> Any:
    """An empty FigureWidget for the heatmap, or None without plotly (the panel says so)."""
    from nbmlops.exceptions import MissingDependencyError
    from nbmlops.widgets.charts import figure_widget

    try:
        fig = figure_widget({"data": [], "layout": {"height": 60}})
    except MissingDependencyError:
        return None
    return fig
