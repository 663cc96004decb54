"""Drift per feature over time: the span of the current data cut into windows of equal length
(aligned to multiples of the length, as the stored profiles are), each window compared with
the reference by the same tests as :func:`nbmlops.core.monitor.drift.drift`.

A window whose stored profiles cover it is read from them (a few kilobytes a column); only the
others are summarised from rows. The reference is summarised once for every window.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from nbmlops.core.monitor.drift import MIN_ROWS, drift_of_summaries, reference_columns
from nbmlops.core.monitor.stats import P_VALUE_TESTS
from nbmlops.core.monitor.summary import ColumnSummary, feature_kinds, summarize_column
from nbmlops.exceptions import UsageError

if TYPE_CHECKING:
    import pandas as pd

    from nbmlops.core.monitor.profile import Profile

__all__ = ["MAX_WINDOWS", "DriftTimeline", "covering", "drift_over_time", "window_starts"]

MAX_WINDOWS = 2000  # more columns than a heatmap can show: ask for a longer window

_TABLE = [
    "window_start", "window_end", "feature", "kind", "test", "score", "threshold",
    "severity", "drifted", "rows", "source", "note",
]  # fmt: skip


@dataclass
class DriftTimeline:
    """Per window and feature drift verdicts (``table``, long: one row per window and feature)
    and one row per window (``windows``: start, end, rows, drifted, drift_share,
    dataset_drift, source: profiles, rows or empty).

    ``severity`` puts every test on one scale, 1 at its threshold and above it when drifted:
    log(p) / log(threshold) for p-value tests, distance / threshold for the others.
    """

    table: pd.DataFrame
    windows: pd.DataFrame
    features: list[str]
    window_seconds: float
    reference_label: str = "reference"
    reference_rows: int = 0
    notes: list[str] = field(default_factory=list)

    def matrix(self, column: str = "severity") -> pd.DataFrame:
        """``column`` as features (rows) x window starts (columns)."""
        wide = self.table.pivot(index="feature", columns="window_start", values=column)
        return wide.reindex(index=self.features, columns=self.windows["start"].tolist())

    def drifted_from(self) -> dict[str, float | None]:
        """feature -> start of the first window where it drifted (None: never)."""
        out: dict[str, float | None] = dict.fromkeys(self.features)
        hits = self.table[self.table["drifted"]].sort_values("window_start")
        for feature, start in zip(hits["feature"], hits["window_start"], strict=True):
            if out.get(feature) is None:
                out[str(feature)] = float(start)
        return out

    def summary(self) -> str:
        tested = self.windows[self.windows["source"] != "empty"]
        drifted = {f: s for f, s in self.drifted_from().items() if s is not None}
        head = f"{len(tested)} of {len(self.windows)} windows of {_span(self.window_seconds)} hold traffic"
        if not drifted:
            return f"{head}; no feature drifted"
        first = ", ".join(
            f"{f} (from {time.strftime('%H:%M:%S', time.gmtime(s))} UTC)"
            for f, s in sorted(drifted.items(), key=lambda kv: kv[1])
        )
        return f"{head}; drifted: {first}"

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able dict."""

        def clean(v: Any) -> Any:
            if isinstance(v, float) and not math.isfinite(v):
                return None
            if hasattr(v, "item"):
                return clean(v.item())
            return v

        return {
            "window_seconds": self.window_seconds,
            "features": list(self.features),
            "reference": {"label": self.reference_label, "rows": self.reference_rows},
            "windows": [
                {k: clean(v) for k, v in r.items()} for r in self.windows.to_dict("records")
            ],
            "cells": [{k: clean(v) for k, v in r.items()} for r in self.table.to_dict("records")],
            "notes": list(self.notes),
        }


