"""Delayed ground truth, joined to the prediction log by request id.

The gateway answers every prediction with a request id (``X-Request-Id`` header and
``request_id`` field); a label file names that id, the true label and, for a request of
several records, the record's position (``row``, from 0). Labels are checked whole against
the log (known ids, one label each, the model's kind of label) and written in one SQLite
transaction to ``<home>/predictions/labels.db``: all of a file or nothing.

:func:`scored_frame` gives one row per predicted record: its features, prediction, class
probabilities (``proba:<class>`` columns) and label, when it has one.
"""

from __future__ import annotations

import itertools
import json
import math
import os
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from nbmlops.core.serving.predlog import predictions_dir, read_prediction_log
from nbmlops.exceptions import UsageError

if TYPE_CHECKING:
    import pandas as pd

LABELS_DB = "labels.db"
PROBA_PREFIX = "proba:"
META = ("request_id", "row", "ts", "time", "model", "version", "route", "prediction")
_SCHEMA = """
CREATE TABLE IF NOT EXISTS labels (
    request_id TEXT NOT NULL,
    row INTEGER NOT NULL,
    label TEXT NOT NULL,
    labeled_at REAL NOT NULL,
    PRIMARY KEY (request_id, row)
);
"""
_SHOWN = 5  # ids named in an error message


@dataclass
class LabelReport:
    """What one call of :func:`attach_labels` wrote."""

    added: int
    replaced: int
    unchanged: int
    path: str

    @property
    def total(self) -> int:
        return self.added + self.replaced + self.unchanged


def labels_path(home: str | os.PathLike[str]) -> Path:
    return predictions_dir(home) / LABELS_DB


def _few(items: list[Any]) -> str:
    shown = ", ".join(repr(i) for i in items[:_SHOWN])
    return shown + (f" and {len(items) - _SHOWN} more" if len(items) > _SHOWN else "")


def read_label_input(source: Any) -> pd.DataFrame:
    """A DataFrame, or a CSV, Parquet, JSON or JSON-lines file, as a DataFrame."""
    import pandas as pd

    if isinstance(source, pd.DataFrame):
        return source
    path = Path(source)
    if not path.is_file():
        raise UsageError(
            f"No label file at {path}",
            fix="Pass a CSV, Parquet or JSON file (or a DataFrame) with request_id and label.",
        )
    suffix = path.suffix.lower()
    try:
        if suffix == ".csv":
            return pd.read_csv(path)
        if suffix in (".parquet", ".pq"):
            return pd.read_parquet(path)
        if suffix in (".jsonl", ".ndjson"):
            return pd.read_json(path, lines=True)
        if suffix == ".json":
            return pd.read_json(path)
    except (ValueError, OSError) as err:
        raise UsageError(
            f"Cannot read the label file {path}: {err}",
            fix="Check that it is a valid file of its kind.",
        ) from None
    raise UsageError(
        f"Cannot read labels from a {suffix or 'suffix-less'} file ({path.name})",
        fix="Use .csv, .parquet, .json or .jsonl.",
    )


def _python(value: Any) -> Any:
    return value.item() if hasattr(value, "item") else value


def _served_requests(home: str | os.PathLike[str]) -> pd.DataFrame:
    """Every successful served (non-shadow) request, one row per request id (the last)."""
    import pandas as pd

    log = read_prediction_log(home)
    served = log[(log.route != "shadow") & (log.status == 200)]
    keep = ~pd.Series(_texts(served["request_id"])).duplicated(keep="last")
    return served[keep.to_numpy()].reset_index(drop=True)


def _label_kind(value: Any) -> str:
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int | float):
        return "number"
    return "text"


def _check_label(label: Any, prediction: Any, classes: list[Any] | None) -> Any:
    """The label as it is stored (the prediction's type), or a reason it cannot be."""
    kind, want = _label_kind(label), _label_kind(prediction)
    if want == "text":
        label = str(label)
    elif kind == "text":
        raise ValueError(f"text {label!r} where the model predicts numbers ({prediction!r})")
    elif isinstance(label, float) and not math.isfinite(label):
        raise ValueError(f"{label!r} is not a number")
    elif isinstance(prediction, int | bool) and float(label) == int(label):
        label = type(prediction)(int(label))
    if classes is not None:
        if label not in classes:
            raise ValueError(f"{label!r} is not one of the model's classes {classes}")
        label = classes[classes.index(label)]  # 1 for a class logged as 1.0 reads as 1.0
    return label


