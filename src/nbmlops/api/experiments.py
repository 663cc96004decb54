"""Runs of an experiment as a frame, and what the panels do with it: filter, sort, page,
compare, metric curves, parallel coordinates. The operations are pure functions of the runs
frame (:mod:`nbmlops.core.experiments`); reading takes the project's settings."""

from __future__ import annotations

import re
from typing import Any

from nbmlops.config import Settings
from nbmlops.core.experiments import (
    BASE_COLUMNS,
    PAGE,
    STATUSES,
    client,
    compare_runs,
    curves_figure,
    default_experiment,
    empty_runs,
    experiments,
    figure_png,
    filter_runs,
    latest_experiment,
    list_runs,
    metric_columns,
    metric_history,
    page_of,
    parallel_figure,
    parallel_frame,
    param_columns,
    resolve_column,
    run_details,
    run_labels,
    runs_frame,
    short,
    sort_runs,
)
from nbmlops.core.sqlite_runs import read_runs
from nbmlops.exceptions import UsageError

__all__ = [
    "BASE_COLUMNS",
    "PAGE",
    "STATUSES",
    "compare_runs",
    "curves_figure",
    "default_experiment",
    "empty_runs",
    "experiments",
    "figure_png",
    "filter_runs",
    "latest_experiment",
    "list_runs",
    "metric_columns",
    "metric_history",
    "page_of",
    "parallel_figure",
    "parallel_frame",
    "param_columns",
    "resolve_column",
    "run_details",
    "run_labels",
    "runs_frame",
    "runs_listing",
    "runs_page",
    "short",
    "sort_runs",
]


# A token that compares a field with a number: the panels' filter syntax (acc>0.9).
_COMPARISON = re.compile(r"^(?P<key>[A-Za-z0-9_.\-/]+?)(?:<=|>=|!=|<|>)(?P<value>[^<>=!]+)$")


def runs_listing(
    settings: Settings,
    experiment: str | None = None,
    filter_text: str = "",
    status: str | None = None,
) -> tuple[str | None, Any]:
    """(experiment, its runs as the Experiments panel lists them, filtered the panel's way).

    Unlike the panel's search box, a comparison on a field no run has (``acc>0.9`` where no
    run logged ``acc``) is an error naming the known fields, not a text search. A local SQLite
    store is read directly, without importing MLflow; other stores go through MLflow.
    """
    fast = read_runs(settings.resolved_tracking_uri, experiment, settings.experiment)
    if fast is not None:
        experiment, rows = fast
        runs = runs_frame(rows)
    else:
        experiment = experiment or default_experiment(settings)
        runs = list_runs(settings, experiment) if experiment else empty_runs()
    for token in filter_text.split():
        m = _COMPARISON.match(token)
        if m is None or resolve_column(runs, m["key"]) is not None:
            continue
        try:
            float(m["value"])
        except ValueError:
            continue  # not a numeric comparison: the panel searches it as text
        fields = sorted({short(c) for c in (*param_columns(runs), *metric_columns(runs))})
        raise UsageError(
            f"Unknown field {m['key']!r} in the filter {token!r}"
            + (f" (experiment {experiment})" if experiment else ""),
            fix=f"Known fields: {', '.join(fields) or 'none (no run logged params or metrics)'}."
            " Compare a metric or param with a number, e.g. acc>0.9.",
        )
    return experiment, filter_runs(runs, filter_text, status)


def runs_page(settings: Settings, base_url: str) -> str:
    """The MLflow UI's runs table of the experiment a panel would open (Default when the store
    has none). MLflow 3's UI takes its view from the ``workflowType`` URL parameter (else the
    browser's storage, else GenAI, whose Traces page is empty for training runs), so the
    parameter is part of the URL."""
    name = default_experiment(settings)
    exp = client(settings).get_experiment_by_name(name) if name else None
    exp_id = exp.experiment_id if exp is not None else "0"
    return f"{base_url.rstrip('/')}/#/experiments/{exp_id}/runs?workflowType=machine_learning"
