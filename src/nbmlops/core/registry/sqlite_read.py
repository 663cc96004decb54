"""Read-only registry answers (a model's versions, an alias's history) straight from the
project's SQLite MLflow store, without importing MLflow.

Why not MlflowClient: importing MLflow and opening its SQLAlchemy store (which checks the
schema's migrations) takes 2-4 s on a busy machine, for what three SELECTs answer in a few
milliseconds (``python -X importtime -m nbmlops.cli.main model versions M``: mlflow ~1.6 s of
~2.5 s; ``bench/bench_cli.py`` measures the commands). A resident helper process would also
be fast, but a CLI command would then depend on a process outliving it; lazy imports alone
cannot help, MLflow being the work itself.

The tables and columns read here are MLflow's (``registered_models``, ``model_versions``,
their tags and aliases). Every read first checks that they hold the columns used; any
mismatch (another MLflow schema), a store that is not a local SQLite file, or a model not found
returns None, and the caller asks MLflow the slow, always-right way (which also words the
errors). The database is opened read-only, in its WAL snapshot, so a read never blocks or
changes a writer.
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from nbmlops.core.registry.context import approvals_of
from nbmlops.core.registry.history import metrics_tag
from nbmlops.core.registry.names import HISTORY_TAG
from nbmlops.core.registry.records import AliasEvent, VersionInfo

__all__ = ["read_history", "read_versions", "sqlite_path"]

# MLflow marks a deleted version with this stage and keeps the row (its search hides them).
_DELETED_STAGE = "Deleted_Internal"
_NEEDED = {
    "registered_models": {"name"},
    "model_versions": {"name", "version", "creation_time", "run_id", "source", "current_stage"},
    "model_version_tags": {"key", "value", "name", "version"},
    "registered_model_tags": {"key", "value", "name"},
    "registered_model_aliases": {"alias", "version", "name"},
}


def sqlite_path(tracking_uri: str) -> Path | None:
    """The database file of a ``sqlite:///`` tracking URI, if it exists."""
    prefix = "sqlite:///"
    if not tracking_uri.startswith(prefix):
        return None
    path = Path(tracking_uri[len(prefix) :].split("?", 1)[0])
    return path if path.is_file() else None


@contextlib.contextmanager
def _connect(path: Path) -> Iterator[sqlite3.Connection | None]:
    try:
        conn = sqlite3.connect(f"{path.as_uri()}?mode=ro", uri=True, timeout=5.0)
    except sqlite3.Error:
        yield None
        return
    try:
        yield conn
    finally:
        conn.close()


def _workspace_clause(conn: sqlite3.Connection) -> tuple[str, dict[str, Any]] | None:
    """The WHERE part selecting MLflow's default workspace ('' when the schema has none), or
    None when a needed table or column is missing."""
    has_workspace = True
    for table, needed in _NEEDED.items():
        cols = {row[1] for row in conn.execute(f"PRAGMA table_info({table})")}
        if not needed <= cols:
            return None
        has_workspace = has_workspace and "workspace" in cols
    return (" AND workspace = :ws", {"ws": "default"}) if has_workspace else ("", {})


def read_versions(tracking_uri: str, name: str) -> list[VersionInfo] | None:
    """Every live version of ``name``, oldest first, as ModelRegistry.versions gives them;
    None when this store cannot be read here or has no such model."""
    path = sqlite_path(tracking_uri)
    if path is None:
        return None
    try:
        with _connect(path) as conn:
            if conn is None:
                return None
            return _versions(conn, name)
    except sqlite3.Error:
        return None


def _versions(conn: sqlite3.Connection, name: str) -> list[VersionInfo] | None:
    found = _workspace_clause(conn)
    if found is None:
        return None
    ws, args = found
    args = {**args, "name": name, "deleted": _DELETED_STAGE}
    if not conn.execute(f"SELECT 1 FROM registered_models WHERE name = :name{ws}", args).fetchone():
        return None
    aliases: dict[int, list[str]] = {}
    for alias, version in conn.execute(
        f"SELECT alias, version FROM registered_model_aliases WHERE name = :name{ws}", args
    ):
        aliases.setdefault(int(version), []).append(alias)
    tags: dict[int, dict[str, str]] = {}
    for version, key, value in conn.execute(
        f"SELECT version, key, value FROM model_version_tags WHERE name = :name{ws}", args
    ):
        tags.setdefault(int(version), {})[key] = value
    out = []
    for version, created, run_id, source in conn.execute(
        "SELECT version, creation_time, run_id, source FROM model_versions "
        f"WHERE name = :name AND coalesce(current_stage, '') != :deleted{ws} ORDER BY version",
        args,
    ):
        v = int(version)
        t = tags.get(v, {})
        model_id = t.get("nbmlops.model_id")
        if not model_id and isinstance(source, str) and source.startswith("models:/m-"):
            model_id = source.removeprefix("models:/").split("/", 1)[0]
        out.append(
            VersionInfo(
                name=name,
                version=v,
                aliases=sorted(aliases.get(v, [])),
                run_id=run_id or None,
                model_id=model_id or None,
                created=(created or 0) / 1000,
                registered_by=t.get("nbmlops.registered_by", "?"),
                scan=t.get("nbmlops.scan", "not scanned"),
                card_complete=t.get("nbmlops.card.complete") == "true",
                approvals=[a["user"] for a in approvals_of(t)],
                data_versions=[
                    d.strip() for d in t.get("nbmlops.data_versions", "").split(",") if d.strip()
                ],
                metrics=metrics_tag(t.get("nbmlops.metrics")),
            )
        )
    return out


def read_history(tracking_uri: str, name: str, alias: str) -> list[AliasEvent] | None:
    """Every recorded move of ``alias`` of ``name``, oldest first; None when this store
    cannot be read here, has no such model, or its history tag is not valid JSON."""
    path = sqlite_path(tracking_uri)
    if path is None:
        return None
    try:
        with _connect(path) as conn:
            if conn is None:
                return None
            found = _workspace_clause(conn)
            if found is None:
                return None
            ws, args = found
            args = {**args, "name": name, "key": HISTORY_TAG + alias}
            exists = conn.execute(
                f"SELECT 1 FROM registered_models WHERE name = :name{ws}", args
            ).fetchone()
            if not exists:
                return None
            row = conn.execute(
                f"SELECT value FROM registered_model_tags WHERE name = :name AND key = :key{ws}",
                args,
            ).fetchone()
    except sqlite3.Error:
        return None
    if not row or not row[0]:
        return []
    try:
        events = json.loads(row[0])
    except ValueError:
        return None  # MLflow's path words the error and its fix
    if not isinstance(events, list):
        return []
    return [
        AliasEvent(
            action=str(e.get("action")),
            version=e.get("version"),
            previous=e.get("previous"),
            user=str(e.get("user", "?")),
            ts=float(e.get("ts", 0.0)),
            override=e.get("override"),
        )
        for e in events
        if isinstance(e, dict) and e.get("action") != "base"
    ]