def _validate_rows(
    frame: pd.DataFrame,
    served: dict[str, tuple[list[Any], Any]],
    id_column: str,
    label_column: str,
    row_column: str,
) -> list[tuple[str, int, Any]]:
    """(request id, row, label) of every input row, or a UsageError naming what is wrong:
    row by row, so the error names the first bad row (see :func:`_validate`)."""
    missing = [c for c in (id_column, label_column) if c not in frame.columns]
    if missing:
        raise UsageError(
            f"The labels have no column {' or '.join(map(repr, missing))} "
            f"(columns: {', '.join(map(str, frame.columns)) or 'none'})",
            fix="Name the columns with --id-column/--label-column (id_column=, label_column=), "
            "or rename them to request_id and label.",
        )
    if frame.empty:
        raise UsageError("The labels are empty", fix="Pass at least one request id and label.")
    for col in (id_column, label_column):
        nulls = frame.index[frame[col].isna()].tolist()
        if nulls:
            raise UsageError(
                f"{len(nulls)} label rows have no {col} (rows {_few(nulls)})",
                fix="Drop those rows or fill them in.",
            )
    ids = [str(_python(v)) for v in frame[id_column]]
    has_rows = row_column in frame.columns
    positions = [0] * len(ids)
    if has_rows:
        try:
            positions = [int(v) for v in frame[row_column]]
        except (TypeError, ValueError):
            raise UsageError(
                f"The {row_column!r} column must hold whole numbers (a record's position in "
                "its request, from 0)",
                fix=f"Fix or drop the {row_column!r} column.",
            ) from None
    keys = list(zip(ids, positions, strict=True))
    seen: set[tuple[str, int]] = set()
    dupes = [k for k in keys if k in seen or seen.add(k)]  # type: ignore[func-returns-value]
    if dupes:
        named = [f"{i}" + (f" row {r}" if has_rows else "") for i, r in dupes]
        raise UsageError(
            f"{len(dupes)} request ids are labelled more than once: {_few(named)}",
            fix="Keep one label per request id (and row).",
        )
    unknown = [i for i in dict.fromkeys(ids) if i not in served]
    if unknown:
        raise UsageError(
            f"{len(unknown)} of {len(set(ids))} request ids are not in the prediction log "
            f"as served predictions: {_few(unknown)}",
            fix="Use the request id the gateway returned with each prediction (X-Request-Id "
            "header, request_id field) and the gateway's project folder; predictions of the "
            "last second may not be written yet (the log is written in batches): retry.",
        )
    out = []
    for (rid, pos), label in zip(keys, frame[label_column], strict=True):
        preds, proba = served[rid]
        if not has_rows and len(preds) > 1:
            raise UsageError(
                f"Request {rid} predicted {len(preds)} records, so its labels need their "
                f"position: add a {row_column!r} column (0 to {len(preds) - 1})",
                fix=f"Add a {row_column!r} column (or name it with --row-column).",
            )
        if not 0 <= pos < len(preds):
            raise UsageError(
                f"Request {rid} has no record {pos} (it predicted {len(preds)})",
                fix=f"Use {row_column} values from 0 to {len(preds) - 1}.",
            )
        classes = proba.get("classes") if isinstance(proba, dict) else None
        try:
            value = _check_label(_python(label), preds[pos], classes)
        except ValueError as err:
            raise UsageError(
                f"Wrong label type for request {rid}: {err}",
                fix="Give labels of the kind the model predicts (its classes for a "
                "classifier, numbers for a regressor).",
            ) from None
        out.append((rid, pos, value))
    return out


def _texts(col: pd.Series) -> list[str]:
    """``str`` of each value (numpy scalars as their Python values)."""
    from pandas.api.types import infer_dtype

    if infer_dtype(col, skipna=False) == "string":
        return col.tolist()
    if col.dtype == object:
        return [str(_python(v)) for v in col]
    return col.map(str).tolist()


