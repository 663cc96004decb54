"""What the checks of a frame flag: pandera's schema failure cases and, per numeric column,
the values beyond Tukey's fences."""

from __future__ import annotations

from typing import TYPE_CHECKING

from nbmlops.core.data.column_kinds import float_values, is_id_like, is_numeric

if TYPE_CHECKING:
    import pandas as pd
    from pandera.api.pandas.container import DataFrameSchema

__all__ = ["IQR_FENCE", "outlier_counts", "schema_errors"]

# Tukey's fences: outliers lie beyond Q1 - k*IQR or Q3 + k*IQR of the reference.
IQR_FENCE = 1.5

_ERROR_COLUMNS = ["column", "check", "failure_case", "index"]
# pandera's frame-level checks whose failure case is a column name.
_COLUMN_SET_CHECKS = {"column_in_schema", "column_in_dataframe", "column_ordered"}


def schema_errors(schema: DataFrameSchema, df: pd.DataFrame) -> pd.DataFrame:
    """pandera's lazy failure cases of ``df``, one row each (empty when it passes)."""
    import pandas as pd
    from pandera.errors import SchemaErrors

    try:
        schema.validate(df, lazy=True)
    except SchemaErrors as err:
        fc = err.failure_cases
    else:
        return pd.DataFrame({c: pd.Series([], dtype=object) for c in _ERROR_COLUMNS})
    out = pd.DataFrame(
        {c: (fc[c] if c in fc.columns else None) for c in _ERROR_COLUMNS}, index=fc.index
    ).astype(object)
    # Missing / unexpected columns are frame-level failures whose failure case is the column.
    frame_level = out["column"].isna() & out["check"].isin(_COLUMN_SET_CHECKS)
    out.loc[frame_level, "column"] = out.loc[frame_level, "failure_case"]
    out = out.where(out.notna(), None)
    return out.sort_index(kind="stable").reset_index(drop=True)


def outlier_counts(df: pd.DataFrame, reference: pd.DataFrame | None) -> dict[str, int]:
    """Per numeric column, how many values lie beyond the IQR fences of ``reference`` (or ``df``)."""
    import numpy as np

    out: dict[str, int] = {}
    for col in df.columns:
        s = df[col]
        if not is_numeric(s):
            continue
        base = s
        if reference is not None:
            if col not in reference.columns or not is_numeric(reference[col]):
                continue
            base = reference[col]
        if is_id_like(base):
            continue
        b = float_values(base)
        if len(b) == 0:
            continue
        q1, q3 = np.quantile(b, [0.25, 0.75])
        iqr = q3 - q1
        if iqr <= 0:  # degenerate fences; the schema's range check covers constant columns
            continue
        v = float_values(s)
        lo, hi = q1 - IQR_FENCE * iqr, q3 + IQR_FENCE * iqr
        out[str(col)] = int(np.count_nonzero((v < lo) | (v > hi)))
    return out
