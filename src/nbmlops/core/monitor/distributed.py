"""Drift and realized performance of the prediction log on a Dask cluster.

The log (``<home>/predictions``: SQLite indexed by time, plus spool files) is split into
time ranges ``[since, until)``; each range is a partition, read and reduced by one task on a
worker (workers see the project folder on shared storage, as pipeline steps on a cluster do)
and merged on the client in partition order:

- drift: each column of a partition becomes a :class:`ColumnSummary`. Categorical columns
  are exact value counts, summed. Numeric columns are their finite values sorted (8 bytes a
  value, against 20-40 bytes of JSON in the log): KS, Wasserstein and PSI are exact only on
  the values themselves, and merging sorted runs is one sort that finds the runs, so the
  merged column is the single machine's, bit for bit. (For memory that does not grow with
  the rows, drift from profiles reads KLL sketches instead, with their bounded rank error.)
- realized performance: each partition becomes its scored records, only what the metrics
  read (time, model, version, prediction, class probabilities, label): ROC AUC and the CBPE
  calibration are exact only on the records, and the JSON parsing and label join, the costly
  part, run on the workers.

Every read is read-only (``mode=ro``), so a worker that dies mid-task loses nothing: the
scheduler runs its tasks again on another worker.
"""

from __future__ import annotations

import itertools
import math
import os
import sqlite3
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from nbmlops.core.monitor.summary import ColumnSummary, Kind
from nbmlops.exceptions import UsageError

if TYPE_CHECKING:
    import pandas as pd

__all__ = [
    "PARTITION_ROWS",
    "CurrentSummary",
    "connect",
    "log_partitions",
    "merge_column",
    "models_in_window",
    "scored_on_cluster",
    "summarize_on_cluster",
]

PARTITION_ROWS = 100_000  # logged requests per partition (at least one per worker)
SCHEMES = ("tcp://", "tls://", "inproc://", "ucx://")
SCORED = ("ts", "model", "version", "prediction", "label")  # what the metrics read


def connect(address: Any) -> tuple[Any, bool]:
    """(client, whether we opened it) for a scheduler address or a ``distributed.Client``;
    a clear error naming the address when it cannot be reached or has no workers."""
    from nbmlops.core.extras import require_extra

    require_extra("dask")
    from distributed import Client

    if isinstance(address, Client):
        return address, False
    address = str(address)
    fix = (
        "Start a scheduler with `dask scheduler` and workers with `dask worker ADDRESS` on "
        "machines that see the project folder, check the address (tcp://HOST:PORT), or leave "
        "out --scheduler (scheduler=, monitor.dask_scheduler in nbmlops.yaml) to compute on "
        "this machine."
    )
    if not address.startswith(SCHEMES):
        raise UsageError(
            f"{address!r} is not a Dask scheduler address",
            fix="Pass tcp://HOST:PORT, as `dask scheduler` prints it.",
        )
    try:
        if address.startswith("tcp://"):  # fail in a moment, not after Client's timeout
            import socket

            host, _, port = address.removeprefix("tcp://").rpartition(":")
            socket.create_connection((host.strip("[]"), int(port)), timeout=3).close()
        client = Client(address, timeout=15, set_as_default=False)
    except Exception as err:
        raise UsageError(
            f"Cannot connect to the Dask scheduler at {address}: {type(err).__name__}: {err}",
            fix=fix,
        ) from None
    try:
        client.wait_for_workers(1, timeout=60)
    except Exception:
        client.close()
        raise UsageError(
            f"The Dask scheduler at {address} has no workers (waited 60 s)",
            fix=f"Start some with `dask worker {address}`.",
        ) from None
    return client, True


