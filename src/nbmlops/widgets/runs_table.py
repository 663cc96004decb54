"""The runs table as a widget that answers clicks: a row opens its run, the check column
selects it for compare, a header sorts by its column; rows are focusable (Enter opens, Space
selects). The table's HTML is :func:`nbmlops.widgets.html.runs_table_html`'s; the few lines of
JavaScript below only report clicks (hand-written: no table library is worth a dependency for
three listeners), and ship inside the package, so nothing loads from the internet."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import anywidget
from traitlets import Unicode

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
    const th = e.target.closest("th[data-col]");
    if (th) { send("sort", th.dataset.col); return; }
    const row = e.target.closest("tr.nbmlops-run");
    if (!row) return;
    send(e.target.closest("td.nbmlops-check") ? "toggle" : "open", row.dataset.runId);
  });
  el.addEventListener("keydown", (e) => {
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
    with kind ``open``, ``toggle`` or ``sort``."""

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
        if kind in ("open", "toggle", "sort") and value:
            self._on_event(kind, value)

    def click(self, kind: str, value: str) -> None:
        """What a click in the browser does (for tests and scripts)."""
        self._on_event(kind, value)
