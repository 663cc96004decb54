"""The experiments panel: the runs of an experiment as a filterable, sortable, paginated table
(columns chosen, grouped, exported, notes and tags edited: :mod:`nbmlops.widgets.runs_tools`);
runs selected in its check column compared side by side, as metric curves and as parallel
coordinates.

State lives in traits (``text``, ``status``, ``sort_by``, ``ascending``, ``page``, ``selected``,
``curve_metric``, ``experiment``, ``error``, ``columns``, ``group_by``, ``collapsed``); every computation is a call into
:mod:`nbmlops.core.experiments`. Reading the store and drawing run on the panel's worker thread,
so a 1,000-run experiment shows progress instead of freezing the notebook. The panel refreshes
itself (debounced) when a ``%%track`` cell's run reaches MLflow.
"""

from __future__ import annotations

import threading
import time
from html import escape
from typing import Any

import ipywidgets as widgets
from traitlets import Bool, Float, Int, Tuple, Unicode, observe

from nbmlops.api import experiments as core
from nbmlops.api import run_edits
from nbmlops.api.tracking import RunSummary, get_tracker
from nbmlops.config import Settings
from nbmlops.widgets import curves
from nbmlops.widgets._common import PanelMixin, Worker, current_notebook, log, style_widget
from nbmlops.widgets.compare import CODE_HINT, FIGURES_HINT, draw_figures_and_code
from nbmlops.widgets.filters import unknown_fields
from nbmlops.widgets.html import TABS_CLASS, compare_html, details_html, note_html, runs_table_html
from nbmlops.widgets.live import listen_for_runs, stop_listening
from nbmlops.widgets.parallel import ParallelView
from nbmlops.widgets.runs_table import grouped_html, shown_frame
from nbmlops.widgets.runs_tools import REMEMBERED, RunsTools, with_tags

ALL = "ALL"
COMPARE_HINT = "Select runs with the table's check column to compare them side by side."


