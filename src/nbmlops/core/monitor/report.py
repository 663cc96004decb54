"""Drift reports a person reads: the per-feature table as HTML, overlaid histograms of the
drifted features (matplotlib) and one self-contained HTML file with the images inline."""

from __future__ import annotations

import base64
import html
import io
import itertools
import math
import os
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from nbmlops.core.monitor.drift import DriftReport

__all__ = ["drift_figure", "drift_html", "drift_table_html"]

_SHOWN = [
    "feature",
    "kind",
    "test",
    "score",
    "threshold",
    "drifted",
    "psi",
    "reference_missing",
    "current_missing",
    "new_categories",
]


def drift_figure(
    report: DriftReport, features: list[str] | None = None, max_features: int = 12
) -> Any:
    """A matplotlib Figure: reference and current histograms overlaid, one panel a feature
    (default: the drifted ones); None when there is nothing to draw."""
    try:
        from matplotlib.figure import Figure
    except ImportError as err:
        from nbmlops.exceptions import MissingDependencyError

        raise MissingDependencyError(
            "drawing drift histograms needs matplotlib", fix="pip install matplotlib"
        ) from err
    names = [
        f for f in (features if features is not None else report.drifted) if f in report.histograms
    ]
    names = names[:max_features]
    if not names:
        return None
    ncols = min(3, len(names))
    nrows = math.ceil(len(names) / ncols)
    fig = Figure(figsize=(4.2 * ncols, 2.8 * nrows), layout="constrained")
    row_of = {r["feature"]: r for r in report.features.to_dict("records")}
    for i, name in enumerate(names):
        ax = fig.add_subplot(nrows, ncols, i + 1)
        h = report.histograms[name]
        if h["kind"] == "numeric":
            edges = h["edges"]
            widths = [b - a for a, b in itertools.pairwise(edges)]
            ax.bar(
                edges[:-1],
                h["reference"],
                width=widths,
                align="edge",
                alpha=0.5,
                label=report.reference_label,
            )
            ax.bar(
                edges[:-1],
                h["current"],
                width=widths,
                align="edge",
                alpha=0.5,
                label=report.current_label,
            )
        else:
            x = range(len(h["categories"]))
            ax.bar([v - 0.2 for v in x], h["reference"], width=0.4, label=report.reference_label)
            ax.bar([v + 0.2 for v in x], h["current"], width=0.4, label=report.current_label)
            ax.set_xticks(list(x), h["categories"], rotation=45, ha="right", fontsize=7)
        row = row_of.get(name, {})
        flag = " (drifted)" if row.get("drifted") else ""
        ax.set_title(
            f"{name}: {row.get('test', '')} {row.get('score', math.nan):.3g}{flag}", fontsize=9
        )
        ax.set_ylabel("share", fontsize=8)
        ax.tick_params(labelsize=7)
        if i == 0:
            ax.legend(fontsize=7)
    return fig


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return "" if not math.isfinite(v) else f"{v:.4g}"
    if isinstance(v, (list, tuple)):
        return ", ".join(map(str, v[:5])) + (" ..." if len(v) > 5 else "")
    return str(v)


def drift_table_html(report: DriftReport) -> str:
    """The summary line and the per-feature table (drifted rows highlighted)."""
    head = "".join(f"<th>{html.escape(c)}</th>" for c in _SHOWN)
    body = []
    for r in report.features.to_dict("records"):
        style = ' style="background:#fde2e1"' if r["drifted"] else ""
        cells = "".join(f"<td>{html.escape(_fmt(r[c]))}</td>" for c in _SHOWN)
        body.append(f"<tr{style}>{cells}</tr>")
    notes = "".join(f"<li>{html.escape(n)}</li>" for n in report.notes)
    return (
        f"<p><b>{html.escape(report.summary())}</b><br>{html.escape(report.reference_label)} "
        f"({report.reference_rows:,} rows) vs {html.escape(report.current_label)} "
        f"({report.current_rows:,} rows); correction: {html.escape(report.correction)}</p>"
        f'<table class="nbmlops-drift"><thead><tr>{head}</tr></thead><tbody>{"".join(body)}</tbody></table>'
        + (f"<ul>{notes}</ul>" if notes else "")
    )


def figure_png(fig: Any) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90)
    return buf.getvalue()


def drift_html(report: DriftReport, path: str | os.PathLike[str] | None = None) -> str:
    """The whole report as one HTML page with the plots inline (base64 PNG), no external
    files or scripts; written to ``path`` (temporary name, then renamed) when given."""
    img = ""
    try:
        fig = report.figure()
    except ImportError:
        fig = None
    if fig is not None:
        data = base64.b64encode(figure_png(fig)).decode("ascii")
        img = f'<img alt="histograms of the drifted features" src="data:image/png;base64,{data}">'
    stamp = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())
    page = (
        "<!DOCTYPE html><html><head><meta charset='utf-8'><title>nbmlops drift report</title>"
        "<style>body{font-family:sans-serif;margin:1.5em}table{border-collapse:collapse;"
        "font-size:13px}td,th{border:1px solid #ccc;padding:3px 6px;text-align:left}</style>"
        f"</head><body><h2>Drift report</h2><p>{stamp}</p>{drift_table_html(report)}{img}</body></html>"
    )
    if path is not None:
        target = Path(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f".{target.name}.tmp")
        tmp.write_text(page, encoding="utf-8")
        tmp.replace(target)
    return page
