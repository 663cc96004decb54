"""What the JupyterLab side panel shows, as plain JSON-ready dicts: a notebook's runs, one
run in full, registered models with versions and aliases, a lineage subgraph with its layers,
and the journal's backlog. Read from the project's stores; nothing here writes."""

from __future__ import annotations

import math
import re
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from nbmlops.config import Settings
from nbmlops.core.experiments import client as store_client
from nbmlops.core.experiments import filter_runs
from nbmlops.core.lineage.graph import node_layers
from nbmlops.core.registry.roles import alias_role, roles_of
from nbmlops.core.tracking.journal import Journal, read_segment, read_ship_state
from nbmlops.core.tracking.redact import Redactor
from nbmlops.core.tracking.session import ui_url
from nbmlops.exceptions import ModelNotFound, StoreError, UsageError

if TYPE_CHECKING:
    from mlflow import MlflowClient

__all__ = [
    "MAX_RUNS",
    "RUN_ID",
    "check_artifact_path",
    "experiments_view",
    "journal_view",
    "lineage_view",
    "models_view",
    "notebook_runs",
    "read_artifact",
    "run_artifact",
    "run_summary",
    "run_view",
]

MAX_RUNS = 10_000  # a notebook's runs read for one listing (newest first)
PAGE = 1000  # runs per search_runs query
MAX_CODE_BYTES = 200_000  # a cell's source shown in the panel
MAX_ARTIFACT_BYTES = 20_000_000  # an artifact served to the panel
RUN_ID = re.compile(r"[0-9a-f]{32}")
_SOURCE_TAG = "mlflow.source.name"


def _store_error(settings: Settings, err: BaseException) -> StoreError:
    text = str(err).splitlines()[0] if str(err) else type(err).__name__
    return StoreError(
        f"Cannot read the MLflow store {Redactor().text(settings.resolved_tracking_uri)}: "
        f"{text[:300]}",
        fix="Check that the store is reachable (`nbmlops status` shows it).",
    )


def _exp_names(c: MlflowClient, settings: Settings) -> dict[str, str]:
    try:
        return {e.experiment_id: e.name for e in c.search_experiments(max_results=50000)}
    except Exception as err:
        raise _store_error(settings, err) from err


def experiments_view(settings: Settings) -> list[dict[str, Any]]:
    """Every active experiment: id, name and number of runs."""
    c = store_client(settings)
    out = []
    for exp_id, name in sorted(_exp_names(c, settings).items(), key=lambda kv: kv[1]):
        count, token = 0, None
        try:
            while True:  # MLflow has no count query: page through ids only as far as needed
                page = c.search_runs([exp_id], max_results=PAGE, page_token=token)
                count += len(page)
                token = page.token
                if not token:
                    break
        except Exception as err:
            raise _store_error(settings, err) from err
        out.append({"id": exp_id, "name": name, "runs": count})
    return out


def _ms(value: Any) -> int | None:
    return int(value) if value is not None else None


def _number(value: Any) -> float | None:
    """A JSON-safe number (NaN and infinities, which JSON lacks, become None)."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def _relative(source: str | None, root: Path | None) -> str | None:
    if not source or root is None:
        return source
    try:
        return Path(source).relative_to(root).as_posix()
    except ValueError:
        return source


def run_summary(run: Any, experiments: dict[str, str], root: Path | None) -> dict[str, Any]:
    """One run as the panel lists it (times in ms since the epoch)."""
    info, data = run.info, run.data
    tags = data.tags
    duration = _number(tags.get("nbmlops.duration_s"))
    if duration is None and info.end_time and info.start_time:
        duration = (info.end_time - info.start_time) / 1000.0
    count = tags.get("nbmlops.cell.execution_count")
    index = tags.get("nbmlops.cell.index")
    return {
        "run_id": info.run_id,
        "name": info.run_name or "",
        "status": info.status,
        "start_time": _ms(info.start_time),
        "end_time": _ms(info.end_time),
        "duration_s": duration,
        "metrics": {k: _number(v) for k, v in sorted(data.metrics.items())},
        "params": dict(sorted(data.params.items())),
        "notebook": _relative(tags.get(_SOURCE_TAG), root),
        "cell": tags.get("nbmlops.cell.id"),
        "cell_index": int(index) if index and index.isdigit() else None,
        "execution_count": int(count) if count and count.isdigit() else None,
        "experiment": experiments.get(info.experiment_id, info.experiment_id),
        "user": tags.get("mlflow.user") or info.user_id or "",
    }


def _quoted(value: str) -> str:
    """``value`` as a string literal of MLflow's filter language, which has no escapes."""
    if "'" not in value:
        return f"'{value}'"
    if '"' not in value:
        return f'"{value}"'
    raise UsageError(
        f"Cannot search for {value!r}: it holds both kinds of quote",
        fix="Rename the notebook without quotes.",
    )


