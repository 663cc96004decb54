"""A small, JSON-serialisable statistical profile of a DataFrame or Series.

Stored with every committed frame version (``DatasetVersion.profile``) so that listings and
diffs can show counts, ranges and top values without loading the data. The cost is bounded:
distinct counts and top values are exact up to ``EXACT_ROWS`` rows and estimated from a fixed
random sample above that (the profile says so); every other figure is exact.
"""

from __future__ import annotations

import math
from typing import Any

__all__ = ["EXACT_ROWS", "SAMPLE_ROWS", "TOP_VALUES", "profile_frame"]

# Above this many rows distinct counts and top values come from a sample.
EXACT_ROWS = 1_000_000
SAMPLE_ROWS = 100_000
TOP_VALUES = 10
_QUANTILES = {"p01": 0.01, "p25": 0.25, "p50": 0.5, "p75": 0.75, "p99": 0.99}


def profile_frame(obj: Any) -> dict[str, Any]:
    """Profile a pandas DataFrame or Series.

    Returns ``{"kind", "rows", "columns": {name: stats}, "sampled", "note"}``, columns in
    frame order (``len(profile["columns"])`` is the column count). Each column's stats hold
    ``dtype``, ``count`` (non-null), ``nulls``, ``unique`` (with ``unique_exact``); numeric
    columns add ``min``, ``max``, ``mean``, ``std`` and the
    quantiles ``p01``, ``p25``, ``p50``, ``p75``, ``p99``; datetime and timedelta columns add
    ``min`` / ``max`` as text; string, object, categorical and boolean columns add ``top``: up
    to 10 ``[value, count]`` pairs, most frequent first. NaN and infinities become ``None``.
    """
    import pandas as pd

    from nbmlops.exceptions import UsageError

    if isinstance(obj, pd.Series):
        kind, items = "series", [(obj.name, obj)]
    elif isinstance(obj, pd.DataFrame):
        kind, items = "dataframe", list(obj.items())
    else:
        raise UsageError(
            f"profile_frame takes a pandas DataFrame or Series, got {type(obj).__name__}",
            where="profile_frame",
        )
    rows = len(obj)
    sampled = rows > EXACT_ROWS
    sample_pos = _sample_positions(rows) if sampled else None
    per_column: dict[str, Any] = {}
    for name, col in items:
        key = str(name)
        while key in per_column:  # duplicate labels (or labels with the same text)
            key += "'"
        per_column[key] = _profile_column(col, sample_pos)
    note = None
    if sampled:
        note = (
            f"unique and top values estimated from a random sample of {SAMPLE_ROWS:,} rows "
            f"(of {rows:,}); other figures are exact"
        )
    return {
        "kind": kind,
        "rows": rows,
        "columns": per_column,
        "sampled": sampled,
        "note": note,
    }


def _sample_positions(rows: int) -> Any:
    import numpy as np

    rng = np.random.default_rng(0)  # fixed: the same data always gets the same profile
    return np.sort(rng.choice(rows, size=SAMPLE_ROWS, replace=False))


def _profile_column(col: Any, sample_pos: Any) -> dict[str, Any]:
    import pandas as pd
    from pandas.api import types as pdt

    dtype = col.dtype
    nulls = int(col.isna().sum())
    stats: dict[str, Any] = {"dtype": str(dtype), "count": len(col) - nulls, "nulls": nulls}
    is_bool = pdt.is_bool_dtype(dtype)
    is_cat = isinstance(dtype, pd.CategoricalDtype)
    if pdt.is_numeric_dtype(dtype) and not is_bool and not is_cat:
        stats.update(_numeric_stats(col))
    elif pdt.is_datetime64_any_dtype(dtype) or pdt.is_timedelta64_dtype(dtype):
        present = col.dropna()
        stats["min"] = _plain(present.min()) if len(present) else None
        stats["max"] = _plain(present.max()) if len(present) else None
    want_top = is_bool or is_cat or pdt.is_string_dtype(dtype) or pdt.is_object_dtype(dtype)
    stats.update(_distinct_stats(col, sample_pos, want_top))
    return stats


def _numeric_stats(col: Any) -> dict[str, Any]:
    import numpy as np

    present = col.dropna()
    if _is_complex(present.dtype):
        return {}
    values = present.to_numpy(dtype="float64", na_value=np.nan)
    finite = values[np.isfinite(values)]
    out: dict[str, Any] = {
        "min": _plain(present.min()) if len(present) else None,
        "max": _plain(present.max()) if len(present) else None,
        "mean": _plain(finite.mean()) if finite.size else None,
        "std": _plain(finite.std(ddof=1)) if finite.size > 1 else None,
    }
    if finite.size:
        qs = np.quantile(finite, list(_QUANTILES.values()))
        out.update({k: _plain(q) for k, q in zip(_QUANTILES, qs, strict=True)})
    else:
        out.update(dict.fromkeys(_QUANTILES))
    return out


def _is_complex(dtype: Any) -> bool:
    from pandas.api import types as pdt

    return bool(pdt.is_complex_dtype(dtype))


def _distinct_stats(col: Any, sample_pos: Any, want_top: bool) -> dict[str, Any]:
    """Distinct count (and top values): exact, or estimated from the sample."""
    try:
        if sample_pos is None:
            counts = col.value_counts(dropna=True, sort=want_top)
            out: dict[str, Any] = {"unique": len(counts), "unique_exact": True}
            if want_top:
                out["top"] = [[_plain(v), int(c)] for v, c in counts.head(TOP_VALUES).items()]
            return out
        sample = col.iloc[sample_pos]
        non_null = int(sample.notna().sum())
        counts = sample.value_counts(dropna=True, sort=want_top)
    except TypeError:  # unhashable objects (lists, dicts) in an object column
        return {"unique": None, "unique_exact": False}
    total_non_null = len(col) - int(col.isna().sum())
    out = {"unique": _duj1_estimate(counts, non_null, total_non_null), "unique_exact": False}
    if want_top:
        scale = total_non_null / non_null if non_null else 0.0
        out["top"] = [
            [_plain(v), round(int(c) * scale)] for v, c in counts.head(TOP_VALUES).items()
        ]
        out["top_exact"] = False
    return out


def _duj1_estimate(counts: Any, sample_n: int, total_n: int) -> int:
    """Haas & Stokes' Duj1 estimator, as PostgreSQL's ANALYZE uses it.

    ``n*d / (n - f1 + f1*n/N)`` for ``d`` distinct values in a sample of ``n`` out of ``N``
    with ``f1`` values seen once: all-distinct samples scale to ``N``, samples without
    singletons (every value seen again) stay at ``d``.
    """
    if sample_n == 0:
        return 0
    d = len(counts)
    f1 = int((counts == 1).sum())
    denominator = sample_n - f1 + f1 * sample_n / total_n
    estimate = sample_n * d / denominator if denominator > 0 else total_n
    return int(min(max(round(estimate), d), total_n))


def _plain(x: Any) -> Any:
    """A JSON-native value: numpy scalars unboxed, NaN/inf to None, timestamps as ISO text."""
    import numpy as np
    import pandas as pd

    if x is None or x is pd.NA or x is pd.NaT:
        return None
    if isinstance(x, np.generic):
        x = x.item()
    if isinstance(x, bool | int | str):
        return x
    if isinstance(x, float):
        return x if math.isfinite(x) else None
    if isinstance(x, pd.Timestamp):
        return x.isoformat()
    if isinstance(x, pd.Timedelta):
        return str(x)
    if hasattr(x, "isoformat"):
        return x.isoformat()
    return str(x)