class ExperimentsPanel(PanelMixin, widgets.VBox):
    """Runs of one experiment: filter, sort, page, select, compare, plot."""

    experiment = Unicode(None, allow_none=True, help="Experiment shown; None: the default one")
    text = Unicode(
        "", help="Filter: substrings of name, run id or param=value; or acc>0.9, lr<=0.01"
    )
    status = Unicode(ALL, help="Show only runs with this status; ALL for every run")
    sort_by = Unicode("start", help="Column the table is sorted by (full or short name)")
    ascending = Bool(False, help="Sort direction")
    page = Int(0, help="Page of the table shown (0-based)")
    page_size = Int(50, help="Rows per page")
    selected = Tuple(help="Run ids selected for comparison")
    curve_metric = Unicode("", help="Metric whose steps are plotted for the selected runs")
    curve_x = Unicode("step", help="The curves' x axis: step, time or relative (seconds)")
    smoothing = Float(0.0, min=0.0, max=0.99, help="Exponential smoothing of the curves")
    error = Unicode("", help="The last error, shown in the red box; '' when all is well")
    opened = Unicode("", help="The run whose details show under the table ('' for none)")
    loading = Bool(False, help="True while runs are being read from the store")
    columns = Tuple(
        default_value=None,
        allow_none=True,
        help="Params, metrics and tags (full names) the table shows; None: every param and metric",
    )
    group_by = Unicode("", help="Param or tag (full name) the table groups runs by; '' for none")
    collapsed = Tuple(help="Keys of the groups shown folded")
    parallel_metric = Unicode("", help="Metric (full name) on the parallel coordinates' last axis")
    brushed = Tuple(
        default_value=None,
        allow_none=True,
        help="Runs inside the parallel coordinates' brushed ranges (the table shows only them);"
        " None: no brush",
    )

    def __init__(
        self,
        experiment: str | None = None,
        *,
        settings: Settings | None = None,
        page_size: int = 50,
        max_runs: int = 5000,
        refresh_debounce: float = 0.3,
        autoload: bool = True,
    ):
        self.settings = settings or get_tracker().settings
        self.max_runs = max_runs
        self.refresh_debounce = refresh_debounce
        self.runs = core.empty_runs()
        self.view = self.runs
        self.curve_figure: Any = None  # the Plotly spec (dict) of the curves shown
        self.curve_chart: Any = None  # its FigureWidget
        self._metric_by_user = False
        self.load_seconds: float | None = None
        self._lock = threading.RLock()
        self._quiet = threading.local()
        self._generation: dict[str, int] = {}
        self._refresh_due = 0.0
        self._refresh_pending = False
        self._refresh_full = False
        self._closed = False
        self._loaded = threading.Event()
        self.worker = Worker(self.show_error)
        self._build_widgets()
        super().__init__(
            children=[
                style_widget(),
                self.header,
                self.error_box,
                self.controls,
                self.tools.box,
                self.table,
                self.pager,
                self.run_box,
                self.tools.editor,
                self.lower,
            ],
            layout=widgets.Layout(width="100%"),
        )
        with self._quietly():
            self.experiment = experiment
            self.page_size = page_size
        listen_for_runs(self)
        if autoload:
            self.reload()

    # --- widgets ------------------------------------------------------------------------------
    def _build_widgets(self) -> None:
        w = widgets
        self.experiment_menu = w.Dropdown(
            description="Experiment", options=[], layout=w.Layout(width="320px")
        )
        self.refresh_button = w.Button(
            description="Refresh", icon="refresh", layout=w.Layout(width="100px")
        )
        self.status_label = w.HTML("")
        self.progress = w.IntProgress(
            value=0, min=0, max=1, bar_style="info", layout=w.Layout(width="180px", display="none")
        )
        self.header = w.HBox(
            [self.experiment_menu, self.refresh_button, self.progress, self.status_label],
            layout=w.Layout(align_items="center", flex_flow="row wrap"),
        )
        self.error_box = w.HTML("", layout=w.Layout(display="none"))
        self.filter_box = w.Text(
            placeholder="filter: name, id, lr=0.1, acc>0.9 …",
            continuous_update=True,
            layout=w.Layout(width="320px"),
        )
        self.status_menu = w.Dropdown(
            options=[ALL, *core.STATUSES], value=ALL, layout=w.Layout(width="120px")
        )
        self.sort_menu = w.Dropdown(
            description="Sort by", options=[("start", "start")], layout=w.Layout(width="260px")
        )
        self.order_button = w.ToggleButton(
            value=True, description="descending", icon="sort-amount-desc", tooltip="sort order"
        )
        self.controls = w.HBox(
            [self.filter_box, self.status_menu, self.sort_menu, self.order_button],
            layout=w.Layout(flex_flow="row wrap"),
        )
        try:
            from nbmlops.widgets.runs_table import RunsTable

            self.table: widgets.DOMWidget = RunsTable(
                self._table_event, layout=w.Layout(width="100%")
            )
        except ImportError:  # without anywidget (the charts extra) the table only shows
            self.table = w.HTML("", layout=w.Layout(width="100%"))
        self.run_box = w.HTML("")
        self.prev_button = w.Button(description="◀", layout=w.Layout(width="40px"))
        self.next_button = w.Button(description="▶", layout=w.Layout(width="40px"))
        self.page_label = w.Label("")
        self.clear_button = w.Button(
            description="Clear selection", tooltip="unselect every run for compare"
        )
        self.pager = w.HBox(
            [self.prev_button, self.page_label, self.next_button, self.clear_button],
            layout=w.Layout(align_items="center"),
        )
        self.tools = RunsTools(self)
        self.compare = w.HTML(note_html(COMPARE_HINT))
        self.parallel = ParallelView(self)
        self.figures_view = w.HTML(note_html(FIGURES_HINT))
        self.code_view = w.HTML(note_html(CODE_HINT))
        self.parallel_image = w.Image(
            format="png", layout=w.Layout(display="none", max_width="100%")
        )
        self.details = w.Tab(
            children=[
                w.VBox([self.compare], layout=w.Layout(overflow="auto")),
                curves.build(self),
                self.parallel.view,
                w.VBox([self.figures_view], layout=w.Layout(overflow="auto")),
                w.VBox([self.code_view], layout=w.Layout(overflow="auto")),
            ],
            titles=("Compare", "Curves", "Parallel", "Figures", "Code"),
            layout=w.Layout(flex="1 1 auto", min_width="0"),
        )
        self.details.add_class(TABS_CLASS)
        self.lower = w.HBox([self.details], layout=w.Layout(width="100%"))

        # control widgets -> panel traits (the traits are the state; the widgets a view of it)
        self.filter_box.observe(lambda c: self._set("text", c["new"]), "value")
        self.status_menu.observe(lambda c: self._set("status", c["new"] or ALL), "value")
        self.sort_menu.observe(lambda c: self._set("sort_by", c["new"] or "start"), "value")
        self.order_button.observe(lambda c: self._set("ascending", not c["new"]), "value")
        self.experiment_menu.observe(lambda c: self._set("experiment", c["new"]), "value")
        self.metric_menu.observe(self._metric_picked, "value")
        self.x_menu.observe(lambda c: self._set("curve_x", c["new"] or "step"), "value")
        self.smooth_slider.observe(lambda c: self._set("smoothing", c["new"]), "value")
        self.refresh_button.on_click(lambda _b: self._guard(self.reload))
        self.prev_button.on_click(lambda _b: self._set("page", self.page - 1))
        self.next_button.on_click(lambda _b: self._set("page", self.page + 1))
        self.clear_button.on_click(lambda _b: self._set("selected", ()))

    # --- loading ------------------------------------------------------------------------------
    def reload(self) -> None:
        """Read the runs again (on the worker thread); the table keeps its filter, sort and
        selection. A failure shows in the error box and leaves the table as it was."""
        generation = self._bump("runs")
        self.worker.submit(lambda: self._load(generation))

    def _load(self, generation: int) -> None:
        settings = self.settings
        started = time.perf_counter()
        self.loading = True
        listen_for_runs(self)  # again: %reload_ext makes a new tracker
        try:
            names = core.experiments(settings)
            name = self.experiment or core.default_experiment(settings, current_notebook())
            with self._lock, self._quietly():
                self.experiment_menu.options = names
                self.experiment_menu.value = name if name in names else None
            if name is None:
                runs = core.empty_runs()
            else:
                self._progress(0, False, name)
                runs = core.list_runs(
                    settings,
                    name,
                    self.max_runs,
                    progress=lambda n, done: self._progress(n, done, name),
                )
            if self._stale("runs", generation):
                return
            if not runs.empty:  # notes and user tags, as columns the picker offers
                runs = with_tags(runs, run_edits.run_tags(settings, list(runs["run_id"])))
            if self._stale("runs", generation):
                return
            with self._lock:
                keep = set(runs["run_id"])
                with self._quietly():
                    self.experiment = name
                    self.selected = tuple(r for r in self.selected if r in keep)
                self.runs = runs
                self.load_seconds = time.perf_counter() - started
                self._update_menus()
                self._apply(reset_page=False)
                self._draw_selection()
            self.show_error(None)
            self.status_label.value = self._status_text(name)
        except Exception as err:
            log.debug("loading runs failed", exc_info=True)
            self.show_error(err)
            self.status_label.value = ""
        finally:
            self.loading = False
            self.progress.layout.display = "none"
            self._loaded.set()

    def _progress(self, count: int, done: bool, name: str) -> None:
        self.progress.layout.display = "none" if done else "flex"
        self.progress.max = max(count + core.PAGE, 1)
        self.progress.value = count
        if not done:
            self.status_label.value = f"Loading runs of <b>{escape(name)}</b>… {count:,}"

    def _status_text(self, name: str | None) -> str:
        if name is None:
            return "No experiments yet: run a <code>%%track</code> cell and they appear here."
        took = f" in {self.load_seconds:.2f} s" if self.load_seconds is not None else ""
        capped = f" (the newest {self.max_runs:,})" if len(self.runs) >= self.max_runs else ""
        return (
            f"{len(self.runs):,} runs{capped} in <b>{escape(name)}</b>, loaded{took} at "
            f"{time.strftime('%H:%M:%S')}"
        )

    def _update_menus(self) -> None:
        runs = self.runs
        sortable = ["start", "name", "status", "duration", "user"]
        options = [(c, c) for c in sortable]
        options += [(f"param {core.short(c)}", c) for c in core.param_columns(runs)]
        options += [(f"metric {core.short(c)}", c) for c in core.metric_columns(runs)]
        sort_col = core.resolve_column(runs, self.sort_by) or "start"
        metrics = [core.short(c) for c in core.metric_columns(runs)]
        with self._quietly():
            self.sort_menu.options = options
            self.sort_menu.value = sort_col if sort_col in dict(options).values() else "start"
            self.metric_menu.options = metrics
            if self.curve_metric not in metrics:
                self.curve_metric = metrics[0] if metrics else ""
            self.metric_menu.value = self.curve_metric or None
        self.tools.update_menus()
        self.parallel.update_menus()

    # --- the table ----------------------------------------------------------------------------
    def _apply(self, reset_page: bool = True) -> None:
        """Filter and sort the runs (fast: pandas on at most a few thousand rows), then render."""
        with self._lock:
            self.show_error(unknown_fields(self.runs, self.text))
            view = core.filter_runs(self.runs, self.text, self.status)
            if self.brushed is not None:
                view = view[view["run_id"].isin(self.brushed)]
            column = core.resolve_column(view, self.sort_by)
            if column is not None:
                view = core.sort_runs(view, column, self.ascending)
            self.view = view
            if reset_page:
                with self._quietly():
                    self.page = 0
            self._render_table()

    def _render_table(self) -> None:
        page, number, pages = core.page_of(self.view, self.page, self.page_size)
        if number != self.page:
            with self._quietly():
                self.page = number
        sort_col = core.resolve_column(self.runs, self.sort_by) or ""
        total, shown = len(self.runs), len(self.view)
        caption = (f"{shown:,} of {total:,} runs" if shown != total else f"{total:,} runs") + (
            f" in '{self.experiment}'" if self.experiment else ""
        )
        if self.brushed is not None:
            caption += " (inside the parallel coordinates' brushed ranges)"
        if self.runs.empty:
            self.table.value = note_html(
                "No runs to show yet." if self.experiment else "No experiments in this store yet."
            )
        elif self.group_by in self.view.columns:
            sorted_metric = sort_col if sort_col.startswith("metrics.") else None
            metrics = [c for c in self.tools.shown_columns() if c.startswith("metrics.")]
            caption += f", grouped by {core.short(self.group_by)}"
            self.table.value = f'<div style="padding:2px 0">{escape(caption)}</div>' + grouped_html(
                self.view,
                by=self.group_by,
                metric=sorted_metric or (metrics[0] if metrics else None),
                collapsed=self.collapsed,
                columns=self.columns,
                limit=self.page_size,
                sort_by=sort_col,
                ascending=self.ascending,
                selected=set(self.selected),
            )
        else:
            self.table.value = runs_table_html(
                shown_frame(page, self.columns),
                sort_by=sort_col,
                ascending=self.ascending,
                selected=set(self.selected),
                caption=caption,
            )
        first = number * self.page_size + 1 if shown else 0
        last = min(shown, (number + 1) * self.page_size)
        self.page_label.value = (
            f"rows {first:,}-{last:,} of {shown:,} · page {number + 1} of {pages}"
        )
        self.prev_button.disabled = number == 0
        self.next_button.disabled = number >= pages - 1

    @observe("brushed")
    def _on_brushed(self, change: dict[str, Any]) -> None:
        if not self._is_quiet:
            self._guard(self._apply)

    @observe("parallel_metric")
    def _on_parallel_metric(self, change: dict[str, Any]) -> None:
        with self._quietly():
            if change["new"] in [v for _l, v in self.parallel.metric_menu.options]:
                self.parallel.metric_menu.value = change["new"]
        if not self._is_quiet:
            self._guard(self.parallel.draw)

    @observe("columns", "group_by", "collapsed")
    def _on_layout(self, change: dict[str, Any]) -> None:
        if change["name"] == "columns" and not self._is_quiet:
            key = self.tools.key()
            if change["new"] is None:
                REMEMBERED.pop(key, None)
            else:
                REMEMBERED[key] = tuple(change["new"])
        if change["name"] == "group_by":
            self.tools.sync_group_menu()
        if not self._is_quiet:
            self._guard(self._render_table)

    def tags_changed(self, run_id: str, tags: dict[str, str]) -> None:
        """A run's note and tags were saved: the table's tag columns follow."""
        with self._lock:
            mine: dict[str, dict[str, str]] = {r: {} for r in self.runs["run_id"]}
            for col in (c for c in self.runs.columns if c.startswith("tags.")):
                for r, v in zip(self.runs["run_id"], self.runs[col], strict=True):
                    if isinstance(v, str):
                        mine[r][col[5:]] = v
            mine[run_id] = dict(tags)
            self.runs = with_tags(self.runs, mine)
            self._update_menus()
            self._apply(reset_page=False)

    def export_csv(self, path: str = "") -> Any:
        """Write the table as shown (every page the filter keeps, the chosen columns) to a
        CSV file under the project; returns its path."""
        return self.tools.export(path)

    @observe("text", "status")
    def _on_filter(self, change: dict[str, Any]) -> None:
        with self._quietly():
            self.filter_box.value = self.text
            self.status_menu.value = (self.status or ALL).upper()
        if not self._is_quiet:
            self._guard(self._apply)

    @observe("sort_by", "ascending")
    def _on_sort(self, change: dict[str, Any]) -> None:
        with self._quietly():
            column = core.resolve_column(self.runs, self.sort_by)
            if column is not None and column in _values(self.sort_menu):
                self.sort_menu.value = column
            self.order_button.value = not self.ascending
            self.order_button.description = "ascending" if self.ascending else "descending"
            self.order_button.icon = "sort-amount-asc" if self.ascending else "sort-amount-desc"
        if not self._is_quiet:
            self._guard(self._apply)

    @observe("page", "page_size")
    def _on_page(self, change: dict[str, Any]) -> None:
        if not self._is_quiet:
            self._guard(self._render_table)

    @observe("experiment")
    def _on_experiment(self, change: dict[str, Any]) -> None:
        if not self._is_quiet and change["new"] != change["old"]:
            with self._quietly():
                self.selected = ()
            self.reload()

    # --- selection: compare, curves, parallel coordinates ------------------------------------
    @observe("selected")
    def _on_selected(self, change: dict[str, Any]) -> None:
        if self._is_quiet:
            return
        if self.brushed is not None:  # a brush is over the lines of the runs selected before
            with self._quietly():
                self.brushed = None  # type: ignore[assignment]  # traitlets: allow_none
            self._guard(self._apply, False)
        self._guard(self._draw_selection)

    def _draw_selection(self) -> None:
        with self._lock:
            self._render_table()
            self.compare.value = (
                compare_html(core.compare_runs(self.runs, list(self.selected)))
                if self.selected
                else note_html(COMPARE_HINT)
            )
        curves.draw(self)
        self.parallel.draw()
        draw_figures_and_code(self)

    def _table_event(self, kind: str, value: str) -> None:
        """A click in the runs table: sort by a header, select a run for compare, open one."""
        if kind == "sort":
            column = core.resolve_column(self.runs, value) or value
            if column == core.resolve_column(self.runs, self.sort_by):
                self._set("ascending", not self.ascending)
            else:
                self._set("sort_by", column)
        elif kind == "toggle":
            chosen = list(self.selected)
            self._set(
                "selected",
                tuple(r for r in chosen if r != value) if value in chosen else (*chosen, value),
            )
        elif kind == "open":
            self._set("opened", value)
        elif kind == "group":
            folded = list(self.collapsed)
            self._set(
                "collapsed",
                tuple(k for k in folded if k != value) if value in folded else (*folded, value),
            )

    @observe("opened")
    def _on_opened(self, change: dict[str, Any]) -> None:
        run_id = change["new"]
        if not run_id:
            self.run_box.value = ""
            self.tools.open_run("")
            return
        labels = core.run_labels(self.runs, [run_id])
        self.run_box.value = note_html(f"Opening {labels.get(run_id, run_id)}…")

        def job() -> None:
            run = core.run_details(self.settings, run_id)
            if self.opened != run_id:
                return
            fields = [
                ("run id", run["run_id"]),
                ("status", run["status"]),
                ("experiment", run["experiment"]),
                ("user", run["user"]),
                ("params", run["params"]),
                ("metrics", run["metrics"]),
                ("git commit", run["git_commit"]),
            ]
            self.run_box.value = details_html(f"run {run['name']}", fields)
            self.tools.open_run(run_id)

        self.worker.submit(job)

    def _metric_picked(self, change: dict[str, Any]) -> None:
        if not self._is_quiet:
            self._metric_by_user = True
        self._set("curve_metric", change["new"] or "")

    @observe("curve_metric", "curve_x", "smoothing")
    def _on_metric(self, change: dict[str, Any]) -> None:
        with self._quietly():
            if self.curve_metric in self.metric_menu.options:
                self.metric_menu.value = self.curve_metric
            self.x_menu.value = self.curve_x
            self.smooth_slider.value = self.smoothing
        if not self._is_quiet:
            if change["name"] == "curve_metric":
                self._metric_by_user = True
            self._guard(curves.draw, self)

    # --- refresh when a tracked run reaches MLflow --------------------------------------------
    def _run_shipped(self, summary: RunSummary) -> None:
        """Called on the shipper thread; only schedules work (debounced)."""
        if self._closed:
            return
        if self.experiment and summary.experiment != self.experiment:
            self._schedule_refresh(menus_only=True)
        else:
            self._schedule_refresh()

    def _schedule_refresh(self, menus_only: bool = False) -> None:
        with self._lock:
            self._refresh_due = time.monotonic() + self.refresh_debounce
            self._refresh_full = self._refresh_full or not menus_only
            if self._refresh_pending:
                return
            self._refresh_pending = True

        def job() -> None:
            while True:
                with self._lock:
                    left = self._refresh_due - time.monotonic()
                    if left <= 0:
                        self._refresh_pending = False
                        full, self._refresh_full = self._refresh_full, False
                        break
                time.sleep(left)
            if self._closed:
                return
            if full:
                self._load(self._bump("runs"))
            else:
                names = core.experiments(self.settings)
                with self._quietly():
                    current = self.experiment_menu.value
                    self.experiment_menu.options = names
                    self.experiment_menu.value = current if current in names else None

        self.worker.submit(job)

    # --- static fallback and lifecycle ----------------------------------------------------------
    def summary_html(self) -> str:
        """The runs as saved in the notebook: what nbconvert and a kernel-less viewer show."""
        from nbmlops.widgets.html import error_html

        parts = [
            '<div class="nbmlops-panel nbmlops-experiments">',
            f"<div><b>nbmlops experiments</b> · {self._status_text(self.experiment)}</div>",
        ]
        if self.error:
            parts.append(error_html(self.error))
        if not self._loaded.is_set():
            parts.append(note_html("Runs were still loading when this output was saved."))
        elif not self.runs.empty:
            page, _n, _p = core.page_of(self.view, self.page, self.page_size)
            parts.append(
                runs_table_html(
                    page,
                    sort_by=core.resolve_column(self.runs, self.sort_by) or "",
                    ascending=self.ascending,
                    selected=set(self.selected),
                    caption=f"{len(self.view):,} of {len(self.runs):,} runs"
                    + (f" (filter: {self.text})" if self.text else ""),
                )
            )
            if self.selected:
                parts.append(compare_html(core.compare_runs(self.runs, list(self.selected))))
        parts.append("</div>")
        return "".join(parts)

    def close(self) -> None:
        self._closed = True
        stop_listening(self)
        self.worker.close()
        for child in (self.header, self.controls, self.pager, self.lower):
            _close_tree(child)
        self.error_box.close()
        self.tools.close()
        self.parallel.close()
        self.table.close()
        super().close()


def _values(menu: widgets.Widget) -> list[Any]:
    return [o[1] if isinstance(o, tuple) else o for o in menu.options]


def _close_tree(widget: widgets.Widget) -> None:
    for child in getattr(widget, "children", ()):
        _close_tree(child)
    widget.close()
