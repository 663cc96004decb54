"""Small mergeable profiles of a window of data: per column the row and null counts, moments,
a KLL quantile sketch (numeric) or a frequent-items sketch (categorical), from Apache
DataSketches (the sketches whylogs builds on), and the exact counts of a numeric column with
few distinct values.

Merging two profiles is exact for the counts and moments and keeps the sketches' error
bounds (KLL with k=200: about 1.3% normalised rank error), so the profile of a month is the
merge of its hourly windows and drift over it reads a few kilobytes per window, not its rows.
Profiles of several gateways merge the same way. :mod:`nbmlops.core.monitor.profile_store`
keeps them beside the prediction log.
"""

from __future__ import annotations

import functools
import json
import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from nbmlops.core.extras import require_extra
from nbmlops.core.monitor.summary import ColumnSummary, Kind, feature_kinds

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd

__all__ = ["SKETCH_K", "ColumnProfile", "Profile", "merge_profiles", "profile_frame"]

SKETCH_K = 200  # KLL accuracy parameter: ~1.3% rank error, ~4.5 kB a column and window
ITEMS_LG_K = 10  # frequent items: exact up to 768 distinct values
EXACT_VALUES = 20  # a numeric column with at most this many distinct values keeps exact counts


@functools.cache
def _sketches() -> Any:
    require_extra("monitor")
    import datasketches

    return datasketches


@dataclass
class ColumnProfile:
    """One column of one window; :meth:`merge` combines two windows."""

    kind: Kind
    rows: int = 0
    nulls: int = 0
    mean: float = 0.0
    m2: float = 0.0  # sum of squared deviations from the mean (Chan et al.'s merge)
    min: float = math.inf
    max: float = -math.inf
    exact: dict[Any, int] | None = field(default_factory=dict)  # value -> count, or None
    sketch: Any = None  # kll_doubles_sketch | frequent_strings_sketch

    @property
    def count(self) -> int:
        return self.rows - self.nulls

    def merge(self, other: ColumnProfile) -> ColumnProfile:
        """A new profile of both windows."""
        return ColumnProfile.merge_all([self, other])

    @staticmethod
    def merge_all(parts: list[ColumnProfile]) -> ColumnProfile:
        """One profile of all ``parts`` (windows of one column): counts summed, moments
        combined exactly (Chan et al.), each sketch merged once into one accumulator."""
        import numpy as np

        ds = _sketches()
        kinds = {p.kind for p in parts}
        if len(kinds) > 1:
            from nbmlops.exceptions import UsageError

            raise UsageError(
                "cannot merge numeric and categorical profiles of one column",
                fix="profile the windows with the same numeric=[...] / categorical=[...]",
            )
        kind = parts[0].kind
        out = ColumnProfile(kind, sum(p.rows for p in parts), sum(p.nulls for p in parts))
        n_i = np.array([p.count for p in parts], dtype="float64")
        n = float(n_i.sum())
        if n:
            means = np.array([p.mean for p in parts])
            out.mean = float(np.dot(n_i, means) / n)
            out.m2 = float(sum(p.m2 for p in parts) + np.dot(n_i, (means - out.mean) ** 2))
        out.min = min(p.min for p in parts)
        out.max = max(p.max for p in parts)
        exact: dict[Any, int] | None = {}
        for p in parts:
            if p.exact is None or exact is None:
                exact = None
                break
            for k, v in p.exact.items():
                exact[k] = exact.get(k, 0) + v
            if len(exact) > EXACT_VALUES:
                exact = None
                break
        out.exact = exact
        if kind == "numeric":
            out.sketch = ds.kll_doubles_sketch(SKETCH_K)
        else:
            out.sketch = ds.frequent_strings_sketch(ITEMS_LG_K)
        for p in parts:
            if p.sketch is not None and not p.sketch.is_empty():
                out.sketch.merge(p.sketch)
        return out

    def summary(self) -> ColumnSummary:
        """This column as the drift statistics read it."""
        if self.kind == "numeric":
            return ColumnSummary("numeric", self.rows, self.nulls, numeric=SketchColumn(self))
        return ColumnSummary("categorical", self.rows, self.nulls, counts=self.item_counts())

    def item_counts(self) -> pd.Series:
        """Estimated count per category (exact while fewer than 768 distinct values)."""
        import pandas as pd

        ds = _sketches()
        if self.sketch is None or self.sketch.is_empty():
            return pd.Series(dtype="float64")
        items = self.sketch.get_frequent_items(ds.frequent_items_error_type.NO_FALSE_NEGATIVES)
        return pd.Series(
            [float(i[1]) for i in items], index=pd.Index([i[0] for i in items], dtype=object)
        )

    def to_record(self) -> dict[str, Any]:
        """Scalars as a JSON-able dict and the sketch as bytes (see :meth:`from_record`)."""
        return {
            "kind": self.kind,
            "rows": self.rows,
            "nulls": self.nulls,
            "mean": self.mean,
            "m2": self.m2,
            "min": self.min if math.isfinite(self.min) else None,
            "max": self.max if math.isfinite(self.max) else None,
            "exact": None if self.exact is None else json.dumps(list(self.exact.items())),
            "sketch": None if self.sketch is None else bytes(self.sketch.serialize()),
        }

    @classmethod
    def from_record(cls, rec: dict[str, Any]) -> ColumnProfile:
        ds = _sketches()
        kind = rec["kind"]
        sketch = None
        if rec["sketch"] is not None:
            reader = ds.kll_doubles_sketch if kind == "numeric" else ds.frequent_strings_sketch
            sketch = reader.deserialize(rec["sketch"])
        exact = None if rec["exact"] is None else {k: int(v) for k, v in json.loads(rec["exact"])}
        return cls(
            kind,
            int(rec["rows"]),
            int(rec["nulls"]),
            float(rec["mean"]),
            float(rec["m2"]),
            math.inf if rec["min"] is None else float(rec["min"]),
            -math.inf if rec["max"] is None else float(rec["max"]),
            exact,
            sketch,
        )


