"""Windows of the prediction log as feature frames: the requests' input records, one row per
record, with the request's time, model and version."""

from __future__ import annotations

import os
import re
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from nbmlops.exceptions import UsageError

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["Window", "parse_duration", "resolve_window", "traffic_frame"]

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
META = ("_ts", "_model", "_version", "_request_id")


def parse_duration(text: str | float | int, what: str = "duration") -> float:
    """Seconds in ``"90s"``, ``"15m"``, ``"1h"``, ``"7d"``, ``"2w"`` (or a number of seconds)."""
    if isinstance(text, (int, float)) and not isinstance(text, bool):
        seconds = float(text)
    else:
        m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smhdw]?)\s*", str(text))
        if not m:
            raise UsageError(
                f"Cannot read the {what} {text!r}",
                fix="Write a number and a unit: 90s, 15m, 1h, 7d or 2w.",
            )
        seconds = float(m.group(1)) * _UNITS[m.group(2) or "s"]
    if seconds <= 0:
        raise UsageError(f"The {what} {text!r} is not positive", fix="Pass e.g. 1h.")
    return seconds


def parse_time(value: str | float | int) -> float:
    """Epoch seconds from a number, an ISO date/time (UTC unless it says otherwise)."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    import pandas as pd

    try:
        ts = pd.Timestamp(str(value))
    except (ValueError, TypeError) as err:
        raise UsageError(
            f"cannot read the time {value!r}",
            fix="write an ISO date or time such as 2026-12-01 or 2026-12-01T08:00",
        ) from err
    if ts.tzinfo is None:
        ts = ts.tz_localize("UTC")
    return float(ts.timestamp())


@dataclass(frozen=True)
class Window:
    """A span of the prediction log: ``since <= ts < until`` (None: open), or its last ``rows``."""

    since: float | None = None
    until: float | None = None
    rows: int | None = None

    def label(self) -> str:
        def fmt(t: float) -> str:
            return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(t))

        parts = []
        if self.since is not None:
            parts.append(f"since {fmt(self.since)}")
        if self.until is not None:
            parts.append(f"until {fmt(self.until)}")
        if self.rows is not None:
            parts.append(f"last {self.rows} rows")
        return "prediction log" + (" " + ", ".join(parts) if parts else "")


def resolve_window(
    last: str | float | None = None,
    since: str | float | None = None,
    until: str | float | None = None,
    rows: int | None = None,
    *,
    now: float | None = None,
) -> Window:
    """The window that ``last`` / ``since`` / ``until`` / ``rows`` name (``last`` defaults to
    one hour when none is given)."""
    if last is not None and since is not None:
        raise UsageError(
            "both last= and since= were given", fix="pass one: last='1h' or since='2026-12-01'"
        )
    if rows is not None and (not isinstance(rows, int) or rows < 1):
        raise UsageError(
            f"rows must be a positive integer, got {rows!r}", fix="pass e.g. rows=5000"
        )
    now = time.time() if now is None else now
    if last is None and since is None and rows is None:
        last = "1h"
    start = now - parse_duration(last) if last is not None else None
    if since is not None:
        start = parse_time(since)
    end = parse_time(until) if until is not None else None
    if start is not None and end is not None and end <= start:
        raise UsageError("the window ends before it starts", fix="check since= and until=")
    return Window(start, end, rows)


def traffic_frame(
    home: str | os.PathLike[str], window: Window, *, model: str | None = None
) -> pd.DataFrame:
    """The input records logged in ``window`` (successful requests; shadow copies left out) as
    a frame, plus ``_ts``, ``_model``, ``_version`` and ``_request_id`` columns."""
    import itertools

    import numpy as np
    import pandas as pd

    from nbmlops.core.serving.predlog import read_prediction_log

    log = read_prediction_log(home, since=window.since, until=window.until)
    keep = (log["status"] == 200) & (log["route"] != "shadow")
    if model is not None:
        keep &= log["model"] == model
    log = log[keep]
    if window.rows is not None:
        # the newest records: count back whole requests until enough records are in
        sizes = log["inputs"].map(lambda v: len(v) if isinstance(v, list) else 0).to_numpy()
        from_end = np.cumsum(sizes[::-1])
        take = int(np.searchsorted(from_end, window.rows)) + 1
        log = log.iloc[max(len(log) - take, 0) :]
    records: list[Any] = log["inputs"].tolist()
    sizes = [len(r) if isinstance(r, list) else 0 for r in records]
    flat = list(itertools.chain.from_iterable(r for r in records if isinstance(r, list)))
    frame = pd.DataFrame.from_records(flat) if flat else pd.DataFrame()
    frame["_ts"] = np.repeat(log["ts"].to_numpy(), sizes)
    frame["_model"] = np.repeat(log["model"].to_numpy(dtype=object), sizes)
    frame["_version"] = np.repeat(log["version"].to_numpy(dtype=object), sizes)
    frame["_request_id"] = np.repeat(log["request_id"].to_numpy(dtype=object), sizes)
    if window.rows is not None and len(frame) > window.rows:
        frame = frame.iloc[len(frame) - window.rows :].reset_index(drop=True)
    return frame


def features_only(frame: pd.DataFrame) -> pd.DataFrame:
    """``frame`` without the log's own columns."""
    return frame.drop(columns=[c for c in META if c in frame.columns])
