"""The lineage graph: which data and cells produced which run and model, from the records
tracked cells and pipeline steps leave (``<home>/lineage.db``), with data versions' names."""

from __future__ import annotations

import difflib
import logging
import re
from typing import Any

from nbmlops.api.tracking import project_settings
from nbmlops.config import Settings
from nbmlops.core.lineage.cells import CellLineage, CellRecord
from nbmlops.core.lineage.graph import LineageGraph, LineageView, node_layers
from nbmlops.core.lineage.store import LineageStore, data_node
from nbmlops.exceptions import ModelNotFound, UsageError

__all__ = [
    "CellLineage",
    "CellRecord",
    "LineageGraph",
    "LineageStore",
    "LineageView",
    "cell_lineage",
    "data_node",
    "lineage_graph",
    "lineage_store",
    "node_layers",
    "resolve",
]

log = logging.getLogger(__name__)
_MODEL_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")


def lineage_store(settings: Settings | None = None) -> LineageStore:
    """The project's lineage records (``<home>/lineage.db``)."""
    return LineageStore((settings or project_settings()).home_dir / "lineage.db")


def cell_lineage(settings: Settings | None = None) -> CellLineage | None:
    """The recorder of every executed cell's lineage, or None when ``lineage.untracked`` is
    false in the settings."""
    s = settings or project_settings()
    if not s.lineage.untracked:
        return None
    return CellLineage(s)


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


def resolve(
    graph: LineageGraph,
    obj: Any,
    namespace: dict[str, Any] | None = None,
    *,
    settings: Settings | None = None,
) -> str:
    """The node for what the user passed: a frame/array/Series (by content digest), a fitted
    estimator or a variable name (its latest tracked model), ``NAME@k``, a registered model
    (``NAME``, ``NAME@alias``, ``models:/NAME/VERSION``), an MLflow run id or an unambiguous
    prefix of one (8 characters or more), ``runs:/ID/NAME``, a logged model id or a node id.
    ``namespace`` is the notebook's (None from a terminal, where variables do not exist)."""
    if isinstance(obj, str):
        what = obj.strip()
        if not what:
            raise UsageError("Nothing to show the lineage of", fix=_asks(namespace is not None))
        if namespace and what.isidentifier() and what in namespace:
            return _from_value(graph, namespace[what], what, namespace)
        return _from_name(graph, what, settings, in_notebook=namespace is not None)
    return _from_value(graph, obj, None, namespace or {})


def _asks(in_notebook: bool) -> str:
    variable = "a notebook variable, " if in_notebook else ""
    return (
        f"Ask for {variable}a data version NAME@k, a registered model (NAME, NAME@alias, "
        "models:/NAME/VERSION), an MLflow run id or its first 8 characters, runs:/RUN_ID/NAME "
        "or a logged model id m-...; only runs already shipped to MLflow appear."
    )


def _from_name(graph: LineageGraph, what: str, settings: Settings | None, in_notebook: bool) -> str:
    from nbmlops.exceptions import NbmlopsError

    if what in graph.graph:
        return what
    if what.startswith("models:/"):
        rest = what.removeprefix("models:/")
        if rest.startswith("m-"):
            return graph.resolve(rest)
        name, sep, version = rest.partition("/")
        if sep:
            return _registered(graph, settings, name, version=version)
        name, sep, alias = rest.partition("@")
        return _registered(graph, settings, name, alias=alias if sep else None)
    name, sep, tail = what.partition("@")
    if sep and tail and not tail.isdigit() and tail != "latest":
        # NAME@alias: data versions are NAME@<number> or NAME@latest
        return _registered(graph, settings, name, alias=tail)
    try:
        return graph.resolve(what)
    except NbmlopsError as err:
        failed = err
    if not sep and _MODEL_NAME.fullmatch(what):
        try:
            return _registered(graph, settings, what)
        except ModelNotFound:
            pass
        labelled = graph.by_label(what)  # a run, model or data name as recorded
        if labelled is not None:
            return labelled
    known = graph.names() + _registered_names(settings)
    close = difflib.get_close_matches(what, known, n=5, cutoff=0.6)
    if close:
        raise UsageError(
            f"Nothing in the lineage matches {what!r}; did you mean "
            + ", ".join(repr(c) for c in close)
            + "?",
            fix=_asks(in_notebook),
        )
    if sep and (tail.isdigit() or tail == "latest"):
        raise failed  # the data store's own message names the versions it has
    raise UsageError(f"Nothing in the lineage matches {what!r}", fix=_asks(in_notebook))