class SketchColumn:
    """A numeric column profile read as a :class:`~nbmlops.core.monitor.stats.NumericSummary`."""

    def __init__(self, profile: ColumnProfile):
        self.profile = profile
        self.n = profile.count

    def cdf(self, points: np.ndarray) -> np.ndarray:
        import numpy as np

        pts = np.asarray(points, dtype="float64")
        if self.profile.exact is not None:  # few values: the exact step function
            vals = np.array(sorted(self.profile.exact), dtype="float64")
            cum = np.cumsum([self.profile.exact[v] for v in sorted(self.profile.exact)])
            idx = np.searchsorted(vals, pts, side="right")
            return np.where(idx > 0, cum[np.maximum(idx - 1, 0)], 0) / max(self.n, 1)
        # get_cdf wants increasing, distinct split points and returns one more value (the 1.0)
        uniq, inverse = np.unique(pts, return_inverse=True)
        return np.asarray(self.profile.sketch.get_cdf(uniq.tolist()))[:-1][inverse]

    def quantiles(self, ranks: np.ndarray) -> np.ndarray:
        import numpy as np

        return np.asarray(self.profile.sketch.get_quantiles(np.asarray(ranks).tolist()))

    def std(self) -> float:
        return math.sqrt(self.profile.m2 / self.n) if self.n else math.nan

    def value_counts(self, limit: int) -> pd.Series | None:
        import pandas as pd

        exact = self.profile.exact
        if exact is None or len(exact) > limit:
            return None
        return pd.Series(exact, dtype="float64").sort_index()


@dataclass
class Profile:
    """The profile of a window: one :class:`ColumnProfile` per column, its rows and span."""

    columns: dict[str, ColumnProfile]
    rows: int
    start: float | None = None  # epoch seconds
    end: float | None = None

    def merge(self, other: Profile) -> Profile:
        """A profile of both windows (columns either lacks are kept as they are)."""
        cols = dict(self.columns)
        for name, col in other.columns.items():
            cols[name] = cols[name].merge(col) if name in cols else col
        starts = [s for s in (self.start, other.start) if s is not None]
        ends = [e for e in (self.end, other.end) if e is not None]
        return Profile(
            cols, self.rows + other.rows, min(starts, default=None), max(ends, default=None)
        )

    def summaries(self) -> dict[str, ColumnSummary]:
        return {name: col.summary() for name, col in self.columns.items()}


def merge_profiles(profiles: list[Profile]) -> Profile | None:
    """All ``profiles`` merged into one (None for none), merging each column's sketches once."""
    if not profiles:
        return None
    out = profiles[0]
    for p in profiles[1:]:
        out = out.merge(p)
    return out


def profile_frame(
    df: pd.DataFrame,
    *,
    kinds: dict[str, Kind] | None = None,
    numeric: list[str] | None = None,
    categorical: list[str] | None = None,
    categorical_max: int = 50,
    start: float | None = None,
    end: float | None = None,
) -> Profile:
    """The profile of ``df`` (a window of traffic); ``kinds`` fixes each column's kind (as the
    reference's), otherwise they are inferred as for drift."""
    import numpy as np

    from nbmlops.core.monitor.summary import summarize_column

    ds = _sketches()
    if kinds is None:
        kinds, _ = feature_kinds(
            df,
            [str(c) for c in df.columns],
            numeric=numeric,
            categorical=categorical,
            categorical_max=categorical_max,
        )
    columns: dict[str, ColumnProfile] = {}
    for name, kind in kinds.items():
        if name not in df.columns:
            continue
        s = summarize_column(df[name], kind, "window")
        col = ColumnProfile(kind, s.rows, s.nulls)
        if kind == "numeric":
            assert s.numeric is not None
            values = s.numeric.values  # type: ignore[attr-defined]
            col.sketch = ds.kll_doubles_sketch(SKETCH_K)
            if len(values):
                col.sketch.update(values)
                col.mean = float(values.mean())
                col.m2 = float(np.square(values - col.mean).sum())
                col.min, col.max = float(values[0]), float(values[-1])
            counts = s.numeric.value_counts(EXACT_VALUES)
            col.exact = None if counts is None else {float(k): int(v) for k, v in counts.items()}
        else:
            assert s.counts is not None
            col.sketch = ds.frequent_strings_sketch(ITEMS_LG_K)
            for item, count in s.counts.items():
                col.sketch.update(str(item), int(count))
            col.exact = None
        columns[name] = col
    return Profile(columns, len(df), start, end)
