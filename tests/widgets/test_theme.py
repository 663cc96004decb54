"""Every colour the panels and outputs use is a JupyterLab theme variable (with a fallback for
other front ends), so the light and the dark theme both read well; the browser test measures
the contrast itself."""

from __future__ import annotations

import re

import numpy as np
import pandas as pd

from nbmlops.api.registry import VersionInfo
from nbmlops.core.data.drift import ColumnDrift
from nbmlops.core.data.report import ValidationReport
from nbmlops.core.tracking.capture import Capture
from nbmlops.core.tracking.report import summary_html
from nbmlops.core.tracking.session import RunSummary
from nbmlops.widgets.html import compare_html, details_html, error_html, note_html, runs_table_html
from nbmlops.widgets.registry_html import comparison_html, history_html, versions_html

# a theme variable with its fallback: var(--jp-NAME, FALLBACK)
THEMED = re.compile(r"var\(--jp-[a-z0-9-]+(,[^()]*(\([^()]*\))?)?\)")
LITERAL = re.compile(
    r"#[0-9a-fA-F]{3,8}\b|rgba?\(|(?<![-\w])(color|background)\s*:\s*(red|black|white|grey|gray)\b"
)


def literal_colours(html: str) -> list[str]:
    """Colours written outside a theme variable."""
    bare = THEMED.sub("", html)
    return [m.group(0) for m in LITERAL.finditer(bare)]


def run_frame() -> pd.DataFrame:
    start = pd.Timestamp("2026-01-01", tz="UTC")
    return pd.DataFrame(
        {
            "run_id": ["a" * 32, "b" * 32],
            "name": ["first", "second"],
            "status": ["FINISHED", "FAILED"],
            "start": [start, start],
            "duration": [1.5, 2.0],
            "params.lr": ["0.1", "0.2"],
            "metrics.acc": [0.9, 0.8],
        }
    )


def version(v: int, aliases: list[str], acc: float, complete: bool) -> VersionInfo:
    return VersionInfo(
        name="wine",
        version=v,
        aliases=aliases,
        run_id="c" * 32,
        model_id=None,
        created=1_700_000_000.0,
        registered_by="ana",
        scan="clean" if complete else "flagged",
        card_complete=complete,
        approvals=[],
        data_versions=[],
        metrics={"acc": acc, "f1": acc - 0.1},
    )


def validation_report() -> ValidationReport:
    errors = pd.DataFrame(
        {"column": ["a"], "check": ["greater_than(0)"], "failure_case": [-1], "index": [3]}
    )
    drift = [
        ColumnDrift("a", "numeric", "ks", 0.5, 0.001, 0.4, True),
        ColumnDrift("b", "numeric", "ks", 0.1, 0.6, 0.01, False),
    ]
    return ValidationReport(
        passed=False,
        schema_errors=errors,
        outliers={"a": 1, "b": 0},
        drift=drift,
        rows=100,
        nulls={"a": 0, "b": 2},
        dtypes={"a": "float64", "b": "float64"},
        columns=["a", "b"],
    )


def test_no_output_hard_codes_a_colour():
    runs = run_frame()
    v1, v2 = version(1, ["champion"], 0.9, True), version(2, ["challenger"], 0.8, False)
    summary = RunSummary(
        key="k",
        name="fit",
        experiment="e",
        status="FAILED",
        duration_s=1.0,
        dry_run=False,
        capture=Capture(params={"lr": "0.1"}, metrics={"acc": 0.9}),
        logged_metric_count=0,
        tracking_uri="sqlite:///x.db",
        error="boom",
    )
    outputs = {
        "runs table": runs_table_html(runs, sort_by="metrics.acc", selected={"a" * 32}),
        "compare": compare_html(
            pd.DataFrame({"first": [0.9], "second": [0.8], "differs": [True]}, index=["acc"])
        ),
        "details": details_html("run", [("params", {"lr": 0.1}), ("status", "ok")]),
        "error": error_html("broken"),
        "note": note_html("hello"),
        "versions": versions_html([v1, v2], selected=2),
        "history": history_html("champion", []),
        "comparison": comparison_html(v2, v1, "champion", []),
        "tracked cell": summary_html(summary),
        "validation": validation_report()._repr_html_(),
    }
    found = {name: literal_colours(html) for name, html in outputs.items()}
    assert {k: v for k, v in found.items() if v} == {}
    assert all("var(--jp-" in html for html in outputs.values() if "style" in html)


def test_validation_leads_with_a_verdict_and_lists_problems_first():
    report = validation_report()
    html = report._repr_html_()
    first = html.index("nbmlops-verdict")
    assert first < html.index("<table")
    assert "✗ Validation FAILED (100 rows, 2 columns): 1 schema failures in a" in html
    assert "1 of 2 columns drifted: a" in html
    rows = re.findall(r'<tr class="nbmlops-check-(\w+)"', html)
    assert rows == ["problem", "ok"]
    assert report.problem_columns() == ["a"]
    assert np.isfinite(report.drift[0].p_value)
