"""Profiles of the prediction log, one per model version and time window, kept beside it in
``<home>/predictions/profiles.db`` (SQLite: one row per window, one per column and window,
each sketch a blob), so a month of traffic is read as ~720 small rows per column.

:func:`update_profiles` profiles the windows of the log that have ended and have no profile
yet; a window is written in one transaction, so a crash leaves it whole or absent.
"""

from __future__ import annotations

import math
import os
import sqlite3
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from nbmlops.core.monitor.profile import ColumnProfile, Profile, profile_frame
from nbmlops.core.serving.predlog import predictions_dir

if TYPE_CHECKING:
    from nbmlops.core.monitor.summary import Kind

__all__ = ["PROFILES_DB", "ProfileStore", "update_profiles"]

PROFILES_DB = "profiles.db"
_SCHEMA = """
CREATE TABLE IF NOT EXISTS windows (
    id INTEGER PRIMARY KEY,
    model TEXT NOT NULL,
    version INTEGER NOT NULL,
    start REAL NOT NULL,
    end REAL NOT NULL,
    rows INTEGER NOT NULL,
    created REAL NOT NULL,
    UNIQUE (model, version, start)
);
CREATE INDEX IF NOT EXISTS windows_span ON windows (model, start);
CREATE TABLE IF NOT EXISTS columns (
    window INTEGER NOT NULL REFERENCES windows (id),
    name TEXT NOT NULL,
    kind TEXT NOT NULL,
    rows INTEGER NOT NULL,
    nulls INTEGER NOT NULL,
    mean REAL, m2 REAL, min REAL, max REAL,
    exact TEXT,
    sketch BLOB,
    PRIMARY KEY (window, name)
);
"""
_CHUNK = 2000  # column rows read and merged at a time
_FIELDS = ("kind", "rows", "nulls", "mean", "m2", "min", "max", "exact", "sketch")


class ProfileStore:
    """The profiles of one project's prediction log."""

    def __init__(self, home: str | os.PathLike[str]):
        self.path = predictions_dir(home) / PROFILES_DB

    def _connect(self) -> sqlite3.Connection:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(self.path, timeout=10)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.executescript(_SCHEMA)
        return conn

    def write(self, model: str, version: int, profile: Profile) -> None:
        """Store ``profile`` (with its start and end) for ``model`` version ``version``."""
        self.write_many([(model, version, profile)])

    def write_many(self, items: list[tuple[str, int, Profile]]) -> None:
        """Store several window profiles over one connection, one transaction a window (a
        window is whole or absent); a window stored before is replaced."""
        conn = self._connect()
        try:
            for model, version, profile in items:
                if profile.start is None or profile.end is None:
                    raise ValueError("a stored profile needs its window's start and end")
                with conn:
                    self._write(conn, model, version, profile)
        finally:
            conn.close()

    def _write(self, conn: sqlite3.Connection, model: str, version: int, profile: Profile) -> None:
        conn.execute(
            "DELETE FROM columns WHERE window IN (SELECT id FROM windows "
            "WHERE model = ? AND version = ? AND start = ?)",
            (model, version, profile.start),
        )
        conn.execute(
            "DELETE FROM windows WHERE model = ? AND version = ? AND start = ?",
            (model, version, profile.start),
        )
        cur = conn.execute(
            "INSERT INTO windows (model, version, start, end, rows, created) "
            "VALUES (?, ?, ?, ?, ?, ?)",
            (model, version, profile.start, profile.end, profile.rows, time.time()),
        )
        wid = cur.lastrowid
        conn.executemany(
            f"INSERT INTO columns (window, name, {', '.join(_FIELDS)}) "
            f"VALUES (?, ?, {', '.join('?' * len(_FIELDS))})",
            [
                (wid, name, *(rec[f] for f in _FIELDS))
                for name, rec in ((n, c.to_record()) for n, c in profile.columns.items())
            ],
        )

    def windows(
        self, model: str | None = None, since: float | None = None, until: float | None = None
    ) -> list[dict[str, Any]]:
        """The stored windows (model, version, start, end, rows), oldest first."""
        if not self.path.is_file():
            return []
        where, args = _where(model, since, until)
        conn = self._connect()
        try:
            cur = conn.execute(
                f"SELECT model, version, start, end, rows FROM windows{where} ORDER BY start",
                args,
            )
            return [
                dict(zip(("model", "version", "start", "end", "rows"), r, strict=True)) for r in cur
            ]
        finally:
            conn.close()

    def merged(
        self, model: str | None = None, since: float | None = None, until: float | None = None
    ) -> Profile | None:
        """One profile of every window of ``model`` that starts in ``[since, until)``."""
        if not self.path.is_file():
            return None
        where, args = _where(model, since, until)
        conn = self._connect()
        try:
            head = conn.execute(
                f"SELECT COUNT(*), SUM(rows), MIN(start), MAX(end) FROM windows{where}", args
            ).fetchone()
            if not head or not head[0]:
                return None
            cursor = conn.execute(
                f"SELECT name, {', '.join(_FIELDS)} FROM columns WHERE window IN "
                f"(SELECT id FROM windows{where})",
                args,
            )
            # Merged a chunk at a time, so memory holds one chunk of sketches, not the month.
            merged: dict[str, ColumnProfile] = {}
            while chunk := cursor.fetchmany(_CHUNK):
                by_name: dict[str, list[ColumnProfile]] = {}
                for row in chunk:
                    by_name.setdefault(row[0], []).append(
                        ColumnProfile.from_record(dict(zip(_FIELDS, row[1:], strict=True)))
                    )
                for name, parts in by_name.items():
                    if name in merged:
                        parts.append(merged[name])
                    merged[name] = ColumnProfile.merge_all(parts)
        finally:
            conn.close()
        return Profile(merged, int(head[1] or 0), head[2], head[3])

    def window_profiles(
        self,
        model: str,
        version: int | None = None,
        since: float | None = None,
        until: float | None = None,
    ) -> list[Profile]:
        """Each stored window of ``model`` (``version``) that starts in ``[since, until)`` as
        its own profile (with its start and end), oldest first."""
        if not self.path.is_file():
            return []
        where, args = _where(model, since, until)
        if version is not None:
            where += " AND version = ?"
            args = (*args, int(version))
        conn = self._connect()
        try:
            heads = conn.execute(
                f"SELECT id, rows, start, end FROM windows{where} ORDER BY start", args
            ).fetchall()
            cols: dict[int, dict[str, ColumnProfile]] = {h[0]: {} for h in heads}
            cursor = conn.execute(
                f"SELECT window, name, {', '.join(_FIELDS)} FROM columns WHERE window IN "
                f"(SELECT id FROM windows{where})",
                args,
            )
            for row in cursor:
                cols[row[0]][row[1]] = ColumnProfile.from_record(
                    dict(zip(_FIELDS, row[2:], strict=True))
                )
        finally:
            conn.close()
        return [Profile(cols[i], int(rows), start, end) for i, rows, start, end in heads]

    def last_end(self, model: str) -> float | None:
        if not self.path.is_file():
            return None
        conn = self._connect()
        try:
            row = conn.execute("SELECT MAX(end) FROM windows WHERE model = ?", (model,)).fetchone()
            return None if row is None or row[0] is None else float(row[0])
        finally:
            conn.close()


