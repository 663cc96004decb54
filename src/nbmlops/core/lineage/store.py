"""The project's lineage records: runs and the data and models they read and produced.

Written by the shipper once a run is in MLflow (so lineage never shows a run MLflow lacks),
from the same journal records, in a local SQLite file (WAL, busy timeout, idempotent upserts).
Data nodes are keyed by content digest: a data version committed before or after a run
with the same content links to it.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from nbmlops.core.tracking.redact import Redactor

if TYPE_CHECKING:
    from nbmlops.core.lineage.cells import CellRecord, CellValue

_SCHEMA = """
CREATE TABLE IF NOT EXISTS nodes (
    id TEXT PRIMARY KEY, kind TEXT NOT NULL, label TEXT NOT NULL, attrs TEXT NOT NULL,
    updated_ms INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS edges (
    src TEXT NOT NULL, dst TEXT NOT NULL, kind TEXT NOT NULL, label TEXT NOT NULL,
    PRIMARY KEY (src, dst, kind, label)
);
CREATE INDEX IF NOT EXISTS edges_dst ON edges (dst);
CREATE TABLE IF NOT EXISTS cells (
    node TEXT PRIMARY KEY, session TEXT NOT NULL, seq INTEGER NOT NULL,
    execution_count INTEGER, ts_ms INTEGER NOT NULL, notebook TEXT, record TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS cells_session ON cells (session, seq);
"""


def data_node(digest: str) -> str:
    return f"data:{digest}"


def run_node(run_key: str) -> str:
    return f"run:{run_key}"


def model_node(run_key: str, name: str) -> str:
    return f"model:{run_key}/{name}"


def undigested_node(cell: str, name: str) -> str:
    """A value recorded by shape and schema only: known only to the cell that saw it."""
    return f"data:?{cell.removeprefix('cell:')}/{name}"


@dataclass(frozen=True)
class Node:
    id: str
    kind: str  # "data" | "run" | "model" | "cell"
    label: str
    attrs: dict[str, Any]


@dataclass(frozen=True)
class Edge:
    src: str
    dst: str
    kind: str  # "input" | "output" | "produced" | "trained_on" | "loaded"
    label: str


class LineageStore:
    def __init__(self, path: str | Path):
        self.path = Path(path)
        self._lock = threading.Lock()
        self._ready = False
        self._cell_con: sqlite3.Connection | None = None

    def _cell_connection(self) -> sqlite3.Connection:
        """One connection kept open for the cell records of this process: opening and closing
        one per cell costs a WAL checkpoint and its fsyncs each time (tens of ms)."""
        if self._cell_con is None:
            with self._connect():  # the folder, WAL mode and schema
                pass
            con = sqlite3.connect(
                self.path, timeout=30, isolation_level=None, check_same_thread=False
            )
            con.execute("PRAGMA busy_timeout = 30000")
            # WAL with synchronous=NORMAL: a committed cell survives a killed process (it is in
            # the WAL file), without an fsync per cell
            con.execute("PRAGMA synchronous=NORMAL")
            self._cell_con = con
        return self._cell_con

    def close(self) -> None:
        """Close the connection kept for cell records, if any."""
        with self._lock:
            if self._cell_con is not None:
                self._cell_con.close()
                self._cell_con = None

    @contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        con = sqlite3.connect(self.path, timeout=30, isolation_level=None)
        try:
            con.execute("PRAGMA busy_timeout = 30000")
            if not self._ready:
                con.execute("PRAGMA journal_mode=WAL")
                con.executescript(_SCHEMA)
                self._ready = True
            yield con
        finally:
            con.close()

    def record_run(
        self,
        run_key: str,
        *,
        run_id: str | None,
        name: str,
        experiment: str,
        status: str,
        start_ms: int,
        end_ms: int | None,
        source: str | None,
        datasets: list[dict[str, Any]],
        models: list[dict[str, Any]],
        tracking_uri: str,
        logged_model_ids: dict[str, str] | None = None,
    ) -> None:
        """Upsert one run with its data inputs/outputs and models (idempotent)."""
        import time

        now = int(time.time() * 1000)
        rnode = run_node(run_key)
        nodes: list[tuple[str, str, str, str, int]] = [
            (
                rnode,
                "run",
                name,
                json.dumps(
                    {
                        "run_id": run_id,
                        "run_key": run_key,
                        "experiment": experiment,
                        "status": status,
                        "start_ms": start_ms,
                        "end_ms": end_ms,
                        "source": source,
                        "tracking_uri": Redactor().text(tracking_uri),  # no DB password
                    }
                ),
                now,
            )
        ]
        edges: list[tuple[str, str, str, str]] = []
        read = {d["digest"] for d in datasets if d.get("role") != "output"}
        for d in datasets:
            if d.get("role") == "output" and d["digest"] in read:
                continue  # bound again unchanged: not a new output (and no self-loop)
            dnode = data_node(d["digest"])
            nodes.append(
                (
                    dnode,
                    "data",
                    d["name"],
                    json.dumps(
                        {
                            "digest": d["digest"],
                            "data_kind": d.get("kind"),
                            "shape": d.get("shape"),
                            "schema": d.get("schema"),
                        }
                    ),
                    now,
                )
            )
            if d.get("role") == "output":
                edges.append((rnode, dnode, "output", d["name"]))
            else:
                edges.append((dnode, rnode, "input", d["name"]))
        # what a model was fitted on: read by the block, or bound in it (X = df[cols]; fit(X))
        by_name = {d["name"]: d for d in datasets if d.get("role") == "output"}
        by_name |= {d["name"]: d for d in datasets if d.get("role") == "input"}
        for m in models:
            mnode = model_node(run_key, m["name"])
            attrs = {
                "class": m.get("class"),
                "run_id": run_id,
                "run_key": run_key,
                "model_id": (logged_model_ids or {}).get(m["name"]),
            }
            nodes.append((mnode, "model", m["name"], json.dumps(attrs), now))
            edges.append((rnode, mnode, "produced", m["name"]))
            trained = by_name.get(m.get("trained_on") or "")
            if trained is not None:
                edges.append((data_node(trained["digest"]), mnode, "trained_on", trained["name"]))
        with self._lock, self._connect() as con:
            con.execute("BEGIN IMMEDIATE")  # read-then-write safely across processes
            for node in nodes:
                # a data node keeps the first variable name it was seen under as its label
                con.execute(
                    "INSERT INTO nodes VALUES (?,?,?,?,?) ON CONFLICT(id) DO UPDATE SET "
                    "attrs=excluded.attrs, updated_ms=excluded.updated_ms, "
                    "label=CASE WHEN nodes.kind='data' THEN nodes.label ELSE excluded.label END",
                    node,
                )
            con.executemany("INSERT OR IGNORE INTO edges VALUES (?,?,?,?)", edges)
            con.execute("COMMIT")

    def record_cell(self, record: CellRecord) -> None:
        """Keep one executed cell: its history row and, unless it is a tracked cell (whose run
        is its lineage), its node with edges from the data it read or loaded and to the data
        it bound. One transaction, so a killed kernel loses nothing that ran."""
        cell = record.node
        now = record.ts_ms
        nodes: list[tuple[str, str, str, str, int]] = []
        edges: list[tuple[str, str, str, str]] = []
        if not record.tracked:
            first = next((ln for ln in record.source.splitlines() if ln.strip()), "")
            attrs = {
                "session": record.session,
                "seq": record.seq,
                "execution_count": record.execution_count,
                "notebook": record.notebook,
                "cell_id": record.cell_id,
                "ts_ms": record.ts_ms,
                "first_line": first[:120],
                "error": record.error,
            }
            count = record.execution_count
            label = f"cell [{count}]" if count is not None else f"cell #{record.seq}"
            nodes.append((cell, "cell", label, json.dumps(attrs), now))
            read: set[str] = set()
            for load in record.loads:
                node = data_node(load["digest"])
                read.add(load["digest"])
                attrs_ = json.dumps({"digest": load["digest"]})
                nodes.append((node, "data", load["ref"].partition("@")[0], attrs_, now))
                edges.append((node, cell, "loaded", load["ref"]))
            for value in record.inputs:
                if value.digest is None:
                    continue  # a gap: its producer cannot be known
                read.add(value.digest)
                nodes.append((data_node(value.digest), "data", value.name, _data_attrs(value), now))
                edges.append((data_node(value.digest), cell, "input", value.name))
            for value in record.outputs:
                if value.digest is not None and value.digest in read:
                    continue  # bound again unchanged: not a new output
                node = (
                    data_node(value.digest)
                    if value.digest is not None
                    else undigested_node(cell, value.name)
                )
                nodes.append((node, "data", value.name, _data_attrs(value), now))
                edges.append((cell, node, "output", value.name))
        row = (
            cell,
            record.session,
            record.seq,
            record.execution_count,
            record.ts_ms,
            record.notebook,
            json.dumps(record.to_dict(), default=str),
        )
        with self._lock:
            con = self._cell_connection()
            con.execute("BEGIN IMMEDIATE")
            try:
                con.execute("INSERT OR REPLACE INTO cells VALUES (?,?,?,?,?,?,?)", row)
                for entry in nodes:
                    # a data node keeps the first name it was seen under (the one users
                    # know); its shape and schema are filled in when a first record only had
                    # its digest
                    con.execute(
                        "INSERT INTO nodes VALUES (?,?,?,?,?) ON CONFLICT(id) DO UPDATE SET "
                        "attrs=excluded.attrs WHERE json_extract(nodes.attrs, '$.shape') IS NULL",
                        entry,
                    )
                con.executemany("INSERT OR IGNORE INTO edges VALUES (?,?,?,?)", edges)
                con.execute("COMMIT")
            except BaseException:
                con.execute("ROLLBACK")
                raise

    def cells(self, session: str | None = None) -> list[dict[str, Any]]:
        """Executed cells as recorded (oldest first), of one kernel session or of all."""
        if not self.path.exists():
            return []
        query = "SELECT record FROM cells"
        args: tuple[str, ...] = ()
        if session is not None:
            query, args = query + " WHERE session = ?", (session,)
        with self._lock, self._connect() as con:
            rows = con.execute(query + " ORDER BY ts_ms, seq", args).fetchall()
        return [json.loads(r[0]) for r in rows]

    def nodes(self) -> list[Node]:
        if not self.path.exists():
            return []
        with self._lock, self._connect() as con:
            rows = con.execute("SELECT id, kind, label, attrs FROM nodes").fetchall()
        return [Node(r[0], r[1], r[2], json.loads(r[3])) for r in rows]

    def edges(self) -> list[Edge]:
        if not self.path.exists():
            return []
        with self._lock, self._connect() as con:
            rows = con.execute("SELECT src, dst, kind, label FROM edges").fetchall()
        return [Edge(*r) for r in rows]


def _data_attrs(value: CellValue) -> str:
    return json.dumps(
        {
            "digest": value.digest,
            "data_kind": value.kind,
            "shape": value.shape,
            "schema": value.schema,
            **({"note": value.note} if value.note else {}),
        }
    )
