"""Registered models and lineage as the JupyterLab side panel shows them, as plain JSON-ready
dicts: models with versions, aliases and the user's roles; a lineage subgraph with the layers
of the layered drawing. Read from the project's stores; nothing here writes."""

from __future__ import annotations

import re
from typing import Any

from nbmlops.api.views import json_number, nothing_tracked, store_error
from nbmlops.config import Settings
from nbmlops.core.lineage.graph import node_layers
from nbmlops.core.registry.roles import alias_role, roles_of
from nbmlops.exceptions import ModelNotFound, UsageError

__all__ = ["lineage_view", "models_view"]


def models_view(settings: Settings) -> list[dict[str, Any]]:
    """Every registered model the user may view: aliases, versions (newest first) with their
    run's metrics, the user's roles and which aliases need the approver role."""
    from nbmlops.api.registry import model_registry

    if nothing_tracked(settings):
        return []
    registry = model_registry(settings)
    c = registry.client
    user = registry.user
    try:
        found = sorted(c.search_registered_models(max_results=1000), key=lambda m: m.name)
    except Exception as err:
        raise store_error(settings, err) from err
    metrics: dict[str, dict[str, float | None]] = {}
    out = []
    for model in found:
        name = model.name
        roles = roles_of(settings.registry, user, name)
        if "viewer" not in roles:
            continue  # a model the user may not read is not listed
        aliases = {a: int(v) for a, v in sorted((model.aliases or {}).items())}
        statuses = {}
        try:
            for mv in c.search_model_versions(f"name = '{name}'"):
                statuses[int(mv.version)] = mv.status
        except Exception as err:
            raise store_error(settings, err) from err
        versions = []
        for v in reversed(registry.versions(name)):
            if v.run_id and v.run_id not in metrics:
                try:
                    data = c.get_run(v.run_id).data.metrics
                    metrics[v.run_id] = {k: json_number(x) for k, x in sorted(data.items())}
                except Exception:  # the run was deleted: the version still lists
                    metrics[v.run_id] = {}
            versions.append(
                {
                    "version": v.version,
                    "run_id": v.run_id,
                    "status": statuses.get(v.version, "READY"),
                    "aliases": v.aliases,
                    "metrics": metrics.get(v.run_id or "", {}),
                    "created": int(v.created * 1000),
                    "registered_by": v.registered_by,
                    "scan": v.scan,
                    "card_complete": v.card_complete,
                    "approvals": v.approvals,
                }
            )
        protected = sorted(
            a
            for a in {"champion", "challenger", *aliases}
            if alias_role(settings.registry, name, a) == "approver"
        )
        out.append(
            {
                "name": name,
                "aliases": aliases,
                "versions": versions,
                "roles": [r for r in ("viewer", "developer", "approver", "admin") if r in roles],
                "protected_aliases": protected,
            }
        )
    return out


def lineage_view(settings: Settings, what: str) -> dict[str, Any]:
    """The lineage of ``what`` (a run id or a prefix of one, ``NAME@alias`` of a registered
    model, ``models:/NAME/VERSION``, a data version ``NAME@k``, ``runs:/ID/NAME``): nodes with
    kind, label, layer (left to right) and order within the layer, and edges."""
    from nbmlops.api.lineage import lineage_graph

    graph = lineage_graph(settings)
    focus, registered = _lineage_focus(settings, graph, what.strip())
    view = graph.view(focus)
    g = view.graph
    for node_id, label, source in registered:
        g.add_node(node_id, kind="registered", label=label)
        g.add_edge(source, node_id)
    layers = node_layers(g)
    order: dict[str, int] = {}
    by_layer: dict[int, list[str]] = {}
    for node in sorted(g.nodes, key=lambda n: (layers[n], str(g.nodes[n].get("label", n)), n)):
        by_layer.setdefault(layers[node], []).append(node)
        order[node] = len(by_layer[layers[node]]) - 1
    focus_id = registered[0][0] if registered else focus
    return {
        "focus": focus_id,
        "nodes": [
            {
                "id": n,
                "kind": g.nodes[n].get("kind", "?"),
                "label": graph.label(n, g)
                if g.nodes[n].get("kind") != "registered"
                else g.nodes[n]["label"],
                "layer": layers[n],
                "order": order[n],
                "run_id": g.nodes[n].get("run_id"),
            }
            for n in sorted(g.nodes, key=lambda n: (layers[n], order[n]))
        ],
        "edges": [{"source": a, "target": b} for a, b in sorted(g.edges)],
    }


_MODEL_URI = re.compile(r"models:/([^/@]+)/([0-9]+)")
_RUN_PREFIX = re.compile(r"[0-9a-f]{6,31}")


def _lineage_focus(
    settings: Settings, graph: Any, what: str
) -> tuple[str, list[tuple[str, str, str]]]:
    """(focus node, registered-version nodes to add: (id, label, model node))."""
    if not what:
        raise UsageError(
            "Nothing to show the lineage of",
            fix="Ask for a run id, NAME@alias, models:/NAME/VERSION or a data version NAME@k.",
        )
    m = _MODEL_URI.fullmatch(what)
    name_alias = what.partition("@")
    if m or ("@" in what and not name_alias[2].isdigit() and "/" not in what):
        from nbmlops.api.registry import model_registry

        registry = model_registry(settings)
        name = m[1] if m else name_alias[0]
        if m:
            version = int(m[2])
            alias = None
        else:
            alias = name_alias[2]
            held = registry.aliases(name)
            if alias not in held:
                raise UsageError(
                    f"Model {name!r} has no alias @{alias}",
                    fix="Its aliases: " + (", ".join(f"@{a}" for a in held) or "none") + ".",
                )
            version = held[alias]
        info = next((v for v in registry.versions(name) if v.version == version), None)
        if info is None:
            raise ModelNotFound(f"Model {name!r} has no version {version}")
        source = _model_node(graph, info.model_id, info.run_id)
        label = f"{name} v{version}" + (f" @{alias}" if alias else "")
        return source, [(f"registered:{name}/{version}", label, source)]
    if _RUN_PREFIX.fullmatch(what):
        hits = sorted(
            n
            for n, a in graph.graph.nodes(data=True)
            if a.get("kind") == "run" and str(a.get("run_id") or "").startswith(what)
        )
        if len(hits) == 1:
            return hits[0], []
        if len(hits) > 1:
            raise UsageError(
                f"{what!r} starts {len(hits)} run ids",
                fix="Give more characters of the run id.",
            )
    return graph.resolve(what), []


def _model_node(graph: Any, model_id: str | None, run_id: str | None) -> str:
    """The lineage node of a registered version: its logged model, else its run."""
    fallback = None
    for node, attrs in graph.graph.nodes(data=True):
        if model_id and attrs.get("kind") == "model" and attrs.get("model_id") == model_id:
            return str(node)
        if run_id and attrs.get("kind") == "run" and attrs.get("run_id") == run_id:
            fallback = str(node)
    if fallback is None:
        raise UsageError(
            f"The run {run_id} behind this model version is not in the lineage",
            fix="Only models registered from tracked runs have lineage.",
        )
    return fallback
