"""An ipywidgets progress bar for pipeline events (``%pipeline run``): the bar, the steps
running now, one line per finished step."""

from __future__ import annotations

import html
from typing import Any

import ipywidgets as W

_COLOURS = {"ran": "#2e7d32", "cached": "#0277bd", "failed": "#c62828", "skipped": "#ef6c00"}


class WidgetProgress:
    def __init__(self, title: str = "pipeline"):
        self.bar = W.IntProgress(value=0, min=0, max=1, description=title, bar_style="info")
        self.label = W.Label("planning")
        self.lines = W.HTML("")
        self.box = W.VBox([W.HBox([self.bar, self.label]), self.lines])
        self._rows: list[str] = []
        self._running: list[str] = []

    def _ipython_display_(self) -> None:
        from IPython.display import display

        display(self.box)

    def __call__(self, event: dict[str, Any]) -> None:
        kind = event["event"]
        if kind == "plan":
            self.bar.max = max(1, len(event["steps"]))
            self.bar.value = 0
        elif kind == "step_start":
            self._running.append(event["step"])
        elif kind == "step_end":
            rep = event["report"]
            if rep.name in self._running:
                self._running.remove(rep.name)
            self.bar.value += 1
            took = f" {rep.duration_s:.1f}s" if rep.status in ("ran", "failed") else ""
            colour = _COLOURS.get(rep.status, "#555")
            why = html.escape(rep.error or rep.reason or "")
            self._rows.append(
                f"<div><b style='color:{colour}'>{html.escape(rep.status)}</b> "
                f"{html.escape(rep.name)}{took} <span style='color:#777'>{why}</span></div>"
            )
            self.lines.value = "".join(self._rows)
        elif kind == "done":
            report = event["report"]
            self.bar.bar_style = "success" if report.ok else "danger"
            self.label.value = f"{report.status.lower()} in {report.wall_s:.1f}s"
            return
        self.label.value = ("running " + ", ".join(self._running)) if self._running else ""
