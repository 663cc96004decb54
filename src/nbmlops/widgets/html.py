"""HTML for the panels' HTML widgets and their static fallback. Inline styles only: outputs
are sanitised in untrusted notebooks and on GitHub, where <style> blocks are dropped."""

from __future__ import annotations

import math
from datetime import datetime
from html import escape
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pandas as pd

FONT = "font-family:var(--jp-ui-font-family,sans-serif);font-size:12px"
# Colours are JupyterLab's theme variables, so the light and the dark theme both read well;
# the fallback after the comma is for front ends without them (classic Notebook, nbconvert).
# Text keeps the colour it inherits (the theme's font colour) wherever it can: coloured text
# on a theme's background is where contrast is lost, so state is shown by borders and dots.
MUTED = "color:var(--jp-ui-font-color2,#616161)"  # only on the output's own background
HEAD_BG = "var(--jp-layout-color2,#eeeeee)"
BORDER = "var(--jp-border-color1,#bdbdbd)"
BORDER_LIGHT = "var(--jp-border-color2,#e0e0e0)"
SELECTED_BG = "var(--jp-layout-color3,#bdbdbd)"
SELECTED_EDGE = "var(--jp-brand-color1,#1976d2)"
DIFF_BG = "var(--jp-layout-color2,#eeeeee)"
DIFF_EDGE = "var(--jp-warn-color1,#f57c00)"
ERROR_EDGE = "var(--jp-error-color1,#d32f2f)"
OK_EDGE = "var(--jp-success-color1,#388e3c)"
TABLE = f"border-collapse:collapse;{FONT};white-space:nowrap;color:inherit"
TH = (
    f"text-align:left;padding:3px 8px;border-bottom:2px solid {BORDER};background:{HEAD_BG};"
    "color:var(--jp-ui-font-color1,#212121)"
)
TD = f"padding:2px 8px;border-bottom:1px solid {BORDER_LIGHT}"
TH_KEY = f"text-align:left;padding:2px 12px 2px 0;vertical-align:top;border-bottom:1px solid {BORDER_LIGHT}"
STATUS_COLOUR = {
    "FINISHED": "var(--jp-success-color1,#388e3c)",
    "FAILED": "var(--jp-error-color1,#d32f2f)",
    "KILLED": "var(--jp-warn-color1,#f57c00)",
    "RUNNING": "var(--jp-brand-color1,#1976d2)",
    "SCHEDULED": "var(--jp-layout-color4,#757575)",
}


# The panels' one <style> block (in an HTML widget of each panel; widget outputs are not
# sanitised): ipywidgets' tab labels use a grey that falls below WCAG AA contrast on the tab
# bar, and Plotly's SVG text cannot take CSS variables inline.
TABS_CLASS = "nbmlops-tabs"
PANEL_CSS = (
    f"<style>.{TABS_CLASS} .lm-TabBar-tab,.{TABS_CLASS} .lm-TabBar-tabLabel"
    "{color:var(--jp-ui-font-color1,#212121)!important}</style>"
)


def dot(colour: str, title: str = "") -> str:
    """A coloured dot before a word: state in colour without coloured text."""
    tip = f' title="{escape(title)}"' if title else ""
    return (
        f'<span{tip} style="display:inline-block;width:8px;height:8px;border-radius:50%;'
        f'margin-right:4px;background:{colour}"></span>'
    )


_LOCAL_TZ = datetime.now().astimezone().tzinfo


def error_html(text: str) -> str:
    return (
        '<div class="nbmlops-error" style="color:var(--jp-ui-font-color1,#212121);'
        f"background:var(--jp-layout-color1,#fff);border:1px solid {ERROR_EDGE};"
        f'border-left:4px solid {ERROR_EDGE};border-radius:3px;padding:6px 10px;{FONT}">'
        f"<b>nbmlops:</b> {escape(text)}</div>"
    )


def note_html(text: str) -> str:
    return f'<div style="{MUTED};padding:4px 0;{FONT}">{escape(text)}</div>'


def fmt(value: Any, column: str = "") -> str:
    """A cell's text: 4 significant digits for numbers, local time for timestamps."""
    if value is None:
        return ""
    if isinstance(value, float):
        if math.isnan(value):
            return ""
        if column == "duration":
            return f"{value:.1f} s" if value < 120 else f"{value / 60:.1f} min"
        return f"{value:.4g}"
    if hasattr(value, "tz_convert"):  # pandas Timestamp
        try:
            if value != value:  # NaT
                return ""
            return value.tz_convert(_LOCAL_TZ).strftime("%Y-%m-%d %H:%M:%S")
        except (TypeError, ValueError):
            return str(value)
    return str(value)