def _validate(
    frame: pd.DataFrame,
    log: pd.DataFrame,
    id_column: str,
    label_column: str,
    row_column: str,
) -> tuple[list[str], Any, list[Any], list[str]]:
    """(request ids, rows, labels as stored, their JSON) of every input row, or a UsageError naming what
    is wrong. Whole columns at a time; any problem is named by :func:`_validate_rows`, which
    goes row by row to find the first."""
    import numpy as np
    import pandas as pd

    def slow() -> Any:
        rows = _validate_rows(frame, _served(log), id_column, label_column, row_column)
        raise AssertionError(f"a row was refused in bulk but not alone: {rows[:1]}")

    if any(c not in frame.columns for c in (id_column, label_column)) or frame.empty:
        slow()
    if frame[id_column].isna().any() or frame[label_column].isna().any():
        slow()
    ids = _texts(frame[id_column])
    has_rows = row_column in frame.columns
    try:
        positions = (
            frame[row_column].astype("int64").to_numpy()
            if has_rows
            else np.zeros(len(ids), dtype=np.int64)
        )
    except (TypeError, ValueError):
        slow()
    keys = pd.DataFrame({"id": ids, "row": positions})
    if keys.duplicated().any():
        slow()
    served_ids = pd.Index(_texts(log["request_id"]))
    request = served_ids.get_indexer(ids)
    if (request < 0).any():
        slow()
    outputs = [o if isinstance(o, list) else [o] for o in log["outputs"].tolist()]
    sizes = np.fromiter(map(len, outputs), dtype=np.int64, count=len(outputs))[request]
    if (not has_rows and (sizes > 1).any()) or ((positions < 0) | (positions >= sizes)).any():
        slow()
    flat = list(itertools.chain.from_iterable(outputs))
    starts = (np.cumsum([len(o) for o in outputs]) - [len(o) for o in outputs])[request]
    preds = [flat[i] for i in (starts + positions).tolist()]
    probas = log["proba"].tolist()
    classes = [
        tuple(probas[r]["classes"]) if isinstance(probas[r], dict) else None
        for r in request.tolist()
    ]
    labels = frame[label_column].tolist()
    if frame[label_column].dtype == object:
        labels = [_python(v) for v in labels]
    # one check per distinct (label, its type, the prediction's type, classes)
    type_ids: dict[Any, int] = {}
    kinds = pd.DataFrame(
        {
            "label": pd.Series(labels, dtype=object),
            "type": [type_ids.setdefault(type(v), len(type_ids)) for v in labels],
            "want": [type_ids.setdefault(type(v), len(type_ids)) for v in preds],
            "classes": pd.Series(classes, dtype=object),
        }
    )
    try:
        groups = kinds.groupby(["type", "label", "want", "classes"], sort=False, dropna=False)
        codes = groups.ngroup().to_numpy()
    except TypeError:  # unhashable labels: row by row
        codes = np.arange(len(labels))
    first = np.unique(codes, return_index=True)[1]
    checked: list[Any] = [None] * len(first)
    for code, i in enumerate(first.tolist()):
        cls = classes[i]
        try:
            checked[code] = _check_label(labels[i], preds[i], None if cls is None else list(cls))
        except ValueError:
            slow()
    values = np.empty(len(checked), dtype=object)
    values[:] = checked
    texts = np.array([json.dumps(v) for v in checked], dtype=object)
    return ids, positions, values[codes].tolist(), texts[codes].tolist()


def _served(log: pd.DataFrame) -> dict[str, tuple[list[Any], Any]]:
    """request id -> (predictions, proba) of the served requests in ``log``."""
    out: dict[str, tuple[list[Any], Any]] = {}
    for rid, outputs, proba in zip(log.request_id, log.outputs, log.proba, strict=True):
        preds = outputs if isinstance(outputs, list) else [outputs]
        out[str(rid)] = (preds, proba)
    return out


