"""The monitoring report of one served model version (also ``nbmlops.monitor.report``).

Drift and data quality of the version's logged traffic against its training data, realized
and estimated performance, and service health, over one window of the prediction log; shown
in a notebook, written as one self-contained HTML file, and logged to MLflow as a run of the
experiment ``monitoring/<model>`` tagged with the model and version.
"""

from __future__ import annotations

import math
import os
import re
import tempfile
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

from nbmlops.config import Settings
from nbmlops.exceptions import NbmlopsError, StoreError, UsageError

if TYPE_CHECKING:
    import pandas as pd

    from nbmlops.api.monitor_performance import HealthResult, PerformanceResult
    from nbmlops.core.monitor.drift import DriftReport
    from nbmlops.core.monitor.quality import QualityReport
    from nbmlops.core.registry.records import VersionInfo

__all__ = ["MonitorReport", "report"]

EXPERIMENT_PREFIX = "monitoring/"
MODEL_TAG = "nbmlops.monitor.model"
VERSION_TAG = "nbmlops.monitor.version"
_PERF = ("accuracy", "f1", "roc_auc", "log_loss", "rmse", "mae")


@dataclass
class MonitorReport:
    """Drift, data quality, performance and service health of ``model`` v``version``."""

    model: str
    version: int
    window: str
    drift: DriftReport
    quality: QualityReport
    performance: PerformanceResult
    overall: dict[str, Any]  # the whole window's performance row (metric -> value)
    health: HealthResult
    metrics: dict[str, float]
    notes: list[str] = field(default_factory=list)
    run_id: str | None = None
    experiment: str | None = None
    html_path: Path | None = None

    @cached_property
    def figures(self) -> dict[str, Any]:
        """matplotlib figures: ``drift`` (histograms of the drifted features, None when none
        drifted), ``performance`` (accuracy, or the first metric, realized and estimated over
        time) and ``latency`` (latency percentiles and error rate over time)."""
        from nbmlops.core.monitor.performance import plot_performance

        table = self.performance.table
        metric = next(
            (m for m in _PERF if m in table.columns or f"{m}_estimated" in table.columns),
            "accuracy",
        )
        return {
            "drift": self.drift.figure(),
            "performance": plot_performance(table, metric, self.performance.window),
            "latency": self.health.figures["latency"],
        }

    def to_html(self, path: str | os.PathLike[str] | None = None) -> str:
        """The self-contained HTML report (plots inline); written to ``path`` when given."""
        from nbmlops.core.monitor.overview import write_atomically

        page = _page(self)
        if path is not None:
            self.html_path = write_atomically(page, path)
        return page

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able dict (the CLI's ``--json``)."""

        return {
            "model": self.model,
            "version": self.version,
            "window": self.window,
            "metrics": {k: (v if math.isfinite(v) else None) for k, v in self.metrics.items()},
            "drift": self.drift.to_dict(),
            "quality": self.quality.to_dict(),
            "performance": self.performance.to_records(),
            "health": self.health.to_records(),
            "notes": list(self.notes),
            "run_id": self.run_id,
            "experiment": self.experiment,
            "html": str(self.html_path) if self.html_path else None,
        }

    def summary(self) -> str:
        m = self.metrics
        acc = m.get("accuracy", math.nan)
        est = m.get("estimated_accuracy", math.nan)
        return (
            f"{self.model} v{self.version}, {self.window}: {self.drift.summary()}; "
            f"{self.quality.summary()}; accuracy {_fmt(acc)} (estimated {_fmt(est)}); "
            f"latency p99 {_fmt(m.get('latency_p99', math.nan))} ms, "
            f"error rate {_fmt(m.get('error_rate', math.nan))}"
        )

    def _repr_html_(self) -> str:
        page = _page(self)
        return page[page.index("<body>") + 6 : page.rindex("</body>")]


def _fmt(v: float) -> str:
    return "-" if not math.isfinite(v) else f"{v:.3g}"


def _version_info(name: str, version: int | None, alias: str, s: Settings) -> VersionInfo:
    from nbmlops.api.registry import model_registry

    reg = model_registry(s)
    versions = reg.versions(name)
    if version is None:
        aliases = reg.aliases(name)
        if alias not in aliases:
            raise UsageError(
                f"model {name!r} has no alias {alias!r}",
                fix=f"name the version (version=N, --version N) or promote one "
                f"(nbmlops registry promote {name} VERSION {alias})",
            )
        version = aliases[alias]
    info = next((v for v in versions if v.version == int(version)), None)
    if info is None:
        known = ", ".join(str(v.version) for v in versions) or "none"
        raise UsageError(
            f"model {name!r} has no version {version} (its versions: {known})",
            fix="name a registered version",
        )
    return info


def _reference(reference: Any, info: VersionInfo, s: Settings) -> tuple[pd.DataFrame, str]:
    from nbmlops.api.data import load

    if reference is not None:
        if isinstance(reference, str):
            return load(reference, settings=s), reference
        return reference, "reference"
    if not info.data_versions:
        raise UsageError(
            f"{info.name} version {info.version} has no training data version in its lineage",
            fix="pass reference=df (or a data version NAME@k), or register a model trained "
            "in a %%track cell on committed data",
        )
    ref = info.data_versions[0]
    return load(ref, settings=s), f"{ref} (training data of {info.name} v{info.version})"


def report(
    model: str,
    version: int | None = None,
    *,
    last: str | float | None = None,
    since: str | float | None = None,
    until: str | float | None = None,
    window: str | float | None = "1h",
    reference: pd.DataFrame | str | None = None,
    html: str | os.PathLike[str] | None = None,
    log: bool = True,
    settings: Settings | None = None,
) -> MonitorReport:
    """Monitor ``model`` (``NAME`` or ``NAME@alias``; default alias champion) ``version`` over
    the ``last`` span (default 24h; or ``since``/``until``) of the prediction log, per
    ``window``.

    The reference is the version's training data (from its lineage) unless given. Everything
    is computed first; only then is (``log``) one MLflow run created and ``html`` written, so
    bad input (an unknown model or version, an empty window) records nothing.
    """
    from nbmlops.api.monitor import served_columns
    from nbmlops.api.monitor_performance import parse_seconds
    from nbmlops.api.tracking import project_settings
    from nbmlops.core.data.schema import infer_schema
    from nbmlops.core.monitor.drift import drift as run_drift
    from nbmlops.core.monitor.quality import quality as run_quality
    from nbmlops.core.monitor.traffic import features_only, resolve_window, traffic_frame

    s = settings or project_settings()
    name, _, alias = str(model or "").partition("@")
    if not name:
        raise UsageError(
            f"the report needs a model, got {model!r}", fix="pass model='NAME' or 'NAME@alias'"
        )
    alias = alias or "champion"
    info = _version_info(name, version, alias, s)
    if last is None and since is None:
        last = "24h"
    w = resolve_window(last, since, until, None)
    frame = traffic_frame(s.home_dir, w, model=name)
    frame = frame[frame["_version"] == info.version]
    if frame.empty:
        raise UsageError(
            f"the {w.label()} has no successful predictions of {name} version {info.version}",
            where=str(s.home_dir / "predictions"),
            fix="widen the window (last='7d', --last 7d), check the model and version, or "
            "send traffic to the gateway (nbmlops serve) first",
        )
    ref, ref_label = _reference(reference, info, s)
    current = features_only(frame)
    columns, notes = served_columns(ref, current)
    drift = run_drift(ref, current, columns=columns, labels=(ref_label, w.label()))
    drift.notes[:0] = notes
    seconds = parse_seconds(window)  # None, "all": one window
    quality = run_quality(frame, infer_schema(ref[columns]), window=seconds)
    performance, overall, perf_notes = _performance(s, window, w, name, info.version)
    health, whole = _health(s, window, w, name, info.version)
    result = MonitorReport(
        model=name,
        version=info.version,
        window=w.label(),
        drift=drift,
        quality=quality,
        performance=performance,
        overall=overall,
        health=health,
        metrics=_metrics(drift, quality, overall, whole),
        notes=perf_notes,
    )
    page = _page(result)  # drawn before anything is written: a failure leaves nothing behind
    if log:
        result.run_id, result.experiment = _log_run(result, info, page, s)
    if html is not None:
        from nbmlops.core.monitor.overview import write_atomically

        result.html_path = write_atomically(page, html)
    return result


def _performance(
    s: Settings, window: Any, w: Any, name: str, version: int
) -> tuple[PerformanceResult, dict[str, Any], list[str]]:
    """Per-window and whole-window performance; without the estimate (and a note saying why)
    when it cannot be made (no probabilities, too few labelled records to calibrate on)."""
    from nbmlops.api.monitor_performance import performance

    args: dict[str, Any] = {
        "settings": s, "since": w.since, "until": w.until, "model": name, "version": version,
    }  # fmt: skip
    notes: list[str] = []
    try:
        per_window = performance(window=window, **args)
        whole = performance(window=None, **args)
    except UsageError as err:
        notes.append(f"no estimated performance: {err}")
        per_window = performance(window=window, estimate=False, **args)
        whole = performance(window=None, estimate=False, **args)
    overall = whole.table.iloc[0].to_dict() if not whole.table.empty else {}
    return per_window, overall, notes


def _health(
    s: Settings, window: Any, w: Any, name: str, version: int
) -> tuple[HealthResult, dict[str, Any]]:
    from nbmlops.api.monitor_performance import health
    from nbmlops.core.monitor.health import health_table

    result = health(
        settings=s, window=window, since=w.since, until=w.until, model=name, version=version
    )
    whole = health_table(result.log, window=None)
    return result, (whole.iloc[0].to_dict() if not whole.empty else {})


def _metric_key(text: str) -> str:
    # MLflow metric names allow letters, digits and _ - . space / only
    return re.sub(r"[^A-Za-z0-9_\-. /]", "_", text)


def _metrics(
    drift: DriftReport, quality: QualityReport, overall: dict[str, Any], whole: dict[str, Any]
) -> dict[str, float]:
    out: dict[str, float] = {
        "drift_share": float(drift.drift_share),
        "dataset_drift": float(drift.dataset_drift),
        "drifted_features": float(len(drift.drifted)),
        "rows": float(drift.current_rows),
        "quality_violations": float(len(quality.violations)),
    }
    for r in drift.features.to_dict("records"):
        out[_metric_key(f"drift_score.{r['feature']}")] = float(r["score"])
    for m in _PERF:
        for key, source in ((m, m), (f"estimated_{m}", f"{m}_estimated")):
            if source in overall:
                out[key] = float(overall[source])
    if "labelled" in overall:
        out["labelled"] = float(overall["labelled"])
    for key in ("latency_p50_ms", "latency_p95_ms", "latency_p99_ms"):
        if key in whole:
            out[key.removesuffix("_ms")] = float(whole[key])
    for key in ("error_rate", "requests"):
        if key in whole:
            out[key] = float(whole[key])
    return out


def _page(r: MonitorReport) -> str:
    from nbmlops.core.monitor.overview import Section, frame_html, overview_html
    from nbmlops.core.monitor.report import drift_table_html

    shown = {k: v for k, v in r.metrics.items() if not k.startswith("drift_score.")}
    perf_cols = ["window_start", "n", "labelled"]
    for m in _PERF:
        perf_cols += [m, f"{m}_estimated"]
    figures = r.figures
    sections = [
        Section(
            "Drift",
            body=drift_table_html(r.drift),
            figures=[("histograms of the drifted features", figures["drift"])],
        ),
        Section(
            "Data quality",
            summary=r.quality.summary(),
            body=frame_html(r.quality.table),
        ),
        Section(
            "Performance (realized and estimated)",
            body=frame_html(r.performance.table, perf_cols),
            figures=[("performance over time", figures["performance"])],
            notes=r.notes,
        ),
        Section(
            "Service health",
            body=frame_html(r.health.table),
            figures=[("latency over time", figures["latency"])],
        ),
    ]
    return overview_html(f"Monitoring report: {r.model} v{r.version}", r.window, shown, sections)


def _log_run(r: MonitorReport, info: VersionInfo, page: str, s: Settings) -> tuple[str, str]:
    """One FINISHED run holding the metrics, the HTML report and the tables; a run that
    fails midway is deleted, so the store never keeps half a report."""
    from nbmlops.api.tracking import open_store

    client = open_store(s)
    experiment = EXPERIMENT_PREFIX + r.model
    found = client.get_experiment_by_name(experiment)
    exp_id = found.experiment_id if found is not None else client.create_experiment(experiment)
    tags = {
        MODEL_TAG: r.model,
        VERSION_TAG: str(r.version),
        "nbmlops.monitor.window": r.window,
        "nbmlops.monitor.reference": r.drift.reference_label,
        "nbmlops.model_id": info.model_id or "",
        "nbmlops.monitor.training_run": info.run_id or "",
        "mlflow.note.content": r.summary(),
    }
    run = client.create_run(exp_id, tags=tags, run_name=f"{r.model} v{r.version}")
    run_id = run.info.run_id
    try:
        import time

        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        metrics = [Metric(k, v, now, 0) for k, v in r.metrics.items() if math.isfinite(v)]
        for start in range(0, len(metrics), 1000):  # MLflow takes 1000 metrics a batch
            client.log_batch(run_id, metrics=metrics[start : start + 1000])
        if info.model_id:
            from mlflow.entities import LoggedModelInput

            client.log_inputs(run_id, models=[LoggedModelInput(info.model_id)])
        with tempfile.TemporaryDirectory(prefix="nbmlops-monitor-") as tmp:
            folder = Path(tmp)
            (folder / "report.html").write_text(page, encoding="utf-8")
            tables = folder / "tables"
            tables.mkdir()
            r.drift.features.to_csv(tables / "drift.csv", index=False)
            r.quality.table.to_csv(tables / "quality.csv", index=False)
            r.performance.table.to_csv(tables / "performance.csv", index=False)
            r.health.table.to_csv(tables / "health.csv", index=False)
            r.health.resources.to_csv(tables / "resources.csv", index=False)
            client.log_artifacts(run_id, str(folder))
        client.set_terminated(run_id, "FINISHED")
    except BaseException as err:
        # MLflow deletes a run by marking it deleted: searches and the UI no longer show it
        client.delete_run(run_id)
        if not isinstance(err, Exception) or isinstance(err, NbmlopsError):
            raise
        raise StoreError(
            f"could not log the monitoring run of {r.model} v{r.version} to MLflow: "
            f"{type(err).__name__}: {err}",
            where=found.artifact_location if found is not None else experiment,
            fix="check that the tracking store and its artifact location are writable, then "
            "run the report again (the half-logged run was deleted), or pass log=False "
            "(--no-log)",
        ) from err
    return run_id, experiment
