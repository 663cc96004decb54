"""``nbmlops.monitor``: drift, data quality, profiles, performance and service health of served
models from Python, and one report of all of them. The functions live in :mod:`nbmlops.api.monitor` and
:mod:`nbmlops.api.monitor_performance`; this name reads well in a notebook
(``nbmlops.monitor.drift(reference, current)``)."""

from nbmlops.api.monitor import (
    drift,
    drift_over_time,
    profile,
    quality,
    reference_data,
    served_versions,
    traffic,
    update_profiles,
)
from nbmlops.api.monitor_performance import health, label, performance, slices
from nbmlops.api.monitor_report import MonitorReport, report

__all__ = [
    "MonitorReport",
    "drift",
    "drift_over_time",
    "health",
    "label",
    "performance",
    "profile",
    "quality",
    "reference_data",
    "report",
    "served_versions",
    "slices",
    "traffic",
    "update_profiles",
]