def _connect(path: Path) -> sqlite3.Connection:
    path.parent.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(path, timeout=10.0, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=FULL")  # labels arrive once: keep them through a crash
    conn.executescript(_SCHEMA)
    return conn


def attach_labels(
    home: str | os.PathLike[str],
    source: Any,
    *,
    id_column: str = "request_id",
    label_column: str = "label",
    row_column: str = "row",
    replace: bool = False,
) -> LabelReport:
    """Check labels (a DataFrame or file) against the prediction log and store them all,
    or none: one transaction. A different label for an already labelled record is refused
    unless ``replace``."""
    import numpy as np

    frame = read_label_input(source)
    ids, positions, values, texts = _validate(
        frame, _served_requests(home), id_column, label_column, row_column
    )
    path = labels_path(home)
    conn = _connect(path)
    added = replaced = unchanged = 0
    try:
        conn.execute("BEGIN IMMEDIATE")  # read-then-write: no other writer in between
        try:
            stored = _stored_texts(conn, ids, positions)
            # the same text is the same label; a different text may still be (1 and 1.0)
            same = stored == texts
            differ = (stored != None) & ~same  # noqa: E711 (element-wise)
            for i in np.flatnonzero(differ).tolist():
                same[i] = json.loads(stored[i]) == values[i]
            changed = np.flatnonzero(differ & ~same).tolist()
            if changed and not replace:
                raise UsageError(
                    f"{len(changed)} records already have a different label: "
                    f"{_few([f'{ids[i]} row {positions[i]}' for i in changed])}",
                    fix="Pass --replace (replace=True) to overwrite them.",
                )
            unchanged = int(same.sum())
            replaced = len(changed)
            added = len(ids) - unchanged - replaced
            now = time.time()
            write = np.flatnonzero(~same).tolist()
            conn.executemany(
                "INSERT OR REPLACE INTO labels VALUES (?, ?, ?, ?)",
                ((ids[i], int(positions[i]), texts[i], now) for i in write),
            )
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
    finally:
        conn.close()
    return LabelReport(added, replaced, unchanged, str(path))


def _stored_texts(conn: sqlite3.Connection, ids: list[str], positions: Any) -> Any:
    """The stored label text of each (id, row), None where there is none (an object array)."""
    import numpy as np
    import pandas as pd

    stored = pd.DataFrame(
        conn.execute("SELECT request_id, row, label FROM labels").fetchall(),
        columns=["id", "row", "label"],
    )
    keys = pd.DataFrame({"id": ids, "row": np.asarray(positions, dtype=np.int64)})
    if stored.empty:
        return np.full(len(ids), None, dtype=object)
    stored["row"] = stored["row"].astype(np.int64)
    joined = keys.merge(stored, on=["id", "row"], how="left", sort=False)
    out = joined["label"].to_numpy(dtype=object)
    out[pd.isna(out)] = None
    return out


def read_labels(home: str | os.PathLike[str]) -> pd.DataFrame:
    """Every stored label: request_id, row, label, labeled_at (epoch seconds)."""
    import pandas as pd

    path = labels_path(home)
    rows: list[tuple[Any, ...]] = []
    if path.is_file():
        conn = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True, timeout=5)
        try:
            found = conn.execute("SELECT request_id, row, label, labeled_at FROM labels")
            rows = found.fetchall()
            # one JSON array of every label: one parse, not one a label
            values = json.loads("[" + ",".join(r[2] for r in rows) + "]")
            rows = [(r[0], r[1], v, r[3]) for r, v in zip(rows, values, strict=True)]
        except sqlite3.OperationalError as err:
            if "no such table" not in str(err):
                raise
        finally:
            conn.close()
    return pd.DataFrame(rows, columns=["request_id", "row", "label", "labeled_at"]).astype(
        {"request_id": object, "row": "int64", "label": object, "labeled_at": "float64"}
    )


