"""The prediction log: one row per request (and per shadow prediction), off the request path.

A request serialises its row to one line of JSON (a few microseconds) and appends it to a
bounded in-memory buffer (it never waits). A writer thread wakes every ``linger_seconds``,
takes what was buffered meanwhile in one go and inserts it into SQLite
(``<home>/predictions/predictions.db``, WAL, ``INSERT OR IGNORE`` keyed by request id and
route) with one statement: the batch goes in as one JSON array that SQLite unpacks itself
(``json_each``), so the writer holds the GIL for microseconds per batch. It sleeps between
batches rather than waiting on the buffer (which would wake it, and hand it the GIL, once a
request), and runs at a lower CPU priority (see :func:`_lower_thread_priority`). Together
these halve the p99 of single-row requests on a two-core machine.

When the database is slow, the buffer absorbs it; when it fails (locked past the busy
timeout, unwritable, disk full), the batch is appended to a spool file
(``spool-<pid>-<id>.jsonl``) and replayed into the database once it accepts writes again.
When the buffer is full (the writer cannot keep up at all) a row is counted as dropped instead
of slowing the request. The counts (written, spooled, dropped, replayed) are exported in
``/metrics``. Rows hold no request headers: Authorization and cookies never reach the log.

:func:`read_prediction_log` reads the database and any spool files into one DataFrame.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import queue
import sqlite3
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Any

from nbmlops.core.process import pid_alive

log = logging.getLogger("nbmlops.serving")

COLUMNS = (
    "request_id",
    "route",
    "ts",
    "model",
    "version",
    "status",
    "latency_ms",
    "inputs",
    "outputs",
    "error",
    "proba",
)
_SCHEMA = """
CREATE TABLE IF NOT EXISTS predictions (
    request_id TEXT NOT NULL,
    route TEXT NOT NULL,
    ts REAL NOT NULL,
    model TEXT,
    version INTEGER,
    status INTEGER NOT NULL,
    latency_ms REAL,
    inputs TEXT,
    outputs TEXT,
    error TEXT,
    proba TEXT,
    PRIMARY KEY (request_id, route)
);
CREATE INDEX IF NOT EXISTS predictions_ts ON predictions (ts);
"""
_INSERT = f"INSERT OR IGNORE INTO predictions ({', '.join(COLUMNS)}) VALUES ({', '.join('?' * len(COLUMNS))})"
# The same rows from one JSON array of rows (each the JSON array of COLUMNS' values).
_INSERT_JSON = (
    f"INSERT OR IGNORE INTO predictions ({', '.join(COLUMNS)}) SELECT "
    + ", ".join(f"json_extract(value, '$[{i}]')" for i in range(len(COLUMNS)))
    + " FROM json_each(?)"
)
DB_NAME = "predictions.db"
# Columns added after the first release: a database made before them gets them on open, and
# spool lines written before them are read with None there.
_ADDED = {"proba": "TEXT"}


def predictions_dir(home: str | os.PathLike[str]) -> Path:
    return Path(home) / "predictions"


def _dump(value: Any) -> str | None:
    if value is None:
        return None
    try:
        return json.dumps(value, separators=(",", ":"), default=str)
    except (TypeError, ValueError):
        return json.dumps(repr(value))


def _lower_thread_priority(nice: int = 10) -> None:
    """Nice ``nice`` for the calling thread (Linux, where a nice value is per thread).

    The writer's SQLite work runs without the GIL, but on a machine with few cores it takes a
    core that a request (or its client) was about to run on; at nice 10 it waits instead, and
    a single-row request's p99 halves on two cores. It still gets ample CPU under load: its
    work is microseconds a row.
    """
    if sys.platform != "linux":  # elsewhere PRIO_PROCESS with a thread id names a process
        return
    with contextlib.suppress(OSError):
        tid = threading.get_native_id()
        if os.getpriority(os.PRIO_PROCESS, tid) < nice:
            os.setpriority(os.PRIO_PROCESS, tid, nice)


def wait_drained(q: queue.Queue[Any], timeout: float) -> bool:
    """Wait until every item put on ``q`` was processed (task_done); False on timeout."""
    deadline = time.monotonic() + timeout
    while q.unfinished_tasks:
        if time.monotonic() > deadline:
            return False
        time.sleep(0.005)
    return True


class _RowBuffer:
    """The rows waiting for the writer: bounded, filled by any thread, emptied by one.

    Lighter than ``queue.Queue`` where it counts: the writer takes a whole batch under one
    lock (``Queue.get`` and ``task_done`` would take two locks per row, GIL time the serving
    thread waits for), and it is not woken per row.
    """

    def __init__(self, maxsize: int):
        self.maxsize = maxsize
        self._lock = threading.Lock()
        self._rows: list[str] = []
        self.unfinished = 0  # rows put and not yet written or spooled
        self.ready = threading.Event()  # set while rows wait

    def put(self, row: str) -> bool:
        with self._lock:
            if len(self._rows) >= self.maxsize:
                return False
            self._rows.append(row)
            self.unfinished += 1
        if not self.ready.is_set():
            self.ready.set()
        return True

    def take(self, n: int) -> list[str]:
        with self._lock:
            if len(self._rows) <= n:
                batch, self._rows = self._rows, []
                self.ready.clear()
            else:
                batch, self._rows = self._rows[:n], self._rows[n:]
        return batch

    def done(self, n: int) -> None:
        with self._lock:
            self.unfinished -= n

    def __len__(self) -> int:
        return len(self._rows)


class PredictionLog:
    """Bounded buffer + writer thread into SQLite, spooling to JSONL when the sink fails."""

    def __init__(
        self,
        home: str | os.PathLike[str],
        *,
        queue_size: int = 20_000,
        batch_size: int = 500,
        busy_timeout: float = 1.0,
        retry_seconds: float = 1.0,
        linger_seconds: float = 0.05,
    ):
        self.folder = predictions_dir(home)
        self.db_path = self.folder / DB_NAME
        self.batch_size = batch_size
        self.busy_timeout = busy_timeout
        self.retry_seconds = retry_seconds
        self.linger_seconds = linger_seconds
        self._buffer = _RowBuffer(queue_size)  # JSON rows
        self._spool_path = self.folder / f"spool-{os.getpid()}-{uuid.uuid4().hex[:8]}.jsonl"
        self._spool_file: Any = None
        self._conn: sqlite3.Connection | None = None
        self._json_insert = True
        self._sink_down_until = 0.0
        self._spool_pending = False
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._hurry = threading.Event()  # set: write batches without lingering
        self._dropped_lock = threading.Lock()
        self.written = 0
        self.spooled = 0
        self.replayed = 0
        self.dropped = 0
        self.sink_errors = 0
        self.last_sink_error: str | None = None

    # --- the request side --------------------------------------------------------------------
    def record(
        self,
        request_id: str,
        route: str,
        model: str | None,
        version: int | None,
        status: int,
        latency_ms: float,
        inputs: Any = None,
        outputs: Any = None,
        error: str | None = None,
        ts: float | None = None,
        proba: Any = None,
    ) -> bool:
        """Queue one row; never blocks. False (and counted as dropped) when the queue is full.

        ``proba``: a classifier's class probabilities, ``{"classes": [...], "p": [[...]]}``.
        The row is serialised here, in the caller's thread (see the module's docstring).
        """
        row = json.dumps(
            [
                request_id,
                route,
                time.time() if ts is None else ts,
                model,
                version,
                status,
                latency_ms,
                _dump(inputs),
                _dump(outputs),
                error,
                _dump(proba),
            ]
        )
        if not self._buffer.put(row):
            self._count_dropped(1)
            return False
        return True

    def _count_dropped(self, n: int) -> None:
        with self._dropped_lock:  # rows are dropped from request threads and the writer
            self.dropped += n

    @property
    def queued(self) -> int:
        return len(self._buffer)

    @property
    def unfinished(self) -> int:
        """Rows recorded and not yet in the database or a spool file."""
        return self._buffer.unfinished

    # --- lifecycle ---------------------------------------------------------------------------
    def start(self) -> PredictionLog:
        self.folder.mkdir(parents=True, exist_ok=True)
        if self._thread is None:
            self._stop.clear()
            self._thread = threading.Thread(target=self._run, name="nbmlops-predlog", daemon=True)
            self._thread.start()
        return self

    def flush(self, timeout: float = 10.0) -> bool:
        """Wait until every queued row is in the database or a spool file."""
        self._hurry.set()  # no lingering while someone waits
        deadline = time.monotonic() + timeout
        while self._buffer.unfinished:
            if time.monotonic() > deadline:
                return False
            time.sleep(0.005)
        return True

    def close(self, timeout: float = 10.0) -> None:
        """Write what is queued (spooling what the sink refuses), then stop the writer."""
        self.flush(timeout)
        self._stop.set()
        self._hurry.set()
        self._buffer.ready.set()  # the writer need not wait out its poll interval
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None
        if self._spool_file is not None:
            self._spool_file.close()
            self._spool_file = None
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def stats(self) -> dict[str, Any]:
        return {
            "written": self.written,
            "spooled": self.spooled,
            "replayed": self.replayed,
            "dropped": self.dropped,
            "queued": self.queued,
            "sink_errors": self.sink_errors,
            "last_sink_error": self.last_sink_error,
            "path": str(self.db_path),
        }

    # --- the writer thread -------------------------------------------------------------------
    def _run(self) -> None:
        _lower_thread_priority()
        next_replay = 0.0
        while True:
            if not self._buffer.ready.wait(0.2):  # idle
                if self._stop.is_set():
                    return
                if time.monotonic() >= next_replay:
                    next_replay = time.monotonic() + self.retry_seconds
                    self._replay_spools()
                continue
            # Linger to write many rows per transaction (one commit per request would cost
            # the serving thread CPU and GIL hand-offs on every request), asleep: waiting on
            # the buffer would wake the writer once a row. close() and flush() cut it short.
            self._hurry.wait(self.linger_seconds)
            batch = self._buffer.take(self.batch_size)
            if not self._buffer and not self._stop.is_set():
                self._hurry.clear()
            if not batch:
                if self._stop.is_set():
                    return
                continue
            try:
                self._write(batch)
            except Exception as err:  # the writer must survive anything
                self._count_dropped(len(batch))
                log.exception("prediction log writer: %s", err)
            finally:
                self._buffer.done(len(batch))

    def _connect(self) -> sqlite3.Connection:
        if self._conn is None:
            conn = sqlite3.connect(self.db_path, timeout=self.busy_timeout, check_same_thread=False)
            try:
                conn.execute("PRAGMA journal_mode=WAL")
                conn.execute("PRAGMA synchronous=NORMAL")
                conn.executescript(_SCHEMA)
                add_missing_columns(conn)
                try:
                    conn.execute("SELECT json_extract(value, '$[0]') FROM json_each('[[1]]')")
                    self._json_insert = True
                except sqlite3.OperationalError:  # an SQLite built without its JSON functions
                    self._json_insert = False
            except sqlite3.Error:
                conn.close()
                raise
            self._conn = conn
        return self._conn

    def _insert(self, conn: sqlite3.Connection, rows: list[tuple[Any, ...]]) -> None:
        with conn:  # one transaction per batch
            conn.executemany(_INSERT, rows)

    def _write(self, batch: list[str]) -> None:
        if time.monotonic() < self._sink_down_until:
            self._spool(batch)
            return
        try:
            conn = self._connect()
            if self._json_insert:
                with conn:  # one transaction, one statement: SQLite unpacks the rows itself
                    conn.execute(_INSERT_JSON, ("[" + ",".join(batch) + "]",))
            else:
                self._insert(conn, [tuple(json.loads(r)) for r in batch])
        except sqlite3.Error as err:
            self._sink_failed(err)
            self._spool(batch)
            return
        self.written += len(batch)
        if self._spool_pending:  # the sink is back: replay what it refused, even under load
            self._replay_spools()

    def _sink_failed(self, err: Exception) -> None:
        self.sink_errors += 1
        self.last_sink_error = f"{type(err).__name__}: {err}"
        self._sink_down_until = time.monotonic() + self.retry_seconds
        log.warning("prediction log sink failed (%s); spooling to %s", err, self._spool_path)
        if self._conn is not None:
            with contextlib.suppress(sqlite3.Error):
                self._conn.close()
            self._conn = None

    def _spool(self, rows: list[str]) -> None:
        """Append JSON rows (one a line, as :func:`read_spool` reads them)."""
        try:
            if self._spool_file is None:
                self.folder.mkdir(parents=True, exist_ok=True)
                self._spool_file = open(self._spool_path, "a", encoding="utf-8")  # noqa: SIM115
            self._spool_file.write("".join(r + "\n" for r in rows))
            self._spool_file.flush()
        except OSError as err:
            self._count_dropped(len(rows))
            self.last_sink_error = f"spool failed: {err}"
            log.error("prediction log: %d rows dropped (%s)", len(rows), err)
            return
        self.spooled += len(rows)
        self._spool_pending = True

    def _spool_files(self) -> list[Path]:
        """Our own spool files and those left by processes that are gone."""
        mine = f"spool-{os.getpid()}-"
        found = []
        for path in self.folder.glob("spool-*.jsonl"):
            if path.name.startswith(mine):
                found.append(path)
                continue
            try:
                pid = int(path.name.split("-")[1])
            except (IndexError, ValueError):
                continue
            if not pid_alive(pid):
                found.append(path)
        return sorted(found)

    def _replay_spools(self) -> None:
        if time.monotonic() < self._sink_down_until:
            return
        files = self._spool_files()
        if not files:
            self._spool_pending = False
            return
        if self._spool_file is not None:
            self._spool_file.close()
            self._spool_file = None
        for path in files:
            rows = read_spool(path)
            try:
                self._insert(self._connect(), rows)
            except sqlite3.Error as err:
                self._sink_failed(err)
                return
            path.unlink(missing_ok=True)
            self.replayed += len(rows)
            log.info("prediction log: replayed %d spooled rows from %s", len(rows), path.name)
        self._spool_pending = False


def add_missing_columns(conn: sqlite3.Connection) -> None:
    """Add the columns a database made by an earlier version lacks (see ``_ADDED``)."""
    present = {r[1] for r in conn.execute("PRAGMA table_info(predictions)")}
    for name, kind in _ADDED.items():
        if name not in present:
            with contextlib.suppress(sqlite3.OperationalError):  # another writer added it
                conn.execute(f"ALTER TABLE predictions ADD COLUMN {name} {kind}")


def read_spool(path: Path) -> list[tuple[Any, ...]]:
    rows = []
    oldest = len(COLUMNS) - len(_ADDED)
    with open(path, encoding="utf-8") as fh:
        for line in fh:
            try:
                row = json.loads(line)
            except ValueError:  # a torn last line
                continue
            if isinstance(row, list) and oldest <= len(row) <= len(COLUMNS):
                rows.append(tuple(row) + (None,) * (len(COLUMNS) - len(row)))
    return rows


def read_prediction_log(
    home: str | os.PathLike[str], *, since: float | None = None, until: float | None = None
) -> Any:
    """Every logged prediction under ``<home>/predictions`` (database and spool files) as a
    pandas DataFrame, oldest first, one row per (request_id, route); with ``since`` /
    ``until`` (epoch seconds) only those with ``since <= ts < until`` (read by the ts index).

    Columns: request_id, route (main/canary/shadow), ts (epoch seconds), time (UTC),
    model, version, status (HTTP status), latency_ms, inputs and outputs (parsed JSON: the
    request's records and the predictions), error, proba (a classifier's class
    probabilities, ``{"classes": [...], "p": [[...] one list a record]}``, else None).
    """
    import pandas as pd

    folder = predictions_dir(home)
    if not folder.is_dir() and (Path(home) / DB_NAME).is_file():
        folder = Path(home)
    rows: list[tuple[Any, ...]] = []
    db = folder / DB_NAME
    if db.is_file():
        conn = sqlite3.connect(f"{db.resolve().as_uri()}?mode=ro", uri=True, timeout=5)
        try:
            present = {r[1] for r in conn.execute("PRAGMA table_info(predictions)")}
            select = ", ".join(c if c in present else f"NULL AS {c}" for c in COLUMNS)
            where, args = _ts_range(since, until)
            rows += conn.execute(f"SELECT {select} FROM predictions{where}", args).fetchall()
        except sqlite3.OperationalError as err:
            if "no such table" not in str(err):
                raise
        finally:
            conn.close()
    for path in sorted(folder.glob("spool-*.jsonl")) if folder.is_dir() else []:
        rows += [
            r
            for r in read_spool(path)
            if (since is None or r[2] >= since) and (until is None or r[2] < until)
        ]
    # Unique (request id, route), first write wins: a spooled row replayed twice is one row.
    seen: set[tuple[Any, Any]] = set()
    unique = []
    for row in rows:
        key = (row[0], row[1])
        if key not in seen:
            seen.add(key)
            unique.append(row)
    unique.sort(key=lambda r: r[2])
    cols = list(zip(*unique, strict=True)) if unique else [()] * len(COLUMNS)
    data = dict(zip(COLUMNS, cols, strict=True))
    frame = pd.DataFrame(
        {
            "request_id": pd.Series(data["request_id"], dtype=object),
            "route": pd.Series(data["route"], dtype=object),
            "ts": pd.Series(data["ts"], dtype="float64"),
            "model": pd.Series(data["model"], dtype=object),
            "version": pd.Series(data["version"], dtype="Int64"),
            "status": pd.Series(data["status"], dtype="int64"),
            "latency_ms": pd.Series(data["latency_ms"], dtype="float64"),
            # parsed JSON as Python objects; None stays None (not NaN) in object columns
            "inputs": pd.Series([_load(v) for v in data["inputs"]], dtype=object),
            "outputs": pd.Series([_load(v) for v in data["outputs"]], dtype=object),
            "error": pd.Series(data["error"], dtype=object),
            "proba": pd.Series([_load(v) for v in data["proba"]], dtype=object),
        }
    )
    frame["time"] = pd.to_datetime(frame["ts"], unit="s", utc=True)
    return frame


def _ts_range(since: float | None, until: float | None) -> tuple[str, tuple[float, ...]]:
    conds, args = [], []
    if since is not None:
        conds.append("ts >= ?")
        args.append(float(since))
    if until is not None:
        conds.append("ts < ?")
        args.append(float(until))
    return (" WHERE " + " AND ".join(conds) if conds else ""), tuple(args)


def _load(value: Any) -> Any:
    return json.loads(value) if isinstance(value, str) else value
