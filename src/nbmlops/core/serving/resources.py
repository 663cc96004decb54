"""CPU and memory of the serving process over time, sampled off the request path.

A daemon thread wakes every ``interval`` seconds, reads this process's CPU share since the
last sample, resident memory and thread count (psutil: portable, and already a dependency),
and appends one row to the ``resources`` table of the prediction log's database
(``<home>/predictions/predictions.db``). A sample that cannot be written is counted and
skipped: monitoring never slows or stops serving.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

from nbmlops.core.serving.predlog import DB_NAME, predictions_dir

log = logging.getLogger("nbmlops.serving")

RESOURCE_COLUMNS = ("ts", "pid", "cpu_percent", "rss_bytes", "threads")
_SCHEMA = """
CREATE TABLE IF NOT EXISTS resources (
    ts REAL NOT NULL,
    pid INTEGER NOT NULL,
    cpu_percent REAL,
    rss_bytes INTEGER,
    threads INTEGER
);
CREATE INDEX IF NOT EXISTS resources_ts ON resources (ts);
"""


class ResourceSampler:
    """Samples this process's CPU and RSS every ``interval`` seconds into the log's database."""

    def __init__(self, home: str | os.PathLike[str], interval: float = 5.0):
        self.db_path = predictions_dir(home) / DB_NAME
        self.interval = interval
        self.samples = 0
        self.errors = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> ResourceSampler:
        if self.interval > 0 and self._thread is None:
            self._stop.clear()
            self._thread = threading.Thread(target=self._run, name="nbmlops-resources", daemon=True)
            self._thread.start()
        return self

    def close(self, timeout: float = 5.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None

    def _run(self) -> None:
        import psutil

        proc = psutil.Process()
        proc.cpu_percent(None)  # the first call only starts the measurement
        conn: sqlite3.Connection | None = None
        try:
            while not self._stop.wait(self.interval):
                try:
                    with proc.oneshot():
                        row = (
                            time.time(),
                            proc.pid,
                            proc.cpu_percent(None),
                            proc.memory_info().rss,
                            proc.num_threads(),
                        )
                    if conn is None:
                        conn = _connect(self.db_path)
                    with conn:
                        conn.execute("INSERT INTO resources VALUES (?, ?, ?, ?, ?)", row)
                    self.samples += 1
                except Exception as err:  # never let monitoring take the gateway down
                    self.errors += 1
                    if self.errors == 1:
                        log.warning("resource sample not written: %s", err)
                    if conn is not None:
                        with contextlib.suppress(sqlite3.Error):
                            conn.close()
                    conn = None
        finally:
            if conn is not None:
                conn.close()


def _connect(path: Path) -> sqlite3.Connection:
    path.parent.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(path, timeout=1.0, check_same_thread=False)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.executescript(_SCHEMA)
    return conn


def read_resources(home: str | os.PathLike[str]) -> Any:
    """Every resource sample under ``<home>/predictions`` as a DataFrame, oldest first:
    ts, time (UTC), pid, cpu_percent, rss_bytes, threads (empty when none was taken)."""
    import pandas as pd

    db = predictions_dir(home) / DB_NAME
    rows: list[tuple[Any, ...]] = []
    if db.is_file():
        conn = sqlite3.connect(f"{db.resolve().as_uri()}?mode=ro", uri=True, timeout=5)
        try:
            rows = conn.execute(
                f"SELECT {', '.join(RESOURCE_COLUMNS)} FROM resources ORDER BY ts"
            ).fetchall()
        except sqlite3.OperationalError as err:
            if "no such table" not in str(err):
                raise
        finally:
            conn.close()
    frame = pd.DataFrame(rows, columns=list(RESOURCE_COLUMNS))
    frame = frame.astype(
        {"ts": "float64", "pid": "int64", "cpu_percent": "float64", "rss_bytes": "int64",
         "threads": "int64"}
    )  # fmt: skip
    frame["time"] = pd.to_datetime(frame["ts"], unit="s", utc=True)
    return frame
