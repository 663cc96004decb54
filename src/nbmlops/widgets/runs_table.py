"""The runs table as a widget that answers clicks: a row opens its run, the check column
selects it for compare, a header sorts by its column; rows are focusable (Enter opens, Space
selects), a group's header folds or unfolds it. The table's HTML is :func:`nbmlops.widgets.html.runs_table_html`'s; the few lines of
JavaScript below only report clicks (hand-written: no table library is worth a dependency for
three listeners), and ship inside the package, so nothing loads from the internet."""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from html import escape
from typing import TYPE_CHECKING, Any

import anywidget
from traitlets import Unicode

from nbmlops.widgets.html import BORDER, FONT, HEAD_BG, SELECTED_EDGE, fmt, runs_table_html

if TYPE_CHECKING:
    import pandas as pd

ESM = """
function render({ model, el }) {
  let count = 0;
  const send = (kind, value) => {
    count += 1;
    model.set("event", `${kind}:${value}:${count}`);
    model.save_changes();
  };
  const draw = () => { el.innerHTML = model.get("value"); };
  el.addEventListener("click", (e) => {
    const group = e.target.closest("[data-group]");
    if (group) { send("group", group.dataset.group); return; }
    const th = e.target.closest("th[data-col]");
    if (th) { send("sort", th.dataset.col); return; }
    const row = e.target.closest("tr.nbmlops-run");
    if (!row) return;
    send(e.target.closest("td.nbmlops-check") ? "toggle" : "open", row.dataset.runId);
  });
  el.addEventListener("keydown", (e) => {
    const group = e.target.closest("[data-group]");
    if (group && (e.key === "Enter" || e.key === " ")) {
      e.preventDefault(); send("group", group.dataset.group); return;
    }
    const row = e.target.closest("tr.nbmlops-run");
    if (!row) return;
    if (e.key === "Enter") { e.preventDefault(); send("open", row.dataset.runId); }
    if (e.key === " ") { e.preventDefault(); send("toggle", row.dataset.runId); }
  });
  model.on("change:value", draw);
  draw();
}
export default { render };
"""


class RunsTable(anywidget.AnyWidget):
    """HTML of the runs table (``value``) that reports clicks to ``on_event(kind, run_or_column)``
    with kind ``open``, ``toggle``, ``sort`` or ``group`` (a group's key)."""

    _esm = ESM
    value = Unicode("").tag(sync=True)
    event = Unicode("", help="The last click, KIND:VALUE:COUNT (set by the front end)").tag(
        sync=True
    )

    def __init__(self, on_event: Callable[[str, str], Any], **kwargs: Any):
        super().__init__(**kwargs)
        self._on_event = on_event
        self.observe(self._event, "event")

    def _event(self, change: dict[str, Any]) -> None:
        kind, _, rest = str(change["new"]).partition(":")
        value, _, _count = rest.rpartition(":")
        if kind in ("open", "toggle", "sort", "group") and value:
            self._on_event(kind, value)

    def click(self, kind: str, value: str) -> None:
        """What a click in the browser does (for tests and scripts)."""
        self._on_event(kind, value)


# --- what the table shows: chosen columns, groups ---------------------------------------------
FIXED = ["run_id", "name", "status", "start", "end", "duration", "user"]
NONE = "(none)"
# metrics where lower is better; any other metric's best is its highest value
_LOWER_IS_BETTER = re.compile(r"loss|err|mse|mae|rmse|latency|time|perplexity", re.I)


def optional_columns(runs: pd.DataFrame) -> list[str]:
    """The columns a user may show or hide: params, metrics and tags (``tags.note`` is the
    run's note)."""
    return [c for c in runs.columns if c.startswith(("params.", "metrics.", "tags."))]


def default_columns(runs: pd.DataFrame) -> tuple[str, ...]:
    """Shown until a user chooses: every param and metric, no tags."""
    return tuple(c for c in runs.columns if c.startswith(("params.", "metrics.")))


def shown_frame(frame: pd.DataFrame, columns: tuple[str, ...] | None) -> pd.DataFrame:
    """``frame`` with the fixed columns and the chosen ones (in the frame's order);
    ``columns`` None: the defaults."""
    chosen = set(default_columns(frame) if columns is None else columns)
    return frame[[c for c in frame.columns if c in FIXED or c in chosen]]


def lower_is_better(metric: str) -> bool:
    return bool(_LOWER_IS_BETTER.search(metric))


def group_key(value: Any) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return NONE
    return fmt(value)


def groups_of(
    view: pd.DataFrame, by: str, metric: str | None
) -> list[tuple[str, pd.DataFrame, float | None]]:
    """The rows of ``view`` grouped by the values of column ``by``, in the order of their
    first row: (key, rows, the group's best value of ``metric`` or None)."""
    keys = view[by].map(group_key)
    out = []
    for key in dict.fromkeys(keys):
        rows = view[keys == key]
        best = None
        if metric and metric in rows.columns:
            values = rows[metric].dropna()
            if len(values):
                best = float(values.min() if lower_is_better(metric) else values.max())
        out.append((key, rows, best))
    return out


def grouped_html(
    view: pd.DataFrame,
    *,
    by: str,
    metric: str | None,
    collapsed: tuple[str, ...] | set[str],
    columns: tuple[str, ...] | None,
    limit: int = 50,
    **table: Any,
) -> str:
    """The runs grouped by ``by``: per group a header (click or Enter folds it) with its run
    count and best ``metric``, then its runs (at most ``limit``) unless it is folded."""
    from nbmlops.api.experiments import short

    parts = []
    folded = set(collapsed)
    for key, rows, best in groups_of(view, by, metric):
        is_open = key not in folded
        score = (
            f" · best {escape(short(metric))} {escape(fmt(best, metric))}"
            if metric and best is not None
            else ""
        )
        parts.append(
            f'<div class="nbmlops-group" data-group="{escape(key)}" role="button" tabindex="0"'
            f' aria-expanded="{str(is_open).lower()}" style="{FONT};cursor:pointer;'
            f"padding:3px 6px;margin-top:6px;background:{HEAD_BG};border-left:4px solid "
            f'{SELECTED_EDGE};border-bottom:1px solid {BORDER}">{"▼" if is_open else "▶"} '
            f"<b>{escape(short(by))} = {escape(key)}</b> · {len(rows)} run(s){score}</div>"
        )
        if is_open:
            more = len(rows) - limit
            parts.append(runs_table_html(shown_frame(rows.head(limit), columns), **table))
            if more > 0:
                parts.append(f'<div style="{FONT}">… {more} more run(s) in this group</div>')
    return "".join(parts)
