"""What the prediction log holds, cheaply: the model versions it has served (newest traffic
first) and a fingerprint that changes whenever a prediction is logged, for panels that follow
it."""

from __future__ import annotations

import os
import sqlite3
from typing import Any

from nbmlops.core.serving.predlog import DB_NAME, predictions_dir

__all__ = ["log_fingerprint", "served_versions"]


def log_fingerprint(home: str | os.PathLike[str]) -> tuple[Any, ...]:
    """The newest row of the predictions table and the size of each spool file: it changes
    when a prediction is logged, not when the gateway samples its CPU and memory into the same
    database every few seconds (so a file's size or time would not do). One indexed lookup."""
    folder = predictions_dir(home)
    if not folder.is_dir():
        return ()
    newest: Any = None
    db = folder / DB_NAME
    if db.is_file():
        conn = sqlite3.connect(f"{db.resolve().as_uri()}?mode=ro", uri=True, timeout=5)
        try:
            newest = conn.execute("SELECT MAX(rowid), MAX(ts) FROM predictions").fetchone()
        except sqlite3.OperationalError as err:
            if "no such table" not in str(err):
                raise
        finally:
            conn.close()
    spools = []
    for path in sorted(folder.glob("spool-*.jsonl")):
        try:
            spools.append((path.name, path.stat().st_size))
        except OSError:  # replayed and removed between listing and stat
            continue
    return (newest, tuple(spools))


def served_versions(home: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """(model, version, requests, last) of each version with successful predictions in the
    log's database, the most recently served first; [] when there is no log.

    One grouped SELECT over the database; the spool files (rows the gateway could not write
    yet, replayed into the database on its next write) are left out: they hold the same
    models moments later.
    """
    db = predictions_dir(home) / DB_NAME
    if not db.is_file():
        return []
    conn = sqlite3.connect(f"{db.resolve().as_uri()}?mode=ro", uri=True, timeout=5)
    try:
        rows = conn.execute(
            "SELECT model, version, COUNT(*), MAX(ts) FROM predictions "
            "WHERE status = 200 AND route != 'shadow' AND model IS NOT NULL "
            "GROUP BY model, version ORDER BY MAX(ts) DESC"
        ).fetchall()
    except sqlite3.OperationalError as err:
        if "no such table" in str(err):
            return []
        raise
    finally:
        conn.close()
    return [
        {"model": str(m), "version": None if v is None else int(v), "requests": int(n), "last": t}
        for m, v, n, t in rows
    ]
