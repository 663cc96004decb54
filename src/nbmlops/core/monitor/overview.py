"""One self-contained HTML page for the monitoring of a model version: headline metrics, then
sections (drift, data quality, performance, service health), each an HTML table and its
matplotlib figures inline as base64 PNG, so the file opens anywhere with nothing beside it."""

from __future__ import annotations

import base64
import html
import math
import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from nbmlops.core.monitor.report import figure_png

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["Section", "frame_html", "overview_html", "write_atomically"]

_STYLE = (
    "body{font-family:sans-serif;margin:1.5em;max-width:1100px}"
    "table{border-collapse:collapse;font-size:13px;margin:.5em 0}"
    "td,th{border:1px solid #ccc;padding:3px 6px;text-align:left}"
    "tr.bad{background:#fde2e1}h3{margin-top:1.6em}img{max-width:100%}"
    ".note{color:#555;font-size:13px}"
)


@dataclass
class Section:
    """A heading, a summary line, HTML tables and figures (matplotlib) of one part."""

    title: str
    summary: str = ""
    body: str = ""
    figures: Sequence[tuple[str, Any]] = field(default_factory=list)  # (alt text, Figure)
    notes: Sequence[str] = field(default_factory=list)


def _cell(v: Any) -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "-"
    if isinstance(v, float):
        return f"{v:.4g}"
    if hasattr(v, "strftime"):
        return v.strftime("%Y-%m-%d %H:%M:%S")
    if isinstance(v, (list, tuple)):
        return ", ".join(map(str, v[:5])) + (" ..." if len(v) > 5 else "")
    return str(v)


def frame_html(
    frame: pd.DataFrame, columns: Sequence[str] | None = None, bad: str | None = None
) -> str:
    """A table of ``frame``'s ``columns`` (rows where boolean column ``bad`` is true marked)."""
    if frame.empty:
        return "<p class='note'>nothing in this window</p>"
    cols = [c for c in (columns or list(frame.columns)) if c in frame.columns]
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in cols)
    rows = []
    for r in frame.to_dict("records"):
        mark = " class='bad'" if bad is not None and bool(r.get(bad)) else ""
        cells = "".join(f"<td>{html.escape(_cell(r[c]))}</td>" for c in cols)
        rows.append(f"<tr{mark}>{cells}</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>"


def _image(alt: str, fig: Any) -> str:
    data = base64.b64encode(figure_png(fig)).decode("ascii")
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{data}">'


def overview_html(
    title: str, subtitle: str, metrics: Mapping[str, float], sections: Sequence[Section]
) -> str:
    """The page: ``title``, ``subtitle``, a table of the headline ``metrics``, the sections."""
    stamp = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())
    head = "".join(
        f"<tr><th>{html.escape(k)}</th><td>{html.escape(_cell(v))}</td></tr>"
        for k, v in metrics.items()
    )
    parts = [
        "<!DOCTYPE html><html><head><meta charset='utf-8'>",
        f"<title>{html.escape(title)}</title><style>{_STYLE}</style></head><body>",
        f"<h2>{html.escape(title)}</h2><p>{html.escape(subtitle)}<br>written {stamp}</p>",
        f"<table class='metrics'>{head}</table>",
    ]
    for s in sections:
        parts.append(f"<h3>{html.escape(s.title)}</h3>")
        if s.summary:
            parts.append(f"<p><b>{html.escape(s.summary)}</b></p>")
        parts.append(s.body)
        parts.extend(_image(alt, fig) for alt, fig in s.figures if fig is not None)
        if s.notes:
            notes = "".join(f"<li>{html.escape(n)}</li>" for n in s.notes)
            parts.append(f"<ul class='note'>{notes}</ul>")
    parts.append("</body></html>")
    return "".join(parts)


def write_atomically(text: str, path: str | os.PathLike[str]) -> Path:
    """Write ``text`` under a temporary name and rename it, so no reader sees half a file."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(target)
    return target
