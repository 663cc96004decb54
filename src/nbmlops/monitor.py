"""``nbmlops.monitor``: drift, data quality and profiles of served models from Python. The
functions live in :mod:`nbmlops.api.monitor`; this name reads well in a notebook
(``nbmlops.monitor.drift(reference, current)``)."""

from nbmlops.api.monitor import drift, profile, quality, reference_data, traffic, update_profiles

__all__ = ["drift", "profile", "quality", "reference_data", "traffic", "update_profiles"]
