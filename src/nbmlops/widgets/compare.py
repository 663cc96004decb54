"""The Compare tab's figures and code: the selected runs' figures side by side, and the
difference of each run's recorded cell against the first run's (difflib's unified diff, lines
marked by the theme's edge colours, so both themes read well)."""

from __future__ import annotations

import difflib
from html import escape
from typing import Any

from nbmlops.widgets.html import (
    BORDER_LIGHT,
    DIFF_BG,
    ERROR_EDGE,
    FONT,
    HEAD_BG,
    OK_EDGE,
    note_html,
    png_img,
)

FIGURES_HINT = "Select runs to see their figures side by side."
CODE_HINT = "Select two or more runs to see how their code differs."
CELL = f"padding:4px;vertical-align:top;border:1px solid {BORDER_LIGHT};min-width:200px"


def figures_html(entries: list[dict[str, Any]], labels: dict[str, str]) -> str:
    """One column per run (its name on top), its figures stacked under it."""
    if not any(e["figures"] for e in entries):
        return note_html("The selected runs logged no figures.")
    heads, cells = [], []
    for entry in entries:
        name = labels.get(entry["run_id"], entry["run_id"][:8])
        heads.append(f'<th style="{CELL};background:{HEAD_BG}">{escape(name)}</th>')
        figs = "".join(
            f'<figure style="margin:0 0 6px">{png_img(f["png"], name + ": " + f["name"])}'
            f'<figcaption style="{FONT}">{escape(f["name"])}</figcaption></figure>'
            for f in entry["figures"]
        )
        cells.append(f'<td style="{CELL};width:{100 // len(entries)}%">{figs or "no figures"}</td>')
    return (
        f'<table class="nbmlops-figures" style="border-collapse:collapse;width:100%;{FONT}">'
        f"<thead><tr>{''.join(heads)}</tr></thead><tbody><tr>{''.join(cells)}</tr></tbody></table>"
    )


def diff_lines(before: str, after: str, a: str, b: str) -> list[str]:
    """The unified diff of two cells' sources (three lines of context)."""
    return list(
        difflib.unified_diff(
            before.splitlines(), after.splitlines(), fromfile=a, tofile=b, lineterm=""
        )
    )


def _line(text: str) -> str:
    edge, bg = "transparent", ""
    if text.startswith("+") and not text.startswith("+++"):
        edge, bg = OK_EDGE, f";background:{DIFF_BG}"
    elif text.startswith("-") and not text.startswith("---"):
        edge, bg = ERROR_EDGE, f";background:{DIFF_BG}"
    kind = "added" if edge == OK_EDGE else "removed" if edge == ERROR_EDGE else "same"
    return (
        f'<div class="nbmlops-diff-{kind}" style="border-left:4px solid {edge};'
        f'padding-left:6px{bg}">{escape(text) or "&nbsp;"}</div>'
    )


def code_diff_html(entries: list[dict[str, Any]], labels: dict[str, str]) -> str:
    """Each run's recorded cell against the first selected run's; a run without recorded
    code says so."""
    if len(entries) < 2:
        return note_html(CODE_HINT)
    first = entries[0]
    a = labels.get(first["run_id"], first["run_id"][:8])
    if first["code"] is None:
        return note_html(f"{a} has no recorded code (code/cell.py) to compare with.")
    parts = []
    for entry in entries[1:]:
        b = labels.get(entry["run_id"], entry["run_id"][:8])
        if entry["code"] is None:
            parts.append(note_html(f"{b} has no recorded code."))
            continue
        lines = diff_lines(first["code"], entry["code"], a, b)
        body = "".join(_line(t) for t in lines) if lines else note_html("Same code.")
        parts.append(
            f'<div style="{FONT};margin:6px 0 2px"><b>{escape(a)}</b> → <b>{escape(b)}</b></div>'
            f'<pre class="nbmlops-diff" style="margin:0;font-family:var(--jp-code-font-family,'
            f'monospace);font-size:12px;overflow-x:auto;color:inherit">{body}</pre>'
        )
    return "".join(parts)


def draw_figures_and_code(panel: Any) -> None:
    """Fill the Experiments panel's Figures and Code tabs for its selected runs (read on its
    worker thread)."""
    from nbmlops.api import experiments as core
    from nbmlops.api import views

    generation = panel._bump("extras")
    run_ids = list(panel.selected)
    if not run_ids:
        panel.figures_view.value = note_html(FIGURES_HINT)
        panel.code_view.value = note_html(CODE_HINT)
        return
    labels = core.run_labels(panel.runs, run_ids)

    def job() -> None:
        if panel._stale("extras", generation):
            return
        entries = views.compare_view(panel.settings, run_ids)
        if panel._stale("extras", generation):
            return
        panel.figures_view.value = figures_html(entries, labels)
        panel.code_view.value = code_diff_html(entries, labels)

    panel.worker.submit(job)
