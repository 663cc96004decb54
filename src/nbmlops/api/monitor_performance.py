"""Performance and service health of served models, from the gateway's prediction log.

- :func:`label`: join delayed ground truth to the log by request id (all of it or nothing);
- :func:`performance`: realized accuracy, F1, ROC AUC, log loss (or RMSE, MAE) per window
  and model version, with the CBPE estimate beside it for classifiers;
- :func:`slices`: the feature ranges and categories where a version performs worst;
- :func:`health`: request volume, error rates, latency percentiles per window and version,
  and the serving process's CPU and memory over time.

Each result holds tables (pandas) and, on first access of ``figures``, matplotlib figures.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from functools import cached_property
from typing import TYPE_CHECKING, Any

from nbmlops.api.tracking import project_settings
from nbmlops.config import Settings
from nbmlops.core.monitor.health import health_table, plot_latency, plot_resources, resource_table
from nbmlops.core.monitor.labels import LabelReport, attach_labels, scored_frame
from nbmlops.core.monitor.performance import performance_table, plot_performance
from nbmlops.core.monitor.slices import worst_slices
from nbmlops.core.monitor.traffic import parse_duration
from nbmlops.core.serving.predlog import read_prediction_log
from nbmlops.core.serving.resources import read_resources
from nbmlops.exceptions import MissingDependencyError, UsageError

if TYPE_CHECKING:
    import pandas as pd
    from matplotlib.figure import Figure

__all__ = [
    "HealthResult",
    "LabelReport",
    "PerformanceResult",
    "health",
    "label",
    "parse_seconds",
    "performance",
    "slices",
]


def parse_seconds(text: str | float | int | None, what: str = "window") -> float | None:
    """Seconds in ``"90s"``, ``"15m"``, ``"1h"``, ``"7d"``, ``"2w"`` or a number; None,
    ``"all"`` or ``"none"``: no limit."""
    if text is None or (isinstance(text, str) and text.strip().lower() in ("all", "none", "")):
        return None
    return parse_duration(text, what)


def _home(settings: Settings | None) -> Any:
    return (settings or project_settings()).home_dir


def _since(since: float | None, last: str | float | None) -> float | None:
    span = parse_seconds(last, "--last span")
    if span is None:
        return since
    start = time.time() - span
    return start if since is None else max(since, start)


def _one_version(frame: pd.DataFrame, model: str | None, version: int | None) -> pd.DataFrame:
    if model is not None:
        frame = frame[frame["model"] == model]
    if version is not None:
        frame = frame[frame["version"] == int(version)]
    return frame


def _require_matplotlib() -> None:
    import importlib.util

    if importlib.util.find_spec("matplotlib") is None:
        raise MissingDependencyError(
            "The monitoring plots need matplotlib, which is not installed",
            fix="Install it: pip install matplotlib (the tables work without it).",
        )


def label(
    source: Any,
    *,
    settings: Settings | None = None,
    id_column: str = "request_id",
    label_column: str = "label",
    row_column: str = "row",
    replace: bool = False,
) -> LabelReport:
    """Store delayed labels (a DataFrame or a CSV/Parquet/JSON file) for logged predictions.

    Every row is checked first (known request ids, one label each, the model's kind of
    label); on any problem nothing is written and the error names it and the fix.
    """
    return attach_labels(
        _home(settings), source, id_column=id_column, label_column=label_column,
        row_column=row_column, replace=replace,
    )  # fmt: skip


@dataclass
class PerformanceResult:
    """Realized and estimated metrics per window and version (``table``)."""

    table: pd.DataFrame
    window: float | None
    metrics: tuple[str, ...] = ("accuracy", "f1", "roc_auc", "log_loss", "rmse", "mae")

    @cached_property
    def figures(self) -> dict[str, Figure]:
        """One figure per metric present: realized (solid) and estimated (dashed) over time."""
        _require_matplotlib()
        return {
            m: plot_performance(self.table, m, self.window)
            for m in self.metrics
            if m in self.table.columns or f"{m}_estimated" in self.table.columns
        }

    def to_records(self) -> list[dict[str, Any]]:
        return _records(self.table)


def performance(
    *,
    settings: Settings | None = None,
    window: str | float | None = "1h",
    since: float | None = None,
    until: float | None = None,
    last: str | float | None = None,
    model: str | None = None,
    version: int | None = None,
    reference: pd.DataFrame | None = None,
    reference_until: float | None = None,
    estimate: bool = True,
    scheduler: Any = None,
) -> PerformanceResult:
    """Metrics per ``window`` (e.g. "1h"; None: one window) and model version of the logged
    predictions in ``[since, until)`` (or the ``last`` span, e.g. "24h").

    Classifiers that log class probabilities also get the CBPE estimate, calibrated on
    ``reference`` (labelled records with ``proba:<class>`` columns) or, by default, on the
    labelled predictions of the same version logged before ``reference_until`` (all of them
    when None). ``scheduler`` (a Dask scheduler address or client; default
    ``monitor.dask_scheduler``) reads and joins the log on that cluster, with the same result.
    """
    from nbmlops.api.monitor_cluster import scheduler_address, scored_records

    seconds = parse_seconds(window)
    s = settings or project_settings()
    home = s.home_dir
    address = scheduler_address(scheduler, s)
    if address is None:
        scored = _one_version(scored_frame(home, until=until), model, version)
    else:
        scored = scored_records(home, until, address, model=model, version=version)
    start = _since(since, last)
    if scored.empty:
        raise UsageError(
            "No served predictions in the prediction log"
            + (f" of {model}" if model else "")
            + (f" version {version}" if version is not None else ""),
            where=str(home),
            fix="Serve the model (nbmlops serve) and send requests, or check --model/--version.",
        )
    reference_rows = scored if reference is None else reference
    if reference is None and reference_until is not None:
        reference_rows = scored[scored["ts"] < reference_until]
    analysed = scored if start is None else scored[scored["ts"] >= start]
    if analysed.empty:
        raise UsageError(
            "No served predictions in the chosen window",
            fix="Widen it (--last, --since) or send traffic.",
        )
    table = _per_version(analysed, reference_rows, seconds, estimate, reference is not None)
    return PerformanceResult(table, seconds)


def _per_version(
    analysed: pd.DataFrame,
    reference_rows: pd.DataFrame,
    seconds: float | None,
    estimate: bool,
    given: bool,
) -> pd.DataFrame:
    import pandas as pd

    parts = []
    for (name, ver), part in analysed.groupby(["model", "version"], sort=True):
        ref = reference_rows
        if not given:  # the log's own labelled records of the same version
            ref = reference_rows[
                (reference_rows["model"] == name) & (reference_rows["version"] == ver)
            ]
        parts.append(performance_table(part, window=seconds, reference=ref, estimate=estimate))
    return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame()


def slices(
    *,
    settings: Settings | None = None,
    model: str | None = None,
    version: int | None = None,
    since: float | None = None,
    last: str | float | None = None,
    source: str = "realized",
    reference: pd.DataFrame | None = None,
    limit: int = 10,
    min_size: int | None = None,
) -> pd.DataFrame:
    """The ``limit`` feature ranges or categories where one model version does worst:
    realized accuracy (or MAE) of labelled records, or ``source="estimated"`` (CBPE)."""
    scored = _one_version(scored_frame(_home(settings)), model, version)
    start = _since(since, last)
    ref = scored if reference is None else reference
    if start is not None:
        scored = scored[scored["ts"] >= start]
    if reference is None and model is None and version is None:
        versions = scored[["model", "version"]].drop_duplicates()
        if len(versions) == 1:
            ref = _one_version(ref, versions.iloc[0, 0], versions.iloc[0, 1])
    return worst_slices(scored, source=source, reference=ref, limit=limit, min_size=min_size)


@dataclass
class HealthResult:
    """``table``: per window and version; ``resources``: the serving process's samples."""

    table: pd.DataFrame
    resources: pd.DataFrame
    log: pd.DataFrame = field(repr=False)
    window: float | None = None

    @cached_property
    def figures(self) -> dict[str, Figure]:
        """Latency percentiles (and error rate) over time; CPU and memory over time."""
        _require_matplotlib()
        return {
            "latency": plot_latency(self.log, window=self.window),
            "resources": plot_resources(self.resources),
        }

    def to_records(self) -> dict[str, list[dict[str, Any]]]:
        return {"windows": _records(self.table), "resources": _records(self.resources)}


def health(
    *,
    settings: Settings | None = None,
    window: str | float | None = "1m",
    since: float | None = None,
    until: float | None = None,
    last: str | float | None = None,
    model: str | None = None,
    version: int | None = None,
) -> HealthResult:
    """Request volume, 4xx/5xx counts and rate, latency p50/p95/p99 per ``window`` and model
    version, and the CPU and memory samples of the serving process, over ``[since, until)``
    or the ``last`` span."""
    seconds = parse_seconds(window)
    home = _home(settings)
    log = _one_version(read_prediction_log(home), model, version)
    start = _since(since, last)
    res = read_resources(home)
    if start is not None:
        log, res = log[log["ts"] >= start], res[res["ts"] >= start]
    if until is not None:
        log, res = log[log["ts"] < until], res[res["ts"] < until]
    return HealthResult(health_table(log, window=seconds), resource_table(res), log, seconds)


def _records(frame: pd.DataFrame) -> list[dict[str, Any]]:
    """JSON-ready rows: times as ISO text, NaN as None."""
    import json

    return json.loads(frame.to_json(orient="records", date_format="iso"))