def _scan(
    home: str | os.PathLike[str], since: float | None, until: float | None, select: str
) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]]]:
    """(``select``'s rows over the log's database in ``[since, until)``, the spool rows in
    it): the index answers without reading the records."""
    from nbmlops.core.serving.predlog import DB_NAME, predictions_dir, read_spool

    folder = predictions_dir(home)
    db = folder / DB_NAME
    cond = [f"ts {op} ?" for op, v in ((">=", since), ("<", until)) if v is not None]
    args = [v for v in (since, until) if v is not None]
    where = " WHERE " + " AND ".join(["1 = 1", *cond])
    found: list[tuple[Any, ...]] = []
    if db.is_file():
        conn = sqlite3.connect(f"{db.resolve().as_uri()}?mode=ro", uri=True, timeout=5)
        try:
            found = conn.execute(select.format(where=where), args).fetchall()
        except sqlite3.OperationalError as err:
            if "no such table" not in str(err):
                raise
        finally:
            conn.close()
    spooled = [
        r
        for path in (sorted(folder.glob("spool-*.jsonl")) if folder.is_dir() else [])
        for r in read_spool(path)
        if (since is None or r[2] >= since) and (until is None or r[2] < until)
    ]
    return found, spooled


def _ts_bounds(home: str | os.PathLike[str], since: float | None, until: float | None) -> Any:
    """(first ts, last ts, rows) of the log in ``[since, until)``."""
    found, spooled = _scan(
        home, since, until, "SELECT min(ts), max(ts), count(*) FROM predictions{where}"
    )
    lo, hi, n = math.inf, -math.inf, 0
    if found and found[0][2]:
        lo, hi, n = found[0]
    for r in spooled:
        lo, hi, n = min(lo, r[2]), max(hi, r[2]), n + 1
    return lo, hi, n


def models_in_window(
    home: str | os.PathLike[str], since: float | None, until: float | None
) -> list[str]:
    """The models with successful served predictions in ``[since, until)``."""
    found, spooled = _scan(
        home, since, until,
        "SELECT DISTINCT model FROM predictions{where} AND status = 200 AND route != 'shadow'",
    )  # fmt: skip
    names = {r[0] for r in found} | {r[3] for r in spooled if r[5] == 200 and r[1] != "shadow"}
    return sorted(str(m) for m in names if m is not None)


def log_partitions(
    home: str | os.PathLike[str],
    since: float | None,
    until: float | None,
    *,
    parts: int | None = None,
    workers: int = 1,
    partition_rows: int = PARTITION_ROWS,
) -> list[tuple[float | None, float | None]]:
    """Disjoint time ranges whose union is ``[since, until)``: ``parts`` of them (default:
    one per ``partition_rows`` logged requests, at least one per worker), of equal span."""
    import numpy as np

    lo, hi, n = _ts_bounds(home, since, until)
    if parts is None:
        parts = max(workers, math.ceil(n / partition_rows))
    if n == 0 or parts <= 1 or not hi > lo:
        return [(since, until)]
    inner = [float(e) for e in np.linspace(lo, hi, parts + 1)[1:-1]]
    edges: list[float | None] = [since, *inner, until]
    return list(itertools.pairwise(edges))


@dataclass
class CurrentSummary:
    """One partition's (or the merged) current data: records, the feature columns seen, the
    models seen, and one summary per asked column."""

    rows: int
    columns: list[str]
    models: list[str]
    summaries: dict[str, ColumnSummary] = field(default_factory=dict)


def summarize_partition(
    home: str, since: float | None, until: float | None, model: str | None, kinds: dict[str, Kind]
) -> CurrentSummary:
    """A worker's task: the partition's records summarised column by column (a column no
    record of the partition has counts as all null)."""
    import pandas as pd

    from nbmlops.core.monitor.summary import summarize_column
    from nbmlops.core.monitor.traffic import Window, features_only, traffic_frame

    frame = traffic_frame(home, Window(since, until), model=model)
    models = [str(m) for m in pd.unique(frame["_model"].dropna())] if len(frame) else []
    feats = features_only(frame)
    out = CurrentSummary(len(feats), [str(c) for c in feats.columns], models)
    for col, kind in kinds.items():
        s = feats[col] if col in feats.columns else pd.Series([None] * len(feats), dtype=object)
        out.summaries[col] = summarize_column(s, kind, "current")
    return out


