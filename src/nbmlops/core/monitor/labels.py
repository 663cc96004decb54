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


def _served_requests(home: str | os.PathLike[str]) -> dict[str, tuple[list[Any], Any]]:
    """request id -> (predictions, proba) of every successful served (non-shadow) request."""
    log = read_prediction_log(home)
    served = log[(log.route != "shadow") & (log.status == 200)]
    out: dict[str, tuple[list[Any], Any]] = {}
    for rid, outputs, proba in zip(served.request_id, served.outputs, served.proba, strict=True):
        preds = outputs if isinstance(outputs, list) else [outputs]
        out[str(rid)] = (preds, proba)
    return out


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


def _validate(
    frame: pd.DataFrame,
    served: dict[str, tuple[list[Any], Any]],
    id_column: str,
    label_column: str,
    row_column: str,
) -> list[tuple[str, int, Any]]:
    """(request id, row, label) of every input row, or a UsageError naming what is wrong."""
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
    frame = read_label_input(source)
    served = _served_requests(home)
    rows = _validate(frame, served, id_column, label_column, row_column)
    path = labels_path(home)
    conn = _connect(path)
    added = replaced = unchanged = 0
    try:
        conn.execute("BEGIN IMMEDIATE")  # read-then-write: no other writer in between
        try:
            stored = {
                (rid, pos): json.loads(text)
                for rid, pos, text in conn.execute("SELECT request_id, row, label FROM labels")
            }
            changed = [(r, p) for r, p, v in rows if (r, p) in stored and stored[r, p] != v]
            if changed and not replace:
                raise UsageError(
                    f"{len(changed)} records already have a different label: "
                    f"{_few([f'{r} row {p}' for r, p in changed])}",
                    fix="Pass --replace (replace=True) to overwrite them.",
                )
            now = time.time()
            for rid, pos, value in rows:
                old = stored.get((rid, pos), _MISSING)
                if old == value:
                    unchanged += 1
                    continue
                if old is _MISSING:
                    added += 1
                else:
                    replaced += 1
                conn.execute(
                    "INSERT OR REPLACE INTO labels VALUES (?, ?, ?, ?)",
                    (rid, pos, json.dumps(value), now),
                )
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
    finally:
        conn.close()
    return LabelReport(added, replaced, unchanged, str(path))


_MISSING = object()


def read_labels(home: str | os.PathLike[str]) -> pd.DataFrame:
    """Every stored label: request_id, row, label, labeled_at (epoch seconds)."""
    import pandas as pd

    path = labels_path(home)
    rows: list[tuple[Any, ...]] = []
    if path.is_file():
        conn = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True, timeout=5)
        try:
            rows = [
                (rid, pos, json.loads(text), at)
                for rid, pos, text, at in conn.execute(
                    "SELECT request_id, row, label, labeled_at FROM labels"
                )
            ]
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

    log = read_prediction_log(home)
    log = log[(log.route != "shadow") & (log.status == 200)]
    if since is not None:
        log = log[log.ts >= since]
    if until is not None:
        log = log[log.ts < until]
    meta: dict[str, list[Any]] = {k: [] for k in META}
    features: list[dict[str, Any]] = []
    probas: list[dict[str, float]] = []
    for rec in log.itertuples(index=False):
        preds = rec.outputs if isinstance(rec.outputs, list) else [rec.outputs]
        inputs = rec.inputs if isinstance(rec.inputs, list) else [rec.inputs] * len(preds)
        proba = rec.proba if isinstance(rec.proba, dict) else None
        for pos, pred in enumerate(preds):
            for key, value in (
                ("request_id", rec.request_id), ("row", pos), ("ts", rec.ts),
                ("time", rec.time), ("model", rec.model), ("version", rec.version),
                ("route", rec.route), ("prediction", pred),
            ):  # fmt: skip
                meta[key].append(value)
            record = inputs[pos] if pos < len(inputs) and isinstance(inputs[pos], dict) else {}
            features.append(record)
            if proba is not None and pos < len(proba.get("p", [])):
                probas.append(
                    {
                        f"{PROBA_PREFIX}{c}": float(p)
                        for c, p in zip(proba["classes"], proba["p"][pos], strict=False)
                    }
                )
            else:
                probas.append({})
    frame = pd.DataFrame(meta)
    frame["version"] = frame["version"].astype("Int64")
    feats = pd.DataFrame.from_records(features, index=frame.index) if features else None
    if feats is not None and len(feats.columns):
        feats.columns = [f"feature:{c}" if c in META else c for c in feats.columns]
        frame = pd.concat([frame, feats], axis=1)
    if any(probas):
        frame = pd.concat([frame, pd.DataFrame.from_records(probas, index=frame.index)], axis=1)
    labels = read_labels(home)
    frame = frame.merge(labels, on=["request_id", "row"], how="left")
    frame["labeled_at"] = frame["labeled_at"].astype("float64")
    if frame["label"].dtype != object:
        frame["label"] = frame["label"].astype(object)
    frame.loc[frame["labeled_at"].isna(), "label"] = np.nan
    return frame


def proba_columns(frame: pd.DataFrame) -> list[str]:
    """The ``proba:<class>`` columns of a scored frame, in the model's class order."""
    return [c for c in frame.columns if str(c).startswith(PROBA_PREFIX)]