def scored_frame(
    home: str | os.PathLike[str],
    *,
    since: float | None = None,
    until: float | None = None,
) -> pd.DataFrame:
    """One row per predicted record of served, successful requests with ``since <= ts <
    until``: META columns, the record's features, ``proba:<class>`` columns (classifiers
    that logged them), ``label`` and ``labeled_at`` (NaN/None until labelled)."""
    import numpy as np
    import pandas as pd

    log = read_prediction_log(home, since=since, until=until)
    log = log[(log.route != "shadow") & (log.status == 200)]
    if since is not None:
        log = log[log.ts >= since]
    if until is not None:
        log = log[log.ts < until]
    # Whole columns at a time: requests are flattened into records with one repeat of each
    # request's index, so nothing runs in Python per record but the list flattening.
    outputs = [o if isinstance(o, list) else [o] for o in log["outputs"].tolist()]
    sizes = np.fromiter(map(len, outputs), dtype=np.int64, count=len(outputs))
    total = int(sizes.sum())
    of_request = np.repeat(np.arange(len(log)), sizes)
    starts = np.cumsum(sizes) - sizes
    # lists, not object arrays, so pandas infers each column's type as it did per record
    meta: dict[str, Any] = {
        k: log[k].to_numpy(dtype=object)[of_request].tolist()
        for k in ("request_id", "model", "route")
    }
    meta.update({k: log[k].array.take(of_request) for k in ("ts", "time", "version")})
    meta["row"] = (np.arange(total, dtype=np.int64) - np.repeat(starts, sizes)).tolist()
    meta["prediction"] = list(itertools.chain.from_iterable(outputs))
    frame = pd.DataFrame({k: meta[k] if total else [] for k in META})
    frame["version"] = frame["version"].astype("Int64")
    features = _records_of(log["inputs"].tolist(), sizes)
    feats = pd.DataFrame.from_records(features, index=frame.index) if features else None
    if feats is not None and len(feats.columns):
        feats.columns = [f"feature:{c}" if c in META else c for c in feats.columns]
        frame = pd.concat([frame, feats], axis=1)
    probas = _proba_columns(log["proba"].tolist(), sizes.tolist(), starts, total)
    if probas:
        frame = pd.concat([frame, pd.DataFrame(probas, index=frame.index)], axis=1)
    labels = read_labels(home)
    frame = frame.merge(labels, on=["request_id", "row"], how="left")
    frame["labeled_at"] = frame["labeled_at"].astype("float64")
    if frame["label"].dtype != object:
        frame["label"] = frame["label"].astype(object)
    frame.loc[frame["labeled_at"].isna(), "label"] = np.nan
    return frame


def _records_of(inputs: list[Any], sizes: Any) -> list[dict[str, Any]]:
    """Each predicted record's input record ({} where the request logged none for it)."""

    def records(value: Any, n: int) -> Any:
        if not isinstance(value, list):
            return [value] * n
        if len(value) == n:
            return value
        return value[:n] + [{}] * (n - len(value))

    flat = itertools.chain.from_iterable(map(records, inputs, sizes.tolist()))
    return [r if isinstance(r, dict) else {} for r in flat]


def _proba_columns(probas: list[Any], sizes: Any, starts: Any, total: int) -> dict[str, Any]:
    """``proba:<class>`` -> one float per record (NaN where its request logged none), in the
    order the classes first appear."""
    import numpy as np

    by_classes: dict[tuple[Any, ...], list[int]] = {}
    for i, proba in enumerate(probas):
        if isinstance(proba, dict) and proba.get("p"):
            by_classes.setdefault(tuple(proba["classes"]), []).append(i)
    columns: dict[str, Any] = {}
    for classes, requests in by_classes.items():  # in the order they first appear
        rows = [probas[i]["p"][: sizes[i]] for i in requests]
        taken = np.fromiter(map(len, rows), dtype=np.int64, count=len(rows))
        flat = list(itertools.chain.from_iterable(rows))
        try:
            p = np.array(flat, dtype="float64")
            ragged = p.ndim != 2 or p.shape[1] != len(classes)
        except ValueError:  # rows of different lengths
            ragged = True
        if ragged:
            # a record with fewer (or more) probabilities than classes: pair them up as far
            # as they go, one record at a time (zip, as the records were logged)
            p = np.full((len(flat), len(classes)), np.nan)
            for k, r in enumerate(flat):
                m = min(len(r), len(classes))
                p[k, :m] = [float(v) for v in r[:m]]
        first = np.repeat(np.asarray(starts)[requests], taken)
        at = first + (np.arange(len(flat)) - np.repeat(np.cumsum(taken) - taken, taken))
        for j, c in enumerate(classes):
            col = columns.setdefault(f"{PROBA_PREFIX}{c}", np.full(total, np.nan))
            col[at] = np.where(np.isnan(p[:, j]), col[at], p[:, j])
    return columns


def proba_columns(frame: pd.DataFrame) -> list[str]:
    """The ``proba:<class>`` columns of a scored frame, in the model's class order."""
    return [c for c in frame.columns if str(c).startswith(PROBA_PREFIX)]