def _span(seconds: float) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{int(seconds // size)}{unit}"
    return f"{seconds:g}s"


def window_starts(since: float, until: float, window_seconds: float) -> list[float]:
    """Starts of the aligned windows of ``window_seconds`` that meet ``[since, until)``."""
    if not (isinstance(window_seconds, (int, float)) and window_seconds > 0):
        raise UsageError(
            f"the window must be a positive number of seconds, got {window_seconds!r}",
            fix="pass e.g. window='1h' (or 3600)",
        )
    if not until > since:
        raise UsageError("the span ends before it starts", fix="check since= and until=")
    first = math.floor(since / window_seconds) * window_seconds
    count = math.ceil((until - first) / window_seconds)
    if count > MAX_WINDOWS:
        raise UsageError(
            f"{count} windows of {_span(window_seconds)} in the span: more than {MAX_WINDOWS}",
            fix="pass a longer window (window='1h', '1d') or a shorter span (last='24h')",
        )
    return [first + i * window_seconds for i in range(count)]


def covering(profiles: list[Profile], start: float, end: float) -> list[Profile] | None:
    """The stored profiles inside ``[start, end)`` when together they cover all of it."""
    spans = sorted(
        (p.start, p.end, i)
        for i, p in enumerate(profiles)
        if p.start is not None and p.end is not None and p.start >= start and p.end <= end
    )
    reached = start
    for a, b, _ in spans:
        if a > reached + 1e-6:
            return None  # a gap: part of the window was never profiled
        reached = max(reached, b)
    inside = [profiles[i] for _, _, i in spans]
    return inside if inside and reached >= end - 1e-6 else None


def drift_over_time(
    reference: pd.DataFrame,
    current: pd.DataFrame | None,
    *,
    window_seconds: float,
    since: float | None = None,
    until: float | None = None,
    time_column: str = "_ts",
    profiles: Iterable[Profile] = (),
    columns: list[str] | None = None,
    numeric: list[str] | None = None,
    categorical: list[str] | None = None,
    categorical_max: int = 50,
    test: str = "auto",
    thresholds: dict[str, float] | None = None,
    correction: str = "bh",
    drift_share: float = 0.5,
    min_rows: int = MIN_ROWS,
    reference_label: str = "reference",
) -> DriftTimeline:
    """Drift of each ``window_seconds`` window of ``current`` (rows with epoch seconds in
    ``time_column``) from ``reference``, per feature.

    The span is ``[since, until)`` (default: the current data's first and last times). A
    window covered by ``profiles`` (stored window profiles) is read from them instead of rows.
    A window with fewer than ``min_rows`` rows is listed with its features untested; one
    without traffic is listed as empty. Other options are those of
    :func:`~nbmlops.core.monitor.drift.drift`.
    """
    import numpy as np
    import pandas as pd

    from nbmlops.core.data.column_kinds import check_frame

    reference = check_frame(reference, "reference")
    if len(reference) < min_rows:
        raise UsageError(
            f"the reference data has {len(reference)} rows; the drift tests need at least "
            f"{min_rows}",
            fix=f"pass a larger reference, or min_rows={max(len(reference), 1)} to accept tests "
            "with little power",
        )
    stored = list(profiles)
    if current is not None:
        current = check_frame(current, "current")
        if time_column not in current.columns:
            raise UsageError(
                f"the current data has no time column {time_column!r}",
                fix="pass time_column= naming the column of epoch seconds (the prediction "
                "log's is _ts)",
            )
        ts = pd.to_numeric(current[time_column], errors="coerce").to_numpy(dtype="float64")
        if np.isnan(ts).any():
            raise UsageError(
                f"{int(np.isnan(ts).sum())} rows of the current data have no time in "
                f"{time_column!r}",
                fix="drop them or fill the column with epoch seconds",
            )
    else:
        ts = np.empty(0)
    times = [
        t for t in (ts.min() if len(ts) else None, *(p.start for p in stored)) if t is not None
    ]
    ends = [
        t for t in (ts.max() + 1e-9 if len(ts) else None, *(p.end for p in stored)) if t is not None
    ]
    since = since if since is not None else (min(times) if times else None)
    until = until if until is not None else (max(ends) if ends else None)
    if since is None or until is None:
        raise UsageError(
            "there is no current data: no rows and no profiles",
            fix="widen the window (last='24h'), or send traffic to the gateway first",
        )
    starts = window_starts(float(since), float(until), float(window_seconds))
    cols = reference_columns(reference, columns)
    if current is not None and columns is not None:
        absent = [c for c in cols if c not in current.columns]
        if absent and not stored:
            raise UsageError(
                f"the current data lacks feature(s) {', '.join(map(repr, absent))}",
                fix=f"name features it has (it has {', '.join(map(str, current.columns[:12]))})",
            )
    kinds, notes = feature_kinds(
        reference, cols, numeric=numeric, categorical=categorical, categorical_max=categorical_max
    )
    if columns is None:
        # The gateway refuses a request lacking an input (422), so a reference column in no
        # record and no profile is not an input: the target, or a column the model ignores.
        present = {str(c) for c in (current.columns if current is not None else ())}
        present.update(c for p in stored for c in p.columns)
        absent = [c for c in kinds if c not in present]
        if absent:
            kinds = {c: k for c, k in kinds.items() if c in present}
            notes.append(
                "in the reference but in no logged request (the target, or not a model "
                f"input): {', '.join(absent)}"
            )
    if not kinds:
        raise UsageError(
            "no feature of the reference is in the current data, so none can be compared",
            fix="check that the current data comes from the model the reference trained, or "
            "name columns=[...] to compare",
        )
    ref = {c: summarize_column(reference[c], k, "reference") for c, k in kinds.items()}
    options: dict[str, Any] = {
        "test": test, "thresholds": thresholds, "correction": correction,
        "drift_share": drift_share, "min_rows": min_rows, "workers": 1,
    }  # fmt: skip
    cells: list[dict[str, Any]] = []
    per_window: list[dict[str, Any]] = []
    order = np.argsort(ts, kind="stable") if len(ts) else np.empty(0, dtype=int)
    sorted_ts = ts[order]
    for start in starts:
        end = start + window_seconds
        covered = covering(stored, start, end)
        if covered is not None:
            from nbmlops.core.monitor.profile import merge_profiles

            merged = merge_profiles(covered)
            assert merged is not None
            have = merged.summaries()
            rows, source = merged.rows, "profiles"
            cur = {c: have.get(c) or ColumnSummary(k, rows, rows) for c, k in kinds.items()}
        else:
            lo, hi = np.searchsorted(sorted_ts, [start, end], side="left")
            part = current.iloc[order[lo:hi]] if current is not None and hi > lo else None
            rows, source = (0, "empty") if part is None else (len(part), "rows")
            cur = {
                c: summarize_column(part[c], k, "current")
                if part is not None and c in part.columns
                else ColumnSummary(k, rows, rows)  # absent from every record: all null
                for c, k in kinds.items()
            }
        report = drift_of_summaries(
            {c: (ref[c], cur[c]) for c in kinds},
            labels=(reference_label, f"window {start:g}"),
            reference_rows=len(reference),
            current_rows=rows,
            **options,
        )
        for r in report.features.to_dict("records"):
            cells.append(
                {
                    "window_start": start,
                    "window_end": end,
                    "feature": r["feature"],
                    "kind": r["kind"],
                    "test": r["test"],
                    "score": float(r["score"]),
                    "threshold": float(r["threshold"]),
                    "severity": severity(r["test"], float(r["score"]), float(r["threshold"])),
                    "drifted": bool(r["drifted"]),
                    "rows": rows,
                    "source": source,
                    "note": "no traffic" if source == "empty" else str(r["note"] or ""),
                }
            )
        per_window.append(
            {
                "start": start,
                "end": end,
                "rows": rows,
                "drifted": len(report.drifted),
                "drift_share": report.drift_share,
                "dataset_drift": report.dataset_drift,
                "source": source,
            }
        )
    return DriftTimeline(
        table=pd.DataFrame(cells, columns=_TABLE),
        windows=pd.DataFrame(
            per_window,
            columns=["start", "end", "rows", "drifted", "drift_share", "dataset_drift", "source"],
        ),
        features=list(kinds),
        window_seconds=float(window_seconds),
        reference_label=reference_label,
        reference_rows=len(reference),
        notes=notes,
    )


def severity(test: str, score: float, threshold: float) -> float:
    """One scale for every test: 1 at the threshold, above 1 when drifted (NaN: untested)."""
    if test == "none" or not math.isfinite(score) or not math.isfinite(threshold):
        return math.nan
    if test in P_VALUE_TESTS:
        if score <= 0.0:
            return 10.0  # p underflowed to 0: as drifted as it gets
        return min(10.0, math.log(score) / math.log(threshold)) if score < 1.0 else 0.0
    return min(10.0, score / threshold) if threshold > 0 else math.nan
