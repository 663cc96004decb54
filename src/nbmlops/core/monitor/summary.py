"""Columns as the drift statistics read them: the kind of each feature, checked against what
the frame holds, and one :class:`ColumnSummary` per column (sorted values or value counts)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from nbmlops.core.data.column_kinds import column_kind
from nbmlops.core.monitor.stats import NumericSummary, SortedColumn
from nbmlops.exceptions import UsageError

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["ColumnSummary", "Kind", "feature_kinds", "summarize_column"]

Kind = Literal["numeric", "categorical"]


@dataclass
class ColumnSummary:
    """One side of one feature: row counts plus the numeric summary or the value counts."""

    kind: Kind
    rows: int  # all rows, nulls included
    nulls: int  # nulls (and, for numeric columns, infinities)
    numeric: NumericSummary | None = None
    counts: pd.Series | None = None  # categorical: non-null value -> count

    @property
    def values(self) -> int:
        """Values the tests see (rows less nulls)."""
        return self.rows - self.nulls


def feature_kinds(
    reference: pd.DataFrame,
    columns: list[str],
    *,
    numeric: list[str] | None,
    categorical: list[str] | None,
    categorical_max: int,
) -> tuple[dict[str, Kind], list[str]]:
    """(column -> kind, notes on the columns left out) for ``columns`` of the reference.

    Declared kinds win; the others are inferred as ``%validate`` infers them
    (:func:`~nbmlops.core.data.column_kinds.column_kind`): ids, datetimes and free text are
    not compared, and a note says so.
    """
    declared_num, declared_cat = set(numeric or ()), set(categorical or ())
    both = declared_num & declared_cat
    if both:
        raise UsageError(
            f"{', '.join(sorted(both))} declared both numeric and categorical",
            fix="name each column in only one of numeric=[...] and categorical=[...]",
        )
    for col in sorted(declared_num | declared_cat):
        if col not in reference.columns:
            raise UsageError(
                f"column {col!r} was declared numeric or categorical but the reference has no such column",
                fix=f"check the name; the reference has {_names(reference.columns)}",
            )
    kinds: dict[str, Kind] = {}
    notes: list[str] = []
    for col in columns:
        if col in declared_num:
            kinds[col] = "numeric"
        elif col in declared_cat:
            kinds[col] = "categorical"
        else:
            kind = column_kind(reference[col], categorical_max)
            if kind is None:
                notes.append(
                    f"{col}: not compared (an id, a datetime or text with more than "
                    f"{categorical_max} values); declare it categorical=[...] to compare it"
                )
                continue
            kinds[col] = kind
    return kinds, notes


def summarize_column(s: pd.Series, kind: Kind, side: str) -> ColumnSummary:
    """The summary of column ``s`` of the ``side`` frame ("reference" or "current")."""
    import numpy as np
    from pandas.api import types as pdt

    rows = len(s)
    if kind == "numeric":
        if pdt.is_bool_dtype(s.dtype):
            s = s.astype("float64")
        if pdt.is_float_dtype(s.dtype) and s.dtype == np.float64:
            arr = s.to_numpy(copy=False)  # NaN already marks a null
        elif pdt.is_numeric_dtype(s.dtype):
            arr = s.to_numpy(dtype="float64", na_value=np.nan)
        else:
            arr = _parse_numeric(s, side)
        finite = arr[np.isfinite(arr)]  # a new array, so it can be sorted in place
        return ColumnSummary(
            kind, rows, rows - len(finite), numeric=SortedColumn.from_values(finite, owned=True)
        )
    counts = _value_counts(s)
    return ColumnSummary(kind, rows, rows - int(counts.sum()), counts=counts)


def _value_counts(s: pd.Series) -> pd.Series:
    import pandas as pd

    try:
        counts = s.value_counts(dropna=True, sort=False)
    except TypeError:  # unhashable cells (lists, dicts): compare their text
        counts = s.dropna().astype(str).value_counts(sort=False)
    if isinstance(counts.index, pd.CategoricalIndex):
        counts.index = counts.index.astype(object)
    counts = counts[counts > 0]
    # one label type for both sides: 1 and "1" from a JSON log are the same category
    counts.index = pd.Index([_label(v) for v in counts.index], dtype=object)
    return counts.groupby(level=0, sort=False).sum()


def _label(value: Any) -> str:
    """A category as text, so frames, JSON logs and profiles name it alike (1.0 -> "1")."""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def _parse_numeric(s: pd.Series, side: str) -> Any:
    """Text of numbers as floats; a clear error when a value is not a number."""
    import numpy as np
    import pandas as pd

    parsed = pd.to_numeric(s, errors="coerce").to_numpy(dtype="float64", na_value=np.nan)
    bad = np.isnan(parsed) & s.notna().to_numpy()
    if bad.any():
        examples = ", ".join(repr(v) for v in s[bad].head(3).tolist())
        raise UsageError(
            f"column {s.name!r} is numeric but the {side} holds {int(bad.sum())} values that are "
            f"not numbers (e.g. {examples})",
            fix=f"declare it categorical=[{str(s.name)!r}], or clean the column "
            "(pd.to_numeric(df[col], errors='coerce') turns such values into nulls)",
        )
    return parsed


def _names(columns: Any, limit: int = 12) -> str:
    names = [str(c) for c in columns]
    shown = ", ".join(names[:limit])
    return shown + (f" and {len(names) - limit} more" if len(names) > limit else "")
