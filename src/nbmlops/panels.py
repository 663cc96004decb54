"""Interactive panels for notebooks: ``nbmlops.panels.experiments()``, ``.lineage(obj)``,
``.registry(name)`` and ``.dashboard()`` (what ``%mlops`` shows). Each returns an ipywidgets 8
widget; display it (make it a cell's last expression). Without a widget front end the saved
output is a static HTML summary of the same data.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from nbmlops.widgets.dashboard import Dashboard, TabFactory
    from nbmlops.widgets.experiments import ExperimentsPanel
    from nbmlops.widgets.lineage import LineagePanel
    from nbmlops.widgets.registry import RegistryPanel

__all__ = ["dashboard", "experiments", "lineage", "register_tab", "registry"]


def _own_runs_first() -> None:
    """The runs this kernel tracked are in MLflow before a panel reads it (a batch kernel
    would otherwise leave them to the shipper that starts after it exits)."""
    from nbmlops.api.tracking import runs_in_store_now

    runs_in_store_now()


def experiments(experiment: str | None = None, *, page_size: int = 50) -> ExperimentsPanel:
    """The runs of ``experiment`` (default: ``experiment`` in nbmlops.yaml, else this
    notebook's, else the most recently active one): filter, sort, select runs to compare their
    params and metrics, curves and parallel coordinates. Refreshes when a tracked run lands."""
    from nbmlops.widgets.experiments import ExperimentsPanel

    _own_runs_first()
    return ExperimentsPanel(experiment, page_size=page_size)


def lineage(obj: Any = None) -> LineagePanel:
    """The lineage around ``obj``: a DataFrame/Series/array (by content), a model variable's
    name (or the fitted estimator itself), ``NAME@k``, an MLflow run id, ``runs:/ID/NAME`` or a
    logged model id; None for the most recent run. Pick a node to see its details."""
    from nbmlops.widgets.lineage import LineagePanel

    _own_runs_first()
    return LineagePanel(obj)


def registry(name: str | None = None) -> RegistryPanel:
    """The registered models: ``name``'s versions (run, aliases, scan, card, approvals), its
    aliases and their history, with Register, Promote, Rollback, Approve and Deploy (a KServe
    manifest, with a canary share for @challenger). Roles and gates are checked as in
    ``%promote``: a refusal shows its reason and changes nothing; moving a protected alias,
    rolling back and deploying wait for Confirm."""
    from nbmlops.widgets.registry import RegistryPanel

    _own_runs_first()
    return RegistryPanel(name)


def dashboard(tab: str | None = None) -> Dashboard:
    """Every panel in one Tab widget (Experiments, Lineage, Registry, Monitoring, and tabs added by
    :func:`register_tab`), opened on ``tab``."""
    from nbmlops.widgets.dashboard import Dashboard

    _own_runs_first()
    return Dashboard(select=tab)


def register_tab(title: str, factory: TabFactory, **kwargs: Any) -> None:
    """Add a tab to the dashboard; see :func:`nbmlops.widgets.dashboard.register_tab`."""
    from nbmlops.widgets.dashboard import register_tab as register

    register(title, factory, **kwargs)


def monitor(model: str | None = None, version: int | None = None, **options: Any) -> Any:
    """The Monitoring panel of ``model`` (default: the version the gateway served last): drift
    per feature over time, drift, performance, service health, worst slices; ``follow=True``
    refreshes it whenever a prediction is logged."""
    from nbmlops.widgets.monitor import MonitorPanel

    return MonitorPanel(model, version, **options)
