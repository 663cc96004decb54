"""The lineage graph (networkx) over the lineage records, with the ways users ask about it:
by data version ``NAME@k``, by content digest, by MLflow run id, by model, and upstream or
downstream of any of them. Drawn with matplotlib; also as text for terminals."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from nbmlops.core.lineage.store import LineageStore, data_node
from nbmlops.exceptions import UsageError

if TYPE_CHECKING:
    import networkx as nx
    from matplotlib.figure import Figure

_HEX32 = re.compile(r"^[0-9a-f]{32}$")
_RUN_PREFIX = re.compile(r"^[0-9a-f]{8,31}$")  # the panels show 8 characters of a run id
_COLOURS = {
    "data": "#4c8eda",
    "run": "#f0a33b",
    "model": "#57a773",
    "registered": "#9b59b6",
    "cell": "#c9c9c9",
}


@dataclass(frozen=True)
class Gap:
    """Where a lineage stops short, and how to close it."""

    node: str
    where: str
    fix: str

    def __str__(self) -> str:
        return f"{self.where}. To close it: {self.fix}"


@dataclass
class LineageView:
    """A focus node with everything upstream and downstream of it."""

    focus: str
    graph: nx.DiGraph

    def upstream(self) -> list[str]:
        import networkx as nx

        return sorted(nx.ancestors(self.graph, self.focus))

    def downstream(self) -> list[str]:
        import networkx as nx

        return sorted(nx.descendants(self.graph, self.focus))


class LineageGraph:
    """Lineage records as a directed graph: data -> run -> data/model."""

    def __init__(self, store: LineageStore, data_store: Any | None = None):
        self.store = store
        self.data_store = data_store
        self._graph: nx.DiGraph | None = None

    @property
    def graph(self) -> nx.DiGraph:
        if self._graph is None:
            import networkx as nx

            g = nx.DiGraph()
            for node in self.store.nodes():
                g.add_node(node.id, kind=node.kind, label=node.label, **node.attrs)
            for edge in self.store.edges():
                g.add_edge(edge.src, edge.dst, kind=edge.kind, label=edge.label)
            for _node_id, attrs in g.nodes(data=True):
                if attrs.get("kind") == "data":
                    attrs["versions"] = self._versions(attrs.get("digest", ""))
            self._graph = g
        return self._graph

    def _versions(self, digest: str) -> list[str]:
        if self.data_store is None or not digest:
            return []
        try:
            return [v.ref for v in self.data_store.find_digest(digest)]
        except Exception:
            return []

    # --- resolving what the user asks about --------------------------------------------------
    def resolve(self, what: str) -> str:
        """Node id for ``NAME@k``, a run id or key, ``runs:/ID/NAME``, a model id, a digest, or a
        node id. Raises UsageError listing what can be asked for."""
        g = self.graph
        if what in g:
            return what
        if what.startswith("runs:/"):
            run_id, _, name = what.removeprefix("runs:/").partition("/")
            for node, attrs in g.nodes(data=True):
                if (
                    attrs.get("kind") == "model"
                    and attrs.get("run_id") == run_id
                    and attrs.get("label") == (name or attrs.get("label"))
                ):
                    return node
        tail = what.partition("@")[2]
        if "@" in what and self.data_store is not None and (tail.isdigit() or tail == "latest"):
            version = self.data_store.get(what)
            node = data_node(version.digest)
            if node not in g:
                g.add_node(
                    node,
                    kind="data",
                    label=version.name,
                    digest=version.digest,
                    versions=self._versions(version.digest),
                )
            return node
        if _HEX32.match(what):
            for node, attrs in g.nodes(data=True):
                if attrs.get("run_id") == what and attrs.get("kind") == "run":
                    return node
            for prefix in ("run:", "data:"):
                if prefix + what in g:
                    return prefix + what
        elif _RUN_PREFIX.match(what):
            runs = sorted(
                {
                    (attrs["run_id"], node)
                    for node, attrs in g.nodes(data=True)
                    if attrs.get("kind") == "run" and (attrs.get("run_id") or "").startswith(what)
                }
            )
            if len(runs) == 1:
                return runs[0][1]
            if len(runs) > 1:
                raise UsageError(
                    f"Run id prefix {what!r} is ambiguous: it starts "
                    + ", ".join(r for r, _ in runs[:5])
                    + (" ..." if len(runs) > 5 else ""),
                    fix="Give more characters of the run id.",
                )
        for node, attrs in g.nodes(data=True):
            if attrs.get("kind") == "model" and attrs.get("model_id") == what:
                return node
        raise UsageError(
            f"Nothing in the lineage matches {what!r}",
            fix="Ask for a data version (NAME@k), an MLflow run id (or its first 8 "
            "characters), a model (runs:/RUN_ID/NAME or a logged model id); only runs already "
            "shipped to MLflow appear.",
        )

    def by_label(self, name: str) -> str | None:
        """The latest model, else run, else data node recorded under the name ``name``."""
        g = self.graph

        def when(node: str) -> int:
            attrs = g.nodes[node]
            own = attrs.get("end_ms") or attrs.get("start_ms") or attrs.get("ts_ms")
            if own:
                return int(own)
            return max((when(src) for src, _ in g.in_edges(node) if src != node), default=0)

        for kind in ("model", "run", "data"):
            found = [
                n for n, a in g.nodes(data=True) if a.get("kind") == kind and a.get("label") == name
            ]
            if found:
                return max(found, key=lambda n: (when(n), n))
        return None

    def names(self) -> list[str]:
        """What users may type that the graph knows: run and model names, run ids, data
        names and versions (for "did you mean")."""
        out: set[str] = set()
        for _, attrs in self.graph.nodes(data=True):
            kind = attrs.get("kind")
            if kind in ("run", "model", "data") and attrs.get("label"):
                out.add(str(attrs["label"]))
            if kind == "run" and attrs.get("run_id"):
                out.add(str(attrs["run_id"]))
            out.update(attrs.get("versions") or [])
        return sorted(out)

    def latest_model(self, name: str) -> str | None:
        """The most recent model node a tracked block bound to variable ``name``."""
        best, best_ms = None, -1
        for node, attrs in self.graph.nodes(data=True):
            if attrs.get("kind") == "model" and attrs.get("label") == name:
                run = self.graph.nodes.get(f"run:{attrs.get('run_key')}", {})
                ms = run.get("end_ms") or run.get("start_ms") or 0
                if ms > best_ms:
                    best, best_ms = node, ms
        return best

    def view(self, focus: str) -> LineageView:
        import networkx as nx

        g = self.graph
        keep = {focus} | nx.ancestors(g, focus) | nx.descendants(g, focus)
        return LineageView(focus, g.subgraph(keep).copy())

    # --- rendering ------------------------------------------------------------------------------
    def label(self, node: str, graph: nx.DiGraph | None = None) -> str:
        attrs = (graph or self.graph).nodes[node]
        kind = attrs.get("kind")
        if kind == "data":
            versions = attrs.get("versions") or []
            shape = "x".join(str(s) for s in attrs.get("shape") or [])
            name = versions[-1] if versions else attrs.get("label", "?")
            if not attrs.get("digest"):
                return f"{name} [{shape}] (shape and schema only)"
            return f"{name} [{shape}] #{attrs['digest'][:10]}"
        if kind == "run":
            rid = attrs.get("run_id") or ""
            return f"run {attrs.get('label')} ({attrs.get('status')}, {rid[:12]})"
        if kind == "model":
            cls = (attrs.get("class") or "").rsplit(".", 1)[-1]
            return f"model {attrs.get('label')} {cls}".strip()
        if kind == "cell":
            return f"{attrs.get('label')}: {attrs.get('first_line') or ''}".strip()
        if kind == "registered":
            return f"registered {attrs.get('label')}"
        return str(attrs.get("label", node))

    def gaps(self, view: LineageView) -> list[Gap]:
        """Where the upstream of the view's focus stops short: data nobody recorded making,
        data recorded by shape only, a model without recorded training data."""
        g = view.graph
        out: list[Gap] = []
        for node in [*view.upstream(), view.focus]:
            attrs = g.nodes[node]
            kind = attrs.get("kind")
            name = attrs.get("label", "?")
            readers = [self.label(d, g) for _, d in g.out_edges(node)]
            read_by = f", read by {readers[0]}" if readers else ""
            if kind == "data" and not attrs.get("digest"):
                makers = [self.label(src, g) for src, _ in g.in_edges(node)]
                out.append(
                    Gap(
                        node,
                        f"{name} {attrs.get('shape')} was recorded by shape and schema only"
                        + (f" in {makers[0]}" if makers else "")
                        + f" ({attrs.get('note') or 'not digested'}), so what used it next "
                        "cannot be linked to it",
                        f"raise lineage.max_digest_bytes in nbmlops.yaml and run that cell "
                        f"again, or commit it with %data commit {name}",
                    )
                )
            elif kind == "data" and g.in_degree(node) == 0 and not attrs.get("versions"):
                out.append(
                    Gap(
                        node,
                        f"{name} #{str(attrs.get('digest'))[:10]} has no recorded origin{read_by}:"
                        " it was made before %load_ext nbmlops, with lineage.untracked off, by "
                        "code outside a cell, or changed in place after it was recorded",
                        f"run the cell that makes {name} again with nbmlops loaded (then the "
                        f"cells after it), or commit it as a data version: %data commit {name}",
                    )
                )
            elif kind == "model":
                trained = any(
                    d.get("kind") == "trained_on" for _, _, d in g.in_edges(node, data=True)
                )
                if not trained:
                    out.append(
                        Gap(
                            node,
                            f"model {name}: no training data recorded (the %%track cell that "
                            "fitted it did not see the frame or array it was fitted on)",
                            f"fit it in a %%track cell on a variable: {name}.fit(X_train, "
                            "y_train), with X_train a DataFrame or array",
                        )
                    )
        return out

    def to_text(self, view: LineageView) -> str:
        g = view.graph
        lines = [f"lineage of {self.label(view.focus, g)}"]
        up = view.upstream()
        down = view.downstream()
        layers = node_layers(g)
        lines.append("  upstream:" if up else "  upstream: (nothing recorded)")
        lines += [f"    {self.label(n, g)}" for n in sorted(up, key=lambda n: (layers[n], n))]
        lines.append("  downstream:" if down else "  downstream: (nothing recorded)")
        lines += [f"    {self.label(n, g)}" for n in sorted(down, key=lambda n: (layers[n], n))]
        gaps = self.gaps(view)
        if gaps:
            lines.append("  gaps:")
            lines += [f"    {gap}" for gap in gaps]
        return "\n".join(lines)

    def draw(self, view: LineageView, max_nodes: int = 200) -> Figure:
        """The view as a left-to-right layered drawing (data -> run -> data/model)."""
        import networkx as nx
        from matplotlib.figure import Figure

        g = view.graph
        if g.number_of_nodes() > max_nodes:
            # the nearest nodes to the focus, by one breadth-first search
            distance = nx.single_source_shortest_path_length(
                g.to_undirected(as_view=True), view.focus
            )
            keep = sorted(distance, key=distance.__getitem__)[:max_nodes]
            g = g.subgraph(keep).copy()
        for node, layer in node_layers(g).items():
            g.nodes[node]["layer"] = layer
        pos = (
            nx.multipartite_layout(g, subset_key="layer")
            if g.number_of_nodes() > 1
            else {view.focus: (0, 0)}
        )
        width = 3 + 2.5 * (1 + max((d["layer"] for _, d in g.nodes(data=True)), default=0))
        height = 2 + 0.6 * max(1, max(_layer_sizes(g).values(), default=1))
        fig = Figure(figsize=(min(width, 16), min(height, 12)))
        ax = fig.add_subplot()
        colours = [_COLOURS.get(g.nodes[n].get("kind"), "#999999") for n in g.nodes]
        sizes = [900 if n == view.focus else 500 for n in g.nodes]
        nx.draw_networkx_edges(
            g, pos, ax=ax, arrows=True, arrowsize=12, edge_color="#888888", node_size=sizes
        )
        nx.draw_networkx_nodes(
            g,
            pos,
            ax=ax,
            node_color=colours,
            node_size=sizes,
            edgecolors=["black" if n == view.focus else "white" for n in g.nodes],
        )
        nx.draw_networkx_labels(
            g,
            {n: (x, y - 0.06) for n, (x, y) in pos.items()},
            labels={n: _wrap(self.label(n, g)) for n in g.nodes},
            ax=ax,
            font_size=7,
            verticalalignment="top",
        )
        ax.set_title(f"lineage of {self.label(view.focus, g)}", fontsize=9)
        ax.axis("off")
        xs = [x for x, _ in pos.values()]
        ys = [y for _, y in pos.values()]
        # room for the labels under the nodes, also when every node sits on one row
        xpad = max(0.25, (max(xs) - min(xs)) * 0.12)
        ypad = max(0.3, (max(ys) - min(ys)) * 0.2)
        ax.set_xlim(min(xs) - xpad, max(xs) + xpad)
        ax.set_ylim(min(ys) - ypad - 0.15, max(ys) + ypad)
        fig.tight_layout()
        return fig


def node_layers(g: nx.DiGraph) -> dict[str, int]:
    """Longest-path layer of every node (data left of the run reading it, outputs right),
    over the condensation so that a content cycle across runs cannot break the drawing."""
    import networkx as nx

    cond = nx.condensation(g)
    depth: dict[int, int] = {}
    for comp in nx.topological_sort(cond):
        depth[comp] = max((depth[p] + 1 for p in cond.predecessors(comp)), default=0)
    mapping = cond.graph["mapping"]
    return {node: depth[mapping[node]] for node in g.nodes}


def _layer_sizes(g: nx.DiGraph) -> dict[int, int]:
    sizes: dict[int, int] = {}
    for _, d in g.nodes(data=True):
        sizes[d.get("layer", 0)] = sizes.get(d.get("layer", 0), 0) + 1
    return sizes


def _wrap(text: str, width: int = 24) -> str:
    words, lines, line = text.split(), [], ""
    for w in words:
        if len(line) + len(w) + 1 > width and line:
            lines.append(line)
            line = w
        else:
            line = f"{line} {w}".strip()
    lines.append(line)
    return "\n".join(lines)
