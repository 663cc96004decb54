"""What a registered model was trained on, from the lineage: the ``X`` it was fitted on (the
``trained_on`` edge a tracked cell records) and the ``y`` of the same ``fit`` call, each named
by its variable, its digest and the data versions it holds or came from; where that record
stops short; and the rows themselves when they can be found, for the card's permutation
importance."""

from __future__ import annotations

import ast
import logging
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from nbmlops.core.lineage.graph import LineageGraph

__all__ = ["TrainingData", "TrainingSet", "fit_target", "training_data", "training_rows"]

log = logging.getLogger(__name__)
MAX_IMPORTANCE_ROWS = 2000  # a stable estimate at a bounded cost (10 repeats x columns)
MIN_IMPORTANCE_ROWS = 30


@dataclass
class TrainingSet:
    """One variable the model was fitted on."""

    name: str
    role: str  # "features" | "target"
    digest: str
    shape: list[int] = field(default_factory=list)
    versions: list[str] = field(default_factory=list)  # versions holding this very content
    sources: list[str] = field(default_factory=list)  # nearest versions upstream of it

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def describe(self) -> str:
        held = f" = {', '.join(self.versions)}" if self.versions else ""
        came = f", from {', '.join(self.sources)}" if self.sources and not self.versions else ""
        shape = "x".join(str(s) for s in self.shape)
        return f"{self.name} ({self.role}, {shape}{held}{came})"


@dataclass
class TrainingData:
    sets: list[TrainingSet] = field(default_factory=list)
    upstream: list[str] = field(default_factory=list)  # every data version further upstream
    gaps: list[str] = field(default_factory=list)  # where the record stops, and the fix

    @property
    def versions(self) -> list[str]:
        """The data versions the model was trained on or from (nearest first)."""
        out = [v for s in self.sets for v in (s.versions or s.sources)]
        return list(dict.fromkeys(out))

    @property
    def digests(self) -> list[str]:
        return [s.digest for s in self.sets]

    def summary(self) -> str:
        if self.sets:
            return ", ".join(s.describe() for s in self.sets)
        return "not recorded"


def fit_target(source: str, x_name: str) -> str | None:
    """The ``y`` variable of the ``fit(x_name, y)`` call in a cell's source, if any."""
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return None
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr in ("fit", "fit_transform", "fit_predict", "partial_fit")
            and len(node.args) >= 2
            and isinstance(node.args[0], ast.Name)
            and node.args[0].id == x_name
            and isinstance(node.args[1], ast.Name)
        ):
            return node.args[1].id
    for kw_node in ast.walk(tree):  # fit(X=..., y=...)
        if isinstance(kw_node, ast.Call) and isinstance(kw_node.func, ast.Attribute):
            kws = {k.arg: k.value for k in kw_node.keywords}
            x, y = kws.get("X"), kws.get("y")
            if isinstance(x, ast.Name) and x.id == x_name and isinstance(y, ast.Name):
                return y.id
    return None


def _upstream_versions(graph: LineageGraph, node: str) -> list[str]:
    """The nearest committed data versions upstream of ``node`` (breadth first)."""
    g = graph.graph
    seen, frontier = {node}, [node]
    found: list[str] = []
    while frontier and not found:
        nxt = []
        for n in frontier:
            for src, _ in g.in_edges(n):
                if src in seen:
                    continue
                seen.add(src)
                versions = g.nodes[src].get("versions") or []
                if g.nodes[src].get("kind") == "data" and versions:
                    found += versions
                else:
                    nxt.append(src)
        frontier = nxt
    return list(dict.fromkeys(found))


def training_data(graph: LineageGraph, node: str | None, source: str | None) -> TrainingData:
    """The training data of model ``node``: its ``trained_on`` input and the ``y`` of the
    ``fit`` call in the run's ``source``; every version upstream; and the gaps."""
    out = TrainingData()
    if node is None:
        out.gaps.append(
            "the model was not logged by a tracked cell, so what it was trained on is unknown. "
            "To close it: fit and bind it in a %%track cell (or an nbmlops.track block) and "
            "register that model"
        )
        return out
    import networkx as nx

    g = graph.graph
    run = next((s for s, _, d in g.in_edges(node, data=True) if d.get("kind") == "produced"), None)
    # y read by the run, or bound in it (y = df["label"]; model.fit(X, y)): inputs win
    inputs = {
        d.get("label"): dst
        for _, dst, d in (g.out_edges(run, data=True) if run else [])
        if d.get("kind") == "output"
    }
    inputs |= {
        d.get("label"): s
        for s, _, d in (g.in_edges(run, data=True) if run else [])
        if d.get("kind") == "input"
    }
    for src, _, d in g.in_edges(node, data=True):
        if d.get("kind") != "trained_on":
            continue
        x_name = str(d.get("label"))
        picked = [("features", x_name, src)]
        y_name = fit_target(source or "", x_name)
        if y_name and y_name in inputs:
            picked.append(("target", y_name, inputs[y_name]))
        for role, name, data in picked:
            attrs = g.nodes[data]
            out.sets.append(
                TrainingSet(
                    name=name,
                    role=role,
                    digest=str(attrs.get("digest")),
                    shape=list(attrs.get("shape") or []),
                    versions=list(attrs.get("versions") or []),
                    sources=_upstream_versions(graph, data),
                )
            )
    upstream = [
        v
        for n in sorted(nx.ancestors(g, node))
        if g.nodes[n].get("kind") == "data"
        for v in g.nodes[n].get("versions") or []
    ]
    out.upstream = list(dict.fromkeys(upstream))
    out.gaps = [str(gap) for gap in graph.gaps(graph.view(node))]
    if out.sets and not out.versions and not out.gaps:
        names = ", ".join(s.name for s in out.sets)
        out.gaps.append(
            f"{names} came from no committed data version. To close it: commit the data it "
            "was made from (%data commit NAME) and run the cells from there again"
        )
    return out


def training_rows(
    data: TrainingData, namespace: dict[str, Any] | None, data_store: Any | None
) -> tuple[Any, Any, str] | None:
    """(X, y, basis) of the training data, at most MAX_IMPORTANCE_ROWS rows: the notebook's
    variables when their content is the recorded one, else committed versions holding it."""
    from nbmlops.core.data.hashing import digest_value, is_digestible

    found: dict[str, Any] = {}
    where = "notebook variables"
    for s in data.sets:
        value = (namespace or {}).get(s.name)
        if value is not None and is_digestible(value):
            try:
                if digest_value(value).digest == s.digest:
                    found[s.role] = value
                    continue
            except Exception:
                log.debug("cannot digest %s", s.name, exc_info=True)
        if s.versions and data_store is not None:
            try:
                found[s.role] = data_store.load(s.versions[-1])
                where = "data versions"
            except Exception:
                log.debug("cannot load %s", s.versions[-1], exc_info=True)
    X, y = found.get("features"), found.get("target")
    if X is None or y is None or not hasattr(X, "columns") or len(X) != len(y):
        return None
    if len(X) < MIN_IMPORTANCE_ROWS:
        return None
    if len(X) > MAX_IMPORTANCE_ROWS:
        import numpy as np

        rows = np.sort(np.random.default_rng(0).choice(len(X), MAX_IMPORTANCE_ROWS, replace=False))
        X = X.iloc[rows]
        y = y.iloc[rows] if hasattr(y, "iloc") else np.asarray(y)[rows]
    names = " and ".join(s.name for s in data.sets)
    basis = f"training data {names} ({len(X)} rows, true target, from {where})"
    return X, y, basis