def _registered_names(settings: Settings | None) -> list[str]:
    try:
        from nbmlops.api.registry import model_registry

        client = model_registry(settings or project_settings()).client
        return [m.name for m in client.search_registered_models(max_results=500)]
    except Exception:  # suggestions only: no registry, no suggestions from it
        log.debug("no registered model names for suggestions", exc_info=True)
        return []


def _registered(
    graph: LineageGraph,
    settings: Settings | None,
    name: str,
    *,
    version: str | None = None,
    alias: str | None = None,
) -> str:
    """A registered version's node (added to the graph, fed by its logged model's node)."""
    from nbmlops.api.registry import as_version, model_registry

    versions = model_registry(settings or project_settings()).versions(name)
    if not versions:
        raise ModelNotFound(
            f"Registered model {name!r} has no versions",
            fix=f"Register one: %register MODEL {name}.",
        )
    if alias is not None:
        held = [v for v in versions if alias in v.aliases]
        if not held:
            aliases = sorted({a for v in versions for a in v.aliases})
            raise ModelNotFound(
                f"Registered model {name!r} has no alias {alias!r}",
                fix=f"Its aliases: {', '.join(aliases) or 'none yet'}. Move one with "
                f"%promote {name} VERSION --alias {alias}, or ask for models:/{name}/VERSION.",
            )
        chosen = held[0]
    elif version is not None:
        number = as_version(version)
        found = [v for v in versions if v.version == number]
        if not found:
            raise ModelNotFound(
                f"Registered model {name!r} has no version {number}",
                fix=f"Its versions: {', '.join(str(v.version) for v in versions)}.",
            )
        chosen = found[0]
    else:
        chosen = versions[-1]
    model_node = None
    if chosen.model_id:
        from nbmlops.exceptions import NbmlopsError

        try:
            model_node = graph.resolve(chosen.model_id)
        except NbmlopsError:
            model_node = None
    if model_node is None:
        raise UsageError(
            f"{name} v{chosen.version} (logged model {chosen.model_id or '?'}, run "
            f"{(chosen.run_id or '?')[:12]}) is not in the lineage",
            fix="Only models logged by a %%track cell or an nbmlops.track block appear, once "
            "their run is in MLflow (`%track sync` or `nbmlops sync` ships what is pending).",
        )
    node = f"registered:{name}/{chosen.version}"
    tags = f" ({', '.join(chosen.aliases)})" if chosen.aliases else ""
    graph.graph.add_node(node, kind="registered", label=f"{name} v{chosen.version}{tags}")
    graph.graph.add_edge(model_node, node, kind="registered", label=name)
    return node


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
        if name is not None and (shape_only := _shape_only(graph, name)) is not None:
            return shape_only
        raise UsageError(
            f"The content of {name or 'this ' + type(value).__name__} (digest {digest[:12]}) "
            "is not in the lineage",
            fix="Only data that a cell read or bound once nbmlops was loaded (with "
            "lineage.untracked on) appears: run the cell that makes it again, or ask for a "
            "stored version as NAME@k.",
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


def _shape_only(graph: LineageGraph, name: str) -> str | None:
    """The latest value bound to ``name`` that a cell recorded by shape and schema only."""
    g = graph.graph
    found = [
        (max((g.nodes[c].get("ts_ms") or 0 for c, _ in g.in_edges(n)), default=0), n)
        for n, a in g.nodes(data=True)
        if a.get("kind") == "data" and a.get("label") == name and not a.get("digest")
    ]
    return max(found)[1] if found else None


def _by_name(graph: LineageGraph, name: str) -> str | None:
    """``name`` as a dataset, run or model name, when the variable's value is not tracked."""
    from nbmlops.exceptions import NbmlopsError

    try:
        return graph.resolve(name)
    except NbmlopsError:
        return None