def runs_table_html(
    page: pd.DataFrame,
    *,
    sort_by: str = "",
    ascending: bool = True,
    selected: tuple[str, ...] | set[str] = (),
    caption: str = "",
) -> str:
    """One page of a runs frame as a table: selected runs marked, the sort column's header
    with an arrow, params and metrics with their short names."""
    from nbmlops.api.experiments import short

    columns = [c for c in page.columns if c not in ("run_id", "end")]
    arrow = " ▲" if ascending else " ▼"
    head = [
        f'<th style="{TH}" aria-label="selected for compare">✓</th>',
        f'<th style="{TH};cursor:pointer" data-col="name" title="sort by name">run</th>',
    ]
    for col in columns:
        # params and metrics told apart by the header's top edge, not by coloured text
        edge = (
            f";border-top:3px solid {DIFF_EDGE}"
            if col.startswith("params.")
            else f";border-top:3px solid {SELECTED_EDGE}"
            if col.startswith("metrics.")
            else ""
        )
        title = f' title="{escape(col)}: click to sort" data-col="{escape(col)}"'
        head.append(
            f'<th style="{TH}{edge};cursor:pointer"{title}>{escape(short(col))}'
            f"{arrow if col == sort_by else ''}</th>"
        )
    chosen = set(selected)
    body = []
    records = page.to_dict("records")
    for row in records:
        rid = str(row["run_id"])
        mark = "✓" if rid in chosen else ""
        bg = (
            f"background:{SELECTED_BG};box-shadow:inset 4px 0 {SELECTED_EDGE};"
            if rid in chosen
            else ""
        )
        box = "☑" if rid in chosen else "☐"
        cells = [
            f'<td class="nbmlops-check" role="checkbox" aria-checked="{str(rid in chosen).lower()}"'
            f' aria-label="compare {escape(rid[:8])}" style="{TD};cursor:pointer">{box}'
            f"{'<span hidden>' + mark + '</span>' if mark else ''}</td>",
            f'<td style="{TD};font-family:monospace">',
        ]
        cells[-1] += f'<span title="{escape(rid)}">{escape(rid[:8])}</span></td>'
        for col in columns:
            value = row[col]
            style = TD
            text = escape(fmt(value, col))
            if col == "status":
                colour = STATUS_COLOUR.get(str(value), STATUS_COLOUR["SCHEDULED"])
                text = dot(colour) + text
            elif isinstance(value, float):
                style += ";text-align:right"
            cells.append(f'<td style="{style}">{text}</td>')
        body.append(
            f'<tr class="nbmlops-run" tabindex="0" data-run-id="{escape(rid)}" '
            f'style="{bg}cursor:pointer">'
        )
        body[-1] += "".join(cells) + "</tr>"
    cap = f'<div style="padding:2px 0 4px;{FONT}">{escape(caption)}</div>' if caption else ""
    return (
        f'{cap}<div style="overflow-x:auto;max-width:100%">'
        f'<table class="nbmlops-runs" style="{TABLE}"><thead><tr>{"".join(head)}</tr></thead>'
        f"<tbody>{''.join(body)}</tbody></table></div>"
    )


def compare_html(table: pd.DataFrame) -> str:
    """:func:`nbmlops.core.experiments.compare_runs`'s table: rows that differ highlighted."""
    from nbmlops.api.experiments import short

    if table.empty:
        return note_html("Select runs in the list to compare them side by side.")
    runs = [c for c in table.columns if c != "differs"]
    head = f'<th style="{TH}"></th>' + "".join(f'<th style="{TH}">{escape(c)}</th>' for c in runs)
    rows = []
    for field, row in table.iterrows():
        name = str(field)
        bg = (
            f"background:{DIFF_BG};box-shadow:inset 4px 0 {DIFF_EDGE};font-weight:600"
            if row["differs"]
            else ""
        )
        group = "param " if name.startswith("params.") else "metric " if "metrics." in name else ""
        label = f'<td style="{TD}">{escape(group)}<b>{escape(short(name))}</b></td>'
        cells = "".join(f'<td style="{TD}">{escape(fmt(row[c], name))}</td>' for c in runs)
        rows.append(f'<tr style="{bg}">{label}{cells}</tr>')
    return (
        '<div style="overflow-x:auto;max-width:100%">'
        f'<table class="nbmlops-compare" style="{TABLE}"><thead><tr>{head}</tr></thead>'
        f"<tbody>{''.join(rows)}</tbody></table></div>"
    )


def details_html(title: str, fields: list[tuple[str, Any]]) -> str:
    """A node's details: a title and key/value rows (dict values become nested lists)."""
    rows = []
    for key, value in fields:
        if value is None or value == "" or value == {} or value == []:
            continue
        if isinstance(value, dict):
            inner = "".join(
                f"<tr><td style='{TD}'>{escape(str(k))}</td>"
                f"<td style='{TD}'>{escape(fmt(v))}</td></tr>"
                for k, v in value.items()
            )
            shown = f'<table style="{TABLE}">{inner}</table>'
        elif isinstance(value, list | tuple):
            shown = escape(", ".join(fmt(v) for v in value))
        else:
            shown = escape(fmt(value))
        rows.append(
            f'<tr><th style="{TH_KEY}">{escape(key)}</th>'
            f'<td style="{TD};white-space:normal">{shown}</td></tr>'
        )
    return (
        f'<div class="nbmlops-details" style="{FONT}"><div style="font-weight:600;'
        f'padding:2px 0 6px">{escape(title)}</div><table style="{TABLE}">{"".join(rows)}'
        "</table></div>"
    )


def png_img(png: bytes, alt: str) -> str:
    import base64

    data = base64.b64encode(png).decode("ascii")
    return f'<img alt="{escape(alt)}" style="max-width:100%" src="data:image/png;base64,{data}"/>'