def merge_column(parts: list[ColumnSummary]) -> ColumnSummary:
    """The summary of the concatenated partitions: sorted values merged, counts summed."""
    import numpy as np
    import pandas as pd

    from nbmlops.core.monitor.stats import SortedColumn

    first = parts[0]
    rows, nulls = sum(p.rows for p in parts), sum(p.nulls for p in parts)
    if first.kind == "numeric":
        runs = [p.numeric.values for p in parts if p.numeric is not None]  # type: ignore[attr-defined]
        values = np.concatenate(runs) if runs else np.empty(0)
        values.sort(kind="stable")  # timsort: finds the sorted runs, merges them
        return ColumnSummary("numeric", rows, nulls, numeric=SortedColumn(values))
    counts = [p.counts for p in parts if p.counts is not None and len(p.counts)]
    merged = (
        pd.concat(counts).groupby(level=0, sort=False).sum()
        if counts
        else pd.Series(dtype="int64", index=pd.Index([], dtype=object))
    )
    merged.index = merged.index.astype(object)  # category labels are text, as one frame's
    return ColumnSummary("categorical", rows, nulls, counts=merged)


def summarize_on_cluster(
    client: Any,
    home: str | os.PathLike[str],
    since: float | None,
    until: float | None,
    model: str | None,
    kinds: dict[str, Kind],
    *,
    parts: int | None = None,
) -> CurrentSummary:
    """The current window of the log summarised on the cluster, merged here."""
    home = str(Path(home).resolve())
    workers = max(len(client.scheduler_info().get("workers", {})), 1)
    ranges = log_partitions(home, since, until, parts=parts, workers=workers)
    futures = client.map(
        summarize_partition,
        [home] * len(ranges),
        [a for a, _ in ranges],
        [b for _, b in ranges],
        [model] * len(ranges),
        [kinds] * len(ranges),
        pure=False,
    )
    results: list[CurrentSummary] = gather(client, futures)
    columns = list(dict.fromkeys(c for r in results for c in r.columns))
    models = list(dict.fromkeys(m for r in results for m in r.models))
    merged = CurrentSummary(sum(r.rows for r in results), columns, models)
    for col in kinds:
        merged.summaries[col] = merge_column([r.summaries[col] for r in results])
    return merged


def scored_partition(
    home: str, since: float | None, until: float | None, model: str | None, version: int | None
) -> pd.DataFrame:
    """A worker's task: the partition's scored records, only the columns the metrics read
    (what travels to the client is a few numbers a record)."""
    from nbmlops.core.monitor.labels import PROBA_PREFIX, scored_frame

    frame = scored_frame(home, since=since, until=until)
    if model is not None:
        frame = frame[frame["model"] == model]
    if version is not None:
        frame = frame[frame["version"] == int(version)]
    keep = [c for c in frame.columns if c in SCORED or str(c).startswith(PROBA_PREFIX)]
    return frame[keep]


def scored_on_cluster(
    client: Any,
    home: str | os.PathLike[str],
    until: float | None,
    *,
    model: str | None = None,
    version: int | None = None,
    parts: int | None = None,
) -> pd.DataFrame:
    """The scored records before ``until`` (the columns of :data:`SCORED` and the class
    probabilities), read on the cluster in time order."""
    import pandas as pd

    home = str(Path(home).resolve())
    workers = max(len(client.scheduler_info().get("workers", {})), 1)
    # one partition per worker: each partition reads the whole labels table to join it
    ranges = log_partitions(home, None, until, parts=parts or workers, workers=workers)
    futures = client.map(
        scored_partition,
        [home] * len(ranges),
        [a for a, _ in ranges],
        [b for _, b in ranges],
        [model] * len(ranges),
        [version] * len(ranges),
        pure=False,
    )
    frames = [f for f in gather(client, futures) if len(f.columns)]
    frame = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
    if "version" in frame.columns:
        frame["version"] = frame["version"].astype("Int64")
    if "label" in frame.columns and frame["label"].dtype != object:
        frame["label"] = frame["label"].astype(object)
    return frame


def gather(client: Any, futures: list[Any]) -> list[Any]:
    """The futures' results in order. A worker that died is replaced by the scheduler, which
    runs its tasks again; a task that killed worker after worker ends as one clear error."""
    from distributed import KilledWorker

    try:
        return list(client.gather(futures))
    except KilledWorker as err:
        raise UsageError(
            f"Dask workers died while reading the prediction log ({err})",
            fix="Check the workers' memory (a partition is read whole; more partitions make "
            "each smaller) and their logs; nothing was written, so run it again.",
        ) from None
    finally:
        for f in futures:
            f.release()
