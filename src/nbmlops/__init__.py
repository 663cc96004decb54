"""nbmlops: the notebook itself becomes the MLOps system.

``%load_ext nbmlops`` registers the magics; ``nbmlops.track`` / ``nbmlops.log_metric`` work in
plain Python too. Heavy libraries (mlflow, pandas, sklearn) are imported on first use only.
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"

__all__ = [
    "__version__",
    "data",
    "log_metric",
    "log_metrics",
    "log_param",
    "panels",
    "sync",
    "track",
]


def load_ipython_extension(ipython: Any) -> None:
    from nbmlops.ipython import cell_lineage
    from nbmlops.ipython.magics import load

    load(ipython)
    cell_lineage.register(ipython)  # every executed cell leaves a lineage record


def unload_ipython_extension(ipython: Any) -> None:
    from nbmlops.ipython import cell_lineage
    from nbmlops.ipython.magics import unload

    cell_lineage.unregister(ipython)
    unload(ipython)


def __getattr__(name: str) -> Any:
    # The public API lives in nbmlops.api; importing it lazily keeps `%load_ext nbmlops` fast.
    if name in ("data", "monitor", "panels"):
        import importlib

        return importlib.import_module(f"nbmlops.{name}")
    if name in {"track", "log_metric", "log_metrics", "log_param", "sync", "settings"}:
        from nbmlops import api

        return getattr(api, name)
    raise AttributeError(f"module 'nbmlops' has no attribute {name!r}")
