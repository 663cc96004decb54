"""The lineage graph: which data and cells produced which run and model, from the records
tracked cells and pipeline steps leave (``<home>/lineage.db``), with data versions' names."""

from __future__ import annotations

import logging
from typing import Any

from nbmlops.api.tracking import project_settings
from nbmlops.config import Settings
from nbmlops.core.lineage.graph import LineageGraph, LineageView, node_layers
from nbmlops.core.lineage.store import LineageStore, data_node
from nbmlops.exceptions import UsageError

__all__ = [
    "LineageGraph",
    "LineageStore",
    "LineageView",
    "data_node",
    "lineage_graph",
    "lineage_store",
    "node_layers",
    "resolve",
]

log = logging.getLogger(__name__)


def lineage_store(settings: Settings | None = None) -> LineageStore:
    """The project's lineage records (``<home>/lineage.db``)."""
    return LineageStore((settings or project_settings()).home_dir / "lineage.db")


def lineage_graph(settings: Settings | None = None) -> LineageGraph:
    """The project's lineage graph, with the data store for NAME@k names when there is one."""
    from nbmlops.api.data import store

    s = settings or project_settings()
    data_store = None
    try:
        data_store = store(s)
    except Exception:  # lineage works without the data store (no NAME@k labels)
        log.debug("no data store for lineage", exc_info=True)
    return LineageGraph(lineage_store(s), data_store)


def resolve(graph: LineageGraph, obj: Any, namespace: dict[str, Any] | None = None) -> str:
    """The node for what the user passed: a frame/array/Series (by content digest), a fitted
    estimator or a variable name (its latest tracked model), ``NAME@k``, a run id,
    ``runs:/ID/NAME``, a logged model id or a node id."""
    ns = namespace or {}
    if isinstance(obj, str):
        what = obj.strip()
        if not what:
            raise UsageError(
                "Nothing to show the lineage of",
                fix="Pass a variable, NAME@k, an MLflow run id or runs:/RUN_ID/NAME.",
            )
        if what.isidentifier() and what in ns:
            return _from_value(graph, ns[what], what, ns)
        return graph.resolve(what)
    return _from_value(graph, obj, None, ns)


def _from_value(graph: LineageGraph, value: Any, name: str | None, ns: dict[str, Any]) -> str:
    from nbmlops.core.data.hashing import digest_value, is_digestible
    from nbmlops.core.tracking.capture import is_fitted_estimator

    if is_digestible(value):
        digest = digest_value(value).digest
        node = data_node(digest)
        if node in graph.graph:
            return node
        if name is not None and (by_name := _by_name(graph, name)) is not None:
            return by_name
        raise UsageError(
            f"The content of {name or 'this ' + type(value).__name__} (digest {digest[:12]}) "
            "is not in the lineage",
            fix="Only data that a tracked cell read or bound appears: track a cell that uses it "
            "(%%track), or ask for a stored version as NAME@k.",
        )
    if is_fitted_estimator(value):
        names = [name] if name else sorted(k for k, v in ns.items() if v is value and k[0] != "_")
        for n in names:
            model = graph.latest_model(n)
            if model is not None:
                return model
        if name is not None and (by_name := _by_name(graph, name)) is not None:
            return by_name
        raise UsageError(
            f"No tracked model for {name or 'this ' + type(value).__name__}",
            fix="Pass the variable's name, e.g. nbmlops.panels.lineage('model'), once a %%track "
            "cell has bound it; or a model URI runs:/RUN_ID/NAME.",
        )
    if name is not None:
        return graph.resolve(name)
    raise UsageError(
        f"Cannot show the lineage of a {type(value).__name__}",
        fix="Pass a DataFrame, Series or array, a model variable name, NAME@k, an MLflow run id "
        "or runs:/RUN_ID/NAME.",
    )


def _by_name(graph: LineageGraph, name: str) -> str | None:
    """``name`` as a dataset, run or model name, when the variable's value is not tracked."""
    from nbmlops.exceptions import NbmlopsError

    try:
        return graph.resolve(name)
    except NbmlopsError:
        return None
