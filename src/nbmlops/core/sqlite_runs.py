"""An experiment's runs read straight from the project's SQLite MLflow store, without
importing MLflow: the rows :func:`nbmlops.core.experiments.list_runs` builds from
``search_runs``, for commands that only read (``nbmlops runs ls``).

Why: importing MLflow and opening its store costs 2-4 s on a busy machine; these SELECTs take
milliseconds (see :mod:`nbmlops.core.registry.sqlite_read`, which reads the registry the same
way and for the same reason). The columns read are checked first; another schema, a store that
is not a local SQLite file, or an unknown experiment give None, and the caller asks MLflow
(which also words the errors).
"""

from __future__ import annotations

import math
import sqlite3
from typing import Any

from nbmlops.core.registry.sqlite_read import sqlite_path

__all__ = ["read_runs"]

_NEEDED = {
    "experiments": {"experiment_id", "name", "lifecycle_stage"},
    "runs": {
        "run_uuid",
        "name",
        "user_id",
        "status",
        "start_time",
        "end_time",
        "lifecycle_stage",
        "experiment_id",
    },
    "params": {"key", "value", "run_uuid"},
    "latest_metrics": {"key", "value", "is_nan", "run_uuid"},
    "tags": {"key", "value", "run_uuid"},
}


def read_runs(
    tracking_uri: str, experiment: str | None, configured: str | None, max_results: int = 5000
) -> tuple[str | None, list[dict[str, Any]]] | None:
    """(experiment name, its active runs newest first, as list_runs' rows). Without
    ``experiment``: ``configured`` when it exists, else the experiment of the latest run (None
    and no rows for an empty store). None when this store cannot be read here."""
    path = sqlite_path(tracking_uri)
    if path is None:
        return None
    try:
        conn = sqlite3.connect(f"{path.as_uri()}?mode=ro", uri=True, timeout=5.0)
    except sqlite3.Error:
        return None
    try:
        return _read(conn, experiment, configured, max_results)
    except sqlite3.Error:
        return None
    finally:
        conn.close()


def _read(
    conn: sqlite3.Connection, experiment: str | None, configured: str | None, limit: int
) -> tuple[str | None, list[dict[str, Any]]] | None:
    workspace = True
    for table, needed in _NEEDED.items():
        cols = {row[1] for row in conn.execute(f"PRAGMA table_info({table})")}
        if not needed <= cols:
            return None
        if table == "experiments":
            workspace = "workspace" in cols
    ws = " AND workspace = 'default'" if workspace else ""
    known = dict(
        conn.execute(
            f"SELECT name, experiment_id FROM experiments WHERE lifecycle_stage = 'active'{ws}"
        ).fetchall()
    )
    if experiment is None:
        experiment = configured if configured in known else None
    if experiment is None:
        latest = conn.execute(
            "SELECT e.name FROM runs r JOIN experiments e ON r.experiment_id = e.experiment_id "
            f"WHERE e.lifecycle_stage = 'active'{ws.replace('workspace', 'e.workspace')} "
            "ORDER BY r.start_time DESC LIMIT 1"
        ).fetchone()
        experiment = latest[0] if latest else (sorted(known)[0] if known else None)
        if experiment is None:
            return None, []
    if experiment not in known:
        return None  # MLflow's path says so, with the known experiments
    runs = conn.execute(
        "SELECT run_uuid, name, status, start_time, end_time, user_id FROM runs "
        "WHERE experiment_id = ? AND lifecycle_stage = 'active' "
        "ORDER BY start_time DESC, run_uuid LIMIT ?",
        (known[experiment], limit),
    ).fetchall()
    rows: dict[str, dict[str, Any]] = {}
    for run_id, name, status, start, end, user in runs:
        rows[run_id] = {
            "run_id": run_id,
            "name": name or "",
            "status": status,
            "start": start,
            "end": end,
            "user": user or "",
        }
    if not rows:
        return experiment, []
    ids = list(rows)
    for chunk in (ids[i : i + 500] for i in range(0, len(ids), 500)):
        marks = ",".join("?" * len(chunk))
        for key, value, run_id in conn.execute(
            f"SELECT key, value, run_uuid FROM tags WHERE run_uuid IN ({marks}) "
            "AND key IN ('mlflow.user', 'mlflow.runName')",
            chunk,
        ):
            if key == "mlflow.user" and value:
                rows[run_id]["user"] = value
            elif key == "mlflow.runName" and value and not rows[run_id]["name"]:
                rows[run_id]["name"] = value
        for key, value, run_id in conn.execute(
            f"SELECT key, value, run_uuid FROM params WHERE run_uuid IN ({marks})", chunk
        ):
            rows[run_id][f"params.{key}"] = value
        for key, value, is_nan, run_id in conn.execute(
            f"SELECT key, value, is_nan, run_uuid FROM latest_metrics WHERE run_uuid IN ({marks})",
            chunk,
        ):
            rows[run_id][f"metrics.{key}"] = math.nan if is_nan else value
    return experiment, list(rows.values())
