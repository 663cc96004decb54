"""The front door: everything magics, panels, the CLI, the server extension and scripts call.

One module per capability, each typed, documented and validating its input:

- :mod:`nbmlops.api.tracking`: ``track``, ``log_metric``, ``log_param``, ``sync`` and the
  tracker the magics drive (imported here, since ``nbmlops.track`` is the common case);
- :mod:`nbmlops.api.data`: data versions (commit, load, log, diff, validate, checkout);
- :mod:`nbmlops.api.lineage`: the lineage graph of data, runs and models;
- :mod:`nbmlops.api.experiments`: runs as frames, curves and comparisons for panels;
- :mod:`nbmlops.api.registry`: register, promote with gates, rollback, approve, cards, roles;
- :mod:`nbmlops.api.serving`: the serving gateway and deployment export;
- :mod:`nbmlops.api.pipeline`: notebooks as parameterized steps, pipelines, reproduce;
- :mod:`nbmlops.api.sweep`: Optuna sweeps over a notebook's parameters;
- :mod:`nbmlops.api.audit`: the project's tamper-evident audit log.

The adapters (``nbmlops.ipython``, ``nbmlops.widgets``, ``nbmlops.cli``, ``nbmlops.server``)
import nothing from ``nbmlops.core``: ruff's banned-api rule fails the build when one does.
"""

from __future__ import annotations

from nbmlops.api.tracking import (
    log_metric,
    log_metrics,
    log_param,
    settings,
    sync,
    sync_journal,
    track,
)

__all__ = ["log_metric", "log_metrics", "log_param", "settings", "sync", "sync_journal", "track"]
