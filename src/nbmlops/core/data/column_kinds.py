"""How a DataFrame column is classified (numeric, categorical, id-like) for schema inference,
drift and outliers, and the small conversions those share."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal

from nbmlops.exceptions import UsageError

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd

__all__ = [
    "ID_MIN_ROWS",
    "check_frame",
    "column_kind",
    "float_values",
    "is_discrete_dtype",
    "is_id_like",
    "is_numeric",
    "nunique",
    "to_python",
]

# A reference with at least this many rows, all distinct, marks an integer/string column as an id.
ID_MIN_ROWS = 20


def is_numeric(s: pd.Series) -> bool:
    """Numeric dtype, bool excluded."""
    from pandas.api import types as pdt

    return bool(pdt.is_numeric_dtype(s.dtype) and not pdt.is_bool_dtype(s.dtype))


def is_discrete_dtype(s: pd.Series) -> bool:
    """String, object, category or bool: the dtypes whose values can be a closed set."""
    import pandas as pd
    from pandas.api import types as pdt

    return bool(
        pdt.is_bool_dtype(s.dtype)
        or pdt.is_object_dtype(s.dtype)
        or pdt.is_string_dtype(s.dtype)
        or isinstance(s.dtype, pd.CategoricalDtype)
    )


def nunique(s: pd.Series) -> int | None:
    """Distinct non-null values, or None when the cells are unhashable."""
    try:
        return int(s.nunique(dropna=True))
    except TypeError:  # unhashable cells (lists, dicts)
        return None


def is_id_like(s: pd.Series) -> bool:
    """Integer or string column with >= ID_MIN_ROWS rows, no nulls, every value distinct."""
    from pandas.api import types as pdt

    if len(s) < ID_MIN_ROWS or s.isna().any():
        return False
    is_int = pdt.is_integer_dtype(s.dtype) and not pdt.is_bool_dtype(s.dtype)
    is_str = pdt.is_string_dtype(s.dtype) and not pdt.is_object_dtype(s.dtype)
    if not is_str and pdt.is_object_dtype(s.dtype):
        is_str = bool(s.map(lambda v: isinstance(v, str)).all())
    return bool((is_int or is_str) and nunique(s) == len(s))


def column_kind(s: pd.Series, categorical_max: int) -> Literal["numeric", "categorical"] | None:
    """How a reference column is compared for drift; ``None`` when it is not compared.

    Numeric (not bool) columns are numeric; string/object/category/bool columns with at most
    ``categorical_max`` distinct values are categorical. Id-like columns, datetimes and
    high-cardinality text are not compared.
    """
    if is_id_like(s):
        return None
    if is_numeric(s):
        return "numeric"
    if is_discrete_dtype(s):
        n = nunique(s)
        if n is not None and n <= categorical_max:
            return "categorical"
    return None


def to_python(value: Any) -> Any:
    """numpy / pandas scalars to plain Python, so pandera's YAML dump and json can take them."""
    item = getattr(value, "item", None)
    if callable(item):
        try:
            return item()
        except (ValueError, TypeError):
            pass
    return value


def float_values(s: pd.Series) -> np.ndarray:
    """Finite values of a numeric column as float64 (nulls and infinities dropped)."""
    import numpy as np
    import pandas as pd

    arr = pd.to_numeric(s, errors="coerce").to_numpy(dtype="float64", na_value=np.nan)
    return arr[np.isfinite(arr)]


def check_frame(value: object, name: str) -> pd.DataFrame:
    """``value`` itself if it is a pandas DataFrame; a UsageError naming ``name`` otherwise."""
    import pandas as pd

    if not isinstance(value, pd.DataFrame):
        raise UsageError(
            f"{name} must be a pandas DataFrame, got {type(value).__name__}",
            fix=f"pass a pandas DataFrame as {name} (convert with pd.DataFrame(...) or .to_pandas())",
        )
    return value