def notebook_runs(
    settings: Settings,
    notebook: Path | None = None,
    *,
    experiment: str | None = None,
    limit: int = 100,
    text: str = "",
    root: Path | None = None,
) -> dict[str, Any]:
    """The runs tracked from ``notebook`` (an absolute path, as kernels record it; None for
    every run), newest first, in ``experiment`` (default: all), matching the panel filter
    ``text`` (see :func:`nbmlops.core.experiments.filter_runs`): ``{"runs", "total"}``,
    at most ``limit`` runs; ``total`` counts every match (up to :data:`MAX_RUNS`)."""
    c = store_client(settings)
    names = _exp_names(c, settings)
    if experiment is not None:
        ids = [i for i, n in names.items() if n == experiment]
        if not ids:
            known = sorted(names.values())
            raise UsageError(
                f"Unknown experiment {experiment!r}",
                fix=f"Known experiments: {', '.join(known)}."
                if known
                else "The store has no experiments yet: run a %%track cell first.",
            )
    else:
        ids = list(names)
    if not ids:
        return {"runs": [], "total": 0, "truncated": False}
    query = f"tags.`{_SOURCE_TAG}` = {_quoted(str(notebook))}" if notebook is not None else ""
    # Without a text filter only `limit` runs are built, but every match is counted.
    want = MAX_RUNS if text.strip() else limit
    runs: list[Any] = []
    total, token = 0, None
    try:
        while total < MAX_RUNS:
            page = c.search_runs(
                ids,
                filter_string=query,
                max_results=min(PAGE, MAX_RUNS - total),
                order_by=["attributes.start_time DESC"],
                page_token=token,
            )
            total += len(page)
            runs.extend(page[: max(0, want - len(runs))])
            token = page.token
            if not token:
                break
    except Exception as err:
        raise _store_error(settings, err) from err
    rows = [run_summary(r, names, root) for r in runs]
    if text.strip():
        rows = _filtered(rows, text)
        total = len(rows)
    return {"runs": rows[:limit], "total": total, "truncated": token is not None}


def _filtered(rows: list[dict[str, Any]], text: str) -> list[dict[str, Any]]:
    """The rows the panel filter keeps, through the experiments panel's own filter."""
    import pandas as pd

    if not rows:
        return rows
    frame = pd.DataFrame.from_records(
        [
            {
                "run_id": r["run_id"],
                "name": r["name"],
                "status": r["status"],
                **{f"params.{k}": v for k, v in r["params"].items()},
                **{f"metrics.{k}": v for k, v in r["metrics"].items()},
            }
            for r in rows
        ]
    )
    keep = set(filter_runs(frame, text)["run_id"])
    return [r for r in rows if r["run_id"] in keep]


