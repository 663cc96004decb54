"""A validation report as HTML for a notebook output: a one-line verdict, then one compact row
per column with the failing and drifted columns first and marked. Plain strings and inline
styles only (outputs are sanitised in untrusted notebooks, where <style> blocks are dropped);
colours are JupyterLab's theme variables with fallbacks, so light and dark themes read well."""

from __future__ import annotations

import math
from html import escape
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from nbmlops.core.data.report import ValidationReport

FONT = "font-family:var(--jp-ui-font-family,sans-serif);font-size:12px"
BORDER = "var(--jp-border-color1,#bdbdbd)"
BORDER_LIGHT = "var(--jp-border-color2,#e0e0e0)"
HEAD_BG = "var(--jp-layout-color2,#eeeeee)"
BAD_EDGE = "var(--jp-error-color1,#d32f2f)"
DRIFT_EDGE = "var(--jp-warn-color1,#f57c00)"
GOOD_EDGE = "var(--jp-success-color1,#388e3c)"
TH = (
    f"text-align:left;padding:3px 8px;border-bottom:2px solid {BORDER};background:{HEAD_BG};"
    "color:var(--jp-ui-font-color1,#212121)"
)
TD = f"padding:2px 8px;border-bottom:1px solid {BORDER_LIGHT};text-align:left"


def problem_columns(report: ValidationReport) -> list[str]:
    """Columns with a schema error or drift, schema errors first: what the plots show by
    default."""
    table = report.to_table()
    bad = table[table["schema_errors"] > 0]["column"].tolist()
    drifted = [c for c in report.drifted_columns if c not in bad]
    return [str(c) for c in (*bad, *drifted)]


def verdict(report: ValidationReport) -> str:
    """One line: passed or FAILED, and what failed."""
    table = report.to_table()
    bad = table[table["schema_errors"] > 0]
    drifted = report.drifted_columns
    size = f"{report.rows:,} rows, {len(report.columns)} columns"
    if report.passed:
        compared = f"; no drift in {len(report.drift)} compared columns" if report.drift else ""
        return f"✓ Validation passed: {size}, schema ok{compared}."
    parts = []
    if len(bad) or not report.schema_errors.empty:
        where = ", ".join(str(c) for c in bad["column"]) or "the frame"
        parts.append(f"{len(report.schema_errors)} schema failures in {where}")
    if drifted:
        parts.append(f"{len(drifted)} of {len(report.drift)} columns drifted: {', '.join(drifted)}")
    return f"✗ Validation FAILED ({size}): " + "; ".join(parts) + "."


def _num(value: object, digits: str = ".3g") -> str:
    if value is None:
        return ""
    try:
        number = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return str(value)
    return "" if math.isnan(number) else format(number, digits)


def _count(value: object) -> str:
    try:
        return str(int(value))  # type: ignore[call-overload]
    except (TypeError, ValueError):
        return ""  # None or pd.NA: not counted for this column


def report_html(report: ValidationReport) -> str:
    """The verdict, then the per-column table: problem rows first, marked by a coloured edge
    and bold text (never by coloured text, which loses contrast in one theme or the other)."""
    table = report.to_table()
    table = table.assign(
        _order=[
            0 if errors else 1 if drifted else 2
            for errors, drifted in zip(table["schema_errors"], table["drifted"], strict=True)
        ]
    ).sort_values("_order", kind="stable")
    edge = GOOD_EDGE if report.passed else BAD_EDGE
    head = (
        f'<div class="nbmlops-verdict" style="{FONT};font-weight:600;padding:3px 8px;'
        f'margin:2px 0 4px;border-left:4px solid {edge}">{escape(verdict(report))}</div>'
    )
    columns = ["column", "dtype", "nulls", "schema", "outliers", "drift", "p", "psi"]
    th = "".join(f'<th style="{TH}">{c}</th>' for c in columns)
    rows = []
    for rec in table.to_dict("records"):
        errors, drifted = int(rec["schema_errors"] or 0), bool(rec["drifted"])
        if errors:
            style = f"box-shadow:inset 4px 0 {BAD_EDGE};font-weight:600"
            state = "problem"
        elif drifted:
            style = f"box-shadow:inset 4px 0 {DRIFT_EDGE};font-weight:600"
            state = "drifted"
        else:
            style, state = "", "ok"
        schema = "ok" if not errors else f"{errors} failed: {rec['checks_failed']}"
        if not rec["present"]:
            schema = "missing" + (f" ({errors})" if errors else "")
        drift = ""
        if rec["test"]:
            drift = ("drifted" if drifted else "no drift") + f" ({rec['test']})"
        cells = [
            str(rec["column"]),
            str(rec["dtype"] or ""),
            _count(rec["nulls"]),
            schema,
            _count(rec["outliers"]),
            drift,
            _num(rec["p_value"], ".2g"),
            _num(rec["psi"], ".2f"),
        ]
        tds = "".join(f'<td style="{TD}">{escape(c)}</td>' for c in cells)
        rows.append(f'<tr class="nbmlops-check-{state}" style="{style}">{tds}</tr>')
    body = (
        f'<div style="overflow-x:auto;max-width:100%;max-height:420px;overflow-y:auto">'
        f'<table class="nbmlops-validation" style="border-collapse:collapse;{FONT};'
        f'white-space:nowrap;color:inherit"><thead><tr>{th}</tr></thead>'
        f"<tbody>{''.join(rows)}</tbody></table></div>"
    )
    return f'<div class="nbmlops-validate">{head}{body}</div>'
