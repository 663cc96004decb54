"""Interactive panels for notebooks (ipywidgets 8): thin adapters over ``nbmlops.core``.

Each panel is traitlets state plus callbacks into the core; slow work (reading the store,
drawing figures) runs on the panel's own worker thread, and every failure shows in the panel's
error box instead of reaching the kernel log. Without a widget front end (nbconvert, a notebook
opened without its kernel) each panel still shows a static HTML summary.
"""

from __future__ import annotations

__all__ = ["Dashboard", "ExperimentsPanel", "LineagePanel", "register_tab"]


def __getattr__(name: str):
    if name == "ExperimentsPanel":
        from nbmlops.widgets.experiments import ExperimentsPanel

        return ExperimentsPanel
    if name == "LineagePanel":
        from nbmlops.widgets.lineage import LineagePanel

        return LineagePanel
    if name in ("Dashboard", "register_tab"):
        from nbmlops.widgets import dashboard

        return getattr(dashboard, name)
    raise AttributeError(f"module 'nbmlops.widgets' has no attribute {name!r}")