def _get_run(c: MlflowClient, settings: Settings, run_id: str) -> Any:
    try:
        return c.get_run(run_id)
    except Exception as err:
        if "RESOURCE_DOES_NOT_EXIST" in str(err) or "not found" in str(err).lower():
            raise ModelNotFound(
                f"No run {run_id} in the tracking store",
                where=Redactor().text(settings.resolved_tracking_uri),
                fix="Pick a run from the panel's list; runs still in the journal appear "
                "once shipped.",
            ) from None
        raise _store_error(settings, err) from err


def run_view(
    settings: Settings, run_id: str, *, root: Path | None = None, artifact_url: str = ""
) -> dict[str, Any]:
    """One run in full: its summary, every metric's history ``[step, value, ts_ms]``, its
    models (logged and registered), data inputs, figures (``artifact_url`` + path), cell
    source and MLflow UI link."""
    c = store_client(settings)
    run = _get_run(c, settings, run_id)
    names = _exp_names(c, settings)
    out = run_summary(run, names, root)
    try:
        out["metrics_history"] = {
            key: [
                [int(m.step), _number(m.value), int(m.timestamp)]
                for m in sorted(
                    c.get_metric_history(run_id, key), key=lambda m: (m.step, m.timestamp)
                )
            ]
            for key in sorted(run.data.metrics)
        }
        out["models"] = _run_models(c, run)
        figures = [
            f.path
            for f in c.list_artifacts(run_id, "figures")
            if not f.is_dir and f.path.lower().endswith((".png", ".svg", ".jpg", ".jpeg"))
        ]
    except Exception as err:
        raise _store_error(settings, err) from err
    out["data_inputs"] = [
        {
            "name": d.dataset.name,
            "digest": d.dataset.digest,
            "version": next((t.value for t in d.tags if t.key == "nbmlops.data_version"), None),
        }
        for d in (run.inputs.dataset_inputs if run.inputs else [])
    ]
    out["figures"] = [{"name": Path(p).name, "url": artifact_url + p} for p in sorted(figures)]
    out["code"] = _cell_code(c, run_id)
    base = ui_url(settings)
    out["mlflow_url"] = (
        f"{base.rstrip('/')}/#/experiments/{run.info.experiment_id}/runs/{run_id}" if base else None
    )
    return out


def _run_models(c: MlflowClient, run: Any) -> list[dict[str, Any]]:
    """The run's logged models, each with the registered versions made from it."""
    run_id = run.info.run_id
    registered: dict[str, list[dict[str, Any]]] = {}
    for mv in c.search_model_versions(f"run_id = '{run_id}'"):
        key = (mv.tags or {}).get("nbmlops.model_id") or getattr(mv, "model_id", None) or ""
        registered.setdefault(key, []).append({"name": mv.name, "version": int(mv.version)})
    logged = c.search_logged_models(
        experiment_ids=[run.info.experiment_id], filter_string=f"source_run_id = '{run_id}'"
    )
    out = []
    for m in sorted(logged, key=lambda m: m.name):
        out.append(
            {
                "name": m.name,
                "model_id": m.model_id,
                "uri": f"runs:/{run_id}/{m.name}",
                "class": (m.tags or {}).get("nbmlops.class"),
                "registered": registered.pop(m.model_id, []),
            }
        )
    leftovers = [v for versions in registered.values() for v in versions]
    if leftovers:  # versions registered from this run without a logged model we know
        out.append({"name": None, "model_id": None, "uri": None, "registered": leftovers})
    return out


def _cell_code(c: MlflowClient, run_id: str) -> str | None:
    try:
        data = read_artifact(c, run_id, "code/cell.py")
    except (ModelNotFound, StoreError, UsageError):
        return None
    return data[:MAX_CODE_BYTES].decode("utf-8", errors="replace")


def check_artifact_path(path: str) -> str:
    """``path`` if it names a file inside a run's artifacts, else UsageError saying why."""
    bad = (
        not path
        or len(path) > 500
        or path.startswith("/")
        or "\\" in path
        or any(ord(ch) < 32 for ch in path)
        or ":" in path
        or any(part in ("", ".", "..") for part in path.split("/"))
    )
    if bad:
        raise UsageError(
            f"Invalid artifact path {path!r}: it must stay inside the run's artifacts",
            fix="Use a relative path such as figures/fig-1.png, without '..', a leading '/', "
            "'\\' or ':'.",
        )
    return path