def _where(
    model: str | None, since: float | None, until: float | None
) -> tuple[str, tuple[Any, ...]]:
    conds: list[str] = []
    args: list[Any] = []
    if model is not None:
        conds.append("model = ?")
        args.append(model)
    if since is not None:
        conds.append("start >= ?")
        args.append(float(since))
    if until is not None:
        conds.append("start < ?")
        args.append(float(until))
    return (" WHERE " + " AND ".join(conds) if conds else ""), tuple(args)


def update_profiles(
    home: str | os.PathLike[str],
    model: str,
    kinds: dict[str, Kind],
    *,
    window_seconds: float = 3600.0,
    now: float | None = None,
    since: float | None = None,
) -> int:
    """Profile every ended ``window_seconds`` window of ``model``'s traffic not yet profiled
    (from ``since``, or the end of the last stored window, or the log's start); returns how
    many windows were written. ``kinds`` are the reference's feature kinds."""
    from nbmlops.core.monitor.traffic import Window, traffic_frame

    store = ProfileStore(home)
    now = time.time() if now is None else now
    start = since if since is not None else store.last_end(model)
    frame = traffic_frame(home, Window(start, None), model=model)
    if frame.empty:
        return 0
    ts = frame["_ts"].to_numpy()
    first = math.floor(ts.min() / window_seconds) * window_seconds
    items: list[tuple[str, int, Profile]] = []
    edges_start = first
    while edges_start + window_seconds <= now and edges_start <= ts.max():
        end = edges_start + window_seconds
        mask = (ts >= edges_start) & (ts < end)
        if mask.any():
            part = frame[mask]
            versions = part["_version"].map(lambda v: -1 if v is None or v != v else int(v))
            for version, rows in part.groupby(versions):
                prof = profile_frame(rows, kinds=kinds, start=edges_start, end=end)
                items.append((model, int(version), prof))
        edges_start = end
    store.write_many(items)
    return len(items)


def profiles_path(home: str | os.PathLike[str]) -> Path:
    return predictions_dir(home) / PROFILES_DB