def read_artifact(c: MlflowClient, run_id: str, path: str) -> bytes:
    """The bytes of one artifact file of a run (a path that could leave the run's artifacts
    is refused before the store is asked)."""
    import tempfile

    import mlflow.artifacts

    path = check_artifact_path(path)
    parent, _, _name = path.rpartition("/")
    try:
        listed = {f.path: f for f in c.list_artifacts(run_id, parent or None)}
    except Exception as err:
        raise StoreError(f"Cannot list the artifacts of run {run_id}: {err}") from err
    entry = listed.get(path)
    if entry is None or entry.is_dir:
        raise ModelNotFound(
            f"Run {run_id} has no artifact file {path!r}",
            fix=f"Files in {parent or 'the top folder'}: "
            + (", ".join(sorted(p.rpartition("/")[2] for p in listed)) or "none")
            + ".",
        )
    if entry.file_size is not None and entry.file_size > MAX_ARTIFACT_BYTES:
        raise UsageError(
            f"Artifact {path!r} is {entry.file_size} bytes, more than the panel shows",
            fix="Open it in the MLflow UI.",
        )
    with tempfile.TemporaryDirectory(prefix="nbmlops-artifact-") as tmp:
        local = mlflow.artifacts.download_artifacts(
            run_id=run_id, artifact_path=path, dst_path=tmp, tracking_uri=c.tracking_uri
        )
        target = Path(local).resolve()
        if not target.is_relative_to(Path(tmp).resolve()) or not target.is_file():
            raise UsageError(f"Artifact {path!r} is not a file inside the run's artifacts")
        return target.read_bytes()


def run_artifact(settings: Settings, run_id: str, path: str) -> bytes:
    """One artifact file of run ``run_id`` (see :func:`read_artifact`)."""
    c = store_client(settings)
    _get_run(c, settings, run_id)
    return read_artifact(c, run_id, path)


def models_view(settings: Settings) -> list[dict[str, Any]]:
    """Every registered model the user may view: aliases, versions (newest first) with their
    run's metrics, the user's roles and which aliases need the approver role."""
    from nbmlops.api.registry import model_registry

    registry = model_registry(settings)
    c = registry.client
    user = registry.user
    try:
        found = sorted(c.search_registered_models(max_results=1000), key=lambda m: m.name)
    except Exception as err:
        raise _store_error(settings, err) from err
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
            raise _store_error(settings, err) from err
        versions = []
        for v in reversed(registry.versions(name)):
            if v.run_id and v.run_id not in metrics:
                try:
                    data = c.get_run(v.run_id).data.metrics
                    metrics[v.run_id] = {k: _number(x) for k, x in sorted(data.items())}
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


def journal_view(settings: Settings) -> dict[str, Any]:
    """The tracking store (no password) and what the journal still holds for it: pending
    runs, quarantined lines and the age of the oldest pending run."""
    journal = Journal(settings.journal_dir)
    summary = journal.pending_summary()
    oldest: int | None = None
    for path in journal.segments():
        try:
            contents = read_segment(path)
            finished = read_ship_state(path).finished
        except OSError:  # archived by a shipper meanwhile
            continue
        for key, run in contents.runs.items():
            if key in finished:
                continue
            ts = (run.start or {}).get("ts") or run.last_ts or None
            if ts and (oldest is None or ts < oldest):
                oldest = int(ts)
    return {
        "store": Redactor().text(settings.resolved_tracking_uri),
        "pending": int(summary["pending"]),
        "open": int(summary["open"]),
        "quarantined": int(summary["quarantined"]),
        "oldest_pending_s": round(max(0.0, time.time() - oldest / 1000), 3)
        if oldest is not None
        else None,
    }


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
