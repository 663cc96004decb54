"""Schema checks and drift detection for DataFrames, built on pandera and scipy.

Three steps, each usable on its own:

* :func:`infer_schema` turns a reference frame into a pandera ``DataFrameSchema`` (dtypes,
  nullability, numeric ranges, allowed categories, unique ids, strict column set);
* :func:`save_schema` / :func:`load_schema` keep that schema as pandera's own YAML, which a
  person can read and edit (widen a range, add a category) and load back;
* :func:`validate_frame` checks a frame against the schema (lazily, so every failure is
  collected) and, when a reference is given, compares each column's distribution with it.

The result is a :class:`ValidationReport`; :func:`raise_if_failed` turns a failed report into
:class:`~nbmlops.exceptions.ValidationFailed` for callers that want ``strict`` behaviour.

Plain Python: no IPython here. pandas, numpy, pandera, scipy and matplotlib are imported inside
the functions that need them, so importing this module costs nothing.
"""

from __future__ import annotations

import math
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, cast

from nbmlops.exceptions import UsageError, ValidationFailed

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd
    from matplotlib.figure import Figure
    from pandera.api.pandas.container import DataFrameSchema

__all__ = [
    "ColumnDrift",
    "ValidationReport",
    "infer_schema",
    "load_schema",
    "raise_if_failed",
    "save_schema",
    "validate_frame",
]

# A reference with at least this many rows, all distinct, marks an integer/string column as an id.
ID_MIN_ROWS = 20
# Float ranges are widened by this fraction of max(|min|, |max|, max - min) on each side.
RANGE_TOLERANCE = 1e-6
# Proportions below this count as this in PSI, so an empty bin or unseen category stays finite.
PSI_EPSILON = 1e-4
PSI_BINS = 10
# Tukey's fences: outliers lie beyond Q1 - k*IQR or Q3 + k*IQR of the reference.
IQR_FENCE = 1.5
# to_dict keeps at most this many failure cases (the count of all of them is kept too).
MAX_ERRORS_IN_DICT = 100

_ERROR_COLUMNS = ["column", "check", "failure_case", "index"]
# pandera's frame-level checks whose failure case is a column name.
_COLUMN_SET_CHECKS = {"column_in_schema", "column_in_dataframe", "column_ordered"}


# --------------------------------------------------------------------------------------------
# Column classification (shared by schema inference, drift and outliers)


def _is_numeric(s: pd.Series) -> bool:
    from pandas.api import types as pdt

    return bool(pdt.is_numeric_dtype(s.dtype) and not pdt.is_bool_dtype(s.dtype))


def _is_discrete_dtype(s: pd.Series) -> bool:
    """String, object, category or bool: the dtypes whose values can be a closed set."""
    import pandas as pd
    from pandas.api import types as pdt

    return bool(
        pdt.is_bool_dtype(s.dtype)
        or pdt.is_object_dtype(s.dtype)
        or pdt.is_string_dtype(s.dtype)
        or isinstance(s.dtype, pd.CategoricalDtype)
    )


def _nunique(s: pd.Series) -> int | None:
    try:
        return int(s.nunique(dropna=True))
    except TypeError:  # unhashable cells (lists, dicts)
        return None


def _is_id_like(s: pd.Series) -> bool:
    """Integer or string column with >= ID_MIN_ROWS rows, no nulls, every value distinct."""
    from pandas.api import types as pdt

    if len(s) < ID_MIN_ROWS or s.isna().any():
        return False
    is_int = pdt.is_integer_dtype(s.dtype) and not pdt.is_bool_dtype(s.dtype)
    is_str = pdt.is_string_dtype(s.dtype) and not pdt.is_object_dtype(s.dtype)
    if not is_str and pdt.is_object_dtype(s.dtype):
        is_str = bool(s.map(lambda v: isinstance(v, str)).all())
    return bool((is_int or is_str) and _nunique(s) == len(s))


def _column_kind(s: pd.Series, categorical_max: int) -> Literal["numeric", "categorical"] | None:
    """How a reference column is compared for drift; ``None`` when it is not compared.

    Numeric (not bool) columns are numeric; string/object/category/bool columns with at most
    ``categorical_max`` distinct values are categorical. Id-like columns, datetimes and
    high-cardinality text are not compared.
    """
    if _is_id_like(s):
        return None
    if _is_numeric(s):
        return "numeric"
    if _is_discrete_dtype(s):
        n = _nunique(s)
        if n is not None and n <= categorical_max:
            return "categorical"
    return None


def _is_str_or_null(value: Any) -> bool:
    import pandas as pd

    return isinstance(value, str) or bool(pd.isna(value))


def _to_python(value: Any) -> Any:
    """numpy / pandas scalars to plain Python, so pandera's YAML dump and json can take them."""
    item = getattr(value, "item", None)
    if callable(item):
        try:
            return item()
        except (ValueError, TypeError):
            pass
    return value


def _float_values(s: pd.Series) -> np.ndarray:
    """Finite values of a numeric column as float64 (nulls and infinities dropped)."""
    import numpy as np
    import pandas as pd

    arr = pd.to_numeric(s, errors="coerce").to_numpy(dtype="float64", na_value=np.nan)
    return arr[np.isfinite(arr)]


def _check_frame(value: object, name: str) -> pd.DataFrame:
    import pandas as pd

    if not isinstance(value, pd.DataFrame):
        raise UsageError(
            f"{name} must be a pandas DataFrame, got {type(value).__name__}",
            fix=f"pass a pandas DataFrame as {name} (convert with pd.DataFrame(...) or .to_pandas())",
        )
    return value


# --------------------------------------------------------------------------------------------
# Schema


def infer_schema(
    reference: pd.DataFrame, *, categorical_max: int = 50, range_margin: float = 0.0
) -> DataFrameSchema:
    """A pandera ``DataFrameSchema`` that ``reference`` itself passes.

    Per column:

    * ``dtype`` is the reference's dtype (``category`` for any categorical, so the YAML form
      checks the same thing as the in-memory one; pandera's datetimes check as ``ns``);
    * ``nullable`` only if the reference has nulls in that column;
    * numeric (not bool) columns get ``Check.in_range(min, max)``, inclusive; float bounds are
      widened by ``RANGE_TOLERANCE`` (relative) so values that round-trip through text still
      pass. The reference's min/max are a sample's extremes: new data from an unbounded
      distribution will exceed them now and then. ``range_margin`` widens each side by that
      fraction of ``max - min`` (rounded up for integer columns), or edit the saved YAML;
    * string/object/category/bool columns with at most ``categorical_max`` distinct values get
      ``Check.isin`` with the values seen;
    * integer or string columns with no nulls, at least ``ID_MIN_ROWS`` rows and all values
      distinct are ids: ``unique=True`` (and no range / category check).

    The schema is ``strict`` (a column the reference lacks is an error) but not ``ordered``.
    """
    reference = _check_frame(reference, "reference")
    if reference.shape[1] == 0 or len(reference) == 0:
        raise UsageError(
            f"the reference frame is empty ({reference.shape[0]} rows, {reference.shape[1]} columns)",
            fix="pass the training data (or another non-empty sample) as the reference",
        )
    if range_margin < 0:
        raise UsageError(f"range_margin must be >= 0, got {range_margin}", fix="pass e.g. 0.1")
    if categorical_max < 0:
        raise UsageError(f"categorical_max must be >= 0, got {categorical_max}", fix="pass e.g. 50")
    if not reference.columns.is_unique:
        dupes = sorted({str(c) for c in reference.columns[reference.columns.duplicated()]})
        raise UsageError(
            f"the reference has duplicate column names: {', '.join(dupes)}",
            fix="rename the columns so each name appears once",
        )

    import numpy as np
    import pandas as pd
    import pandera.pandas as pa
    from pandas.api import types as pdt

    columns: dict[Any, Any] = {}
    for name in reference.columns:
        s = reference[name]
        nullable = bool(s.isna().any())
        checks: list[Any] = []
        unique = False
        dtype: Any = s.dtype
        if isinstance(s.dtype, pd.CategoricalDtype):
            dtype = "category"
        elif pdt.is_object_dtype(s.dtype) and s.map(_is_str_or_null).all():
            # pandas 3 reads text as ``str``; pandera's string dtype accepts both that and
            # object columns of strings, while ``object`` would reject a ``str`` column.
            dtype = pd.StringDtype(na_value=np.nan)
        if _is_id_like(s):
            unique = True
        elif _is_numeric(s):
            values = _float_values(s)
            if len(values):
                lo, hi = _to_python(s.min()), _to_python(s.max())
                margin: Any = 0
                if math.isfinite(hi - lo):  # an infinite bound needs (and gets) no margin
                    margin = range_margin * (hi - lo)
                    if pdt.is_float_dtype(s.dtype):
                        margin += RANGE_TOLERANCE * max(abs(lo), abs(hi), hi - lo)
                    else:  # integer bounds stay integers
                        margin = math.ceil(margin)
                lo, hi = lo - margin, hi + margin
                if isinstance(lo, float):  # 10 significant digits: readable YAML, still outside
                    lo, hi = float(f"{lo:.10g}"), float(f"{hi:.10g}")
                checks.append(pa.Check.in_range(lo, hi, include_min=True, include_max=True))
        elif _is_discrete_dtype(s):
            n = _nunique(s)
            if n is not None and n <= categorical_max:
                allowed = sorted(
                    (_to_python(v) for v in s.dropna().unique()), key=lambda v: (str(type(v)), v)
                )
                checks.append(pa.Check.isin(allowed))
        columns[name] = pa.Column(dtype, checks=checks, nullable=nullable, unique=unique)
    return pa.DataFrameSchema(columns, strict=True, ordered=False, coerce=False)


def save_schema(schema: DataFrameSchema, path: str | os.PathLike[str]) -> Path:
    """Write ``schema`` to ``path`` as pandera YAML (``schema.to_yaml()``); returns the path."""
    _check_schema(schema)
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(cast(str, schema.to_yaml()), encoding="utf-8")
    return target


def load_schema(path: str | os.PathLike[str]) -> DataFrameSchema:
    """Read a schema written by :func:`save_schema` (and maybe edited) from ``path``.

    Raises :class:`~nbmlops.exceptions.UsageError` when the file is missing, is not valid YAML
    (the message names the line) or does not describe a pandera DataFrame schema.
    """
    import yaml
    from pandera.errors import SchemaDefinitionError, SchemaInitError
    from pandera.pandas import DataFrameSchema

    source = Path(path)
    if not source.is_file():
        raise UsageError(
            "schema file not found",
            where=str(source),
            fix="write one with save_schema(infer_schema(reference), path), or check the path",
        )
    text = source.read_text(encoding="utf-8")
    try:
        parsed = yaml.safe_load(text)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None) or getattr(err, "context_mark", None)
        line = f", line {mark.line + 1}" if mark is not None else ""
        problem = getattr(err, "problem", None) or str(err).splitlines()[0]
        raise UsageError(
            f"the schema file is not valid YAML: {problem}",
            where=f"{source}{line}",
            fix="fix the YAML there (check indentation and ':' after keys), or re-create the "
            "file with save_schema",
        ) from err
    _check_schema_keys(text, source)
    if not isinstance(parsed, dict) or not parsed.get("columns"):
        raise UsageError(
            "the schema file has no 'columns' mapping, so it is not a pandera DataFrame schema",
            where=str(source),
            fix="re-create it with save_schema(infer_schema(reference), path)",
        )
    try:
        schema = DataFrameSchema.from_yaml(text)
    except (
        SchemaDefinitionError,
        SchemaInitError,
        TypeError,
        ValueError,
        KeyError,
        AttributeError,
    ) as err:
        raise UsageError(
            f"the schema file does not describe a valid pandera schema: {type(err).__name__}: {err}",
            where=str(source),
            fix="undo the last edit (dtype names, check names and their options must be pandera's), "
            "or re-create the file with save_schema",
        ) from err
    return schema


# Keys pandera's YAML reader understands; it silently ignores any other key, so a typo in an
# edited file (``stict: true``, ``in_rnge:``) would quietly drop a check. load_schema refuses them.
_SCHEMA_KEYS = frozenset(
    {
        "schema_type", "version", "api", "dataframe_library", "columns", "checks", "index",
        "multiindex", "metadata", "dtype", "coerce", "strict", "name", "ordered", "unique",
        "report_duplicates", "unique_column_names", "add_missing_columns", "title",
        "description", "drop_invalid_rows",
    }
)  # fmt: skip
_COLUMN_KEYS = frozenset(
    {
        "title", "description", "dtype", "nullable", "checks", "name", "unique", "coerce",
        "required", "regex", "default", "report_duplicates", "drop_invalid_rows",
    }
)  # fmt: skip


def _check_schema_keys(text: str, source: Path) -> None:
    """Refuse keys pandera would ignore, naming the line (pandera 0.35 drops them silently)."""
    import yaml
    from pandera.pandas import Check

    def bad(node: Any, what: str, known: str) -> UsageError:
        return UsageError(
            f"unknown {what} {node.value!r} in the schema file",
            where=f"{source}, line {node.start_mark.line + 1}",
            fix=f"check the spelling; {known}",
        )

    root = yaml.compose(text)
    if not isinstance(root, yaml.MappingNode):
        return
    for key, value in root.value:
        if key.value not in _SCHEMA_KEYS:
            raise bad(key, "schema key", "known keys: " + ", ".join(sorted(_SCHEMA_KEYS)))
        if key.value != "columns":
            continue
        if isinstance(value, yaml.MappingNode):
            column_nodes = [v for _, v in value.value]
        elif isinstance(value, yaml.SequenceNode):
            column_nodes = list(value.value)
        else:
            continue
        for col in column_nodes:
            if not isinstance(col, yaml.MappingNode):
                continue
            for ck, _ in col.value:
                name = ck.value
                if name in _COLUMN_KEYS or callable(getattr(Check, str(name), None)):
                    continue
                raise bad(
                    ck,
                    "column key or check",
                    "column keys are dtype, nullable, unique, coerce, required, ... and checks "
                    "are pandera Check names such as in_range, isin, ge, le, str_matches",
                )


def _check_schema(schema: object) -> DataFrameSchema:
    from pandera.pandas import DataFrameSchema

    if not isinstance(schema, DataFrameSchema):
        raise UsageError(
            f"schema must be a pandera.pandas.DataFrameSchema, got {type(schema).__name__}",
            fix="build one with infer_schema(reference) or load_schema(path)",
        )
    return schema


# --------------------------------------------------------------------------------------------
# Report


@dataclass
class ColumnDrift:
    """How far one column of the current frame moved from the reference.

    ``test`` is ``"ks"`` (two-sample Kolmogorov-Smirnov) for numeric columns and ``"chi2"``
    (chi-square on the category counts) for categorical ones; ``psi`` is the population
    stability index; ``drifted`` follows the rule in :func:`validate_frame`.
    """

    column: str
    kind: Literal["numeric", "categorical"]
    test: Literal["ks", "chi2"]
    statistic: float
    p_value: float
    psi: float
    drifted: bool


@dataclass
class ValidationReport:
    """What :func:`validate_frame` found.

    ``passed`` is true when there is no schema error and no drifted column. ``schema_errors``
    has one row per failure case from pandera's lazy validation, with columns ``column``,
    ``check``, ``failure_case``, ``index`` (a missing or unexpected column is named in
    ``column``). ``outliers`` counts, per numeric column, values beyond Tukey's fences
    (``Q1 - 1.5*IQR``, ``Q3 + 1.5*IQR``) of the reference (of the frame itself when no reference
    was given); it is informational and does not affect ``passed``. ``drift`` has one entry per
    compared column. ``nulls`` and ``dtypes`` describe the current frame per column and
    ``columns`` lists every column involved (the schema's, then unexpected ones).
    """

    passed: bool
    schema_errors: pd.DataFrame
    outliers: dict[str, int]
    drift: list[ColumnDrift]
    rows: int
    nulls: dict[str, int] = field(default_factory=dict)
    dtypes: dict[str, str] = field(default_factory=dict)
    columns: list[str] = field(default_factory=list)

    @property
    def drifted_columns(self) -> list[str]:
        return [d.column for d in self.drift if d.drifted]

    def _error_columns(self) -> list[str]:
        if self.schema_errors.empty:
            return []
        cols = self.schema_errors["column"].dropna().astype(str)
        return list(dict.fromkeys(cols))

    def summary(self) -> str:
        """A few lines for a person: verdict, schema errors, drift, outliers."""
        lines = [
            f"Validation {'passed' if self.passed else 'FAILED'}: {self.rows} rows, "
            f"{len(self.columns)} columns."
        ]
        if self.schema_errors.empty:
            lines.append("Schema: ok.")
        else:
            errs = self.schema_errors
            per_col = []
            for col in self._error_columns():
                checks = errs.loc[errs["column"].astype(str) == col, "check"].astype(str)
                per_col.append(f"{col} ({', '.join(dict.fromkeys(checks))})")
            n_other = int(errs["column"].isna().sum())
            if n_other:
                per_col.append(f"frame-level checks ({n_other})")
            lines.append(f"Schema: {len(errs)} failure cases in " + "; ".join(per_col) + ".")
        if self.drift:
            drifted = [d for d in self.drift if d.drifted]
            if drifted:
                parts = [
                    f"{d.column} ({d.test} p={d.p_value:.2g}, psi={d.psi:.2f})" for d in drifted
                ]
                lines.append(
                    f"Drift: {len(drifted)} of {len(self.drift)} compared columns: "
                    + ", ".join(parts)
                    + "."
                )
            else:
                lines.append(f"Drift: none in {len(self.drift)} compared columns.")
        flagged = {c: n for c, n in self.outliers.items() if n}
        if flagged:
            lines.append(
                "Outliers (beyond IQR fences): "
                + ", ".join(f"{c} {n}" for c, n in flagged.items())
                + "."
            )
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.summary()

    def to_table(self) -> pd.DataFrame:
        """One row per column: presence, dtype, schema result, nulls, outliers, drift."""
        import pandas as pd

        errs = self.schema_errors
        drift = {d.column: d for d in self.drift}
        rows = []
        for col in self.columns:
            mine = errs[errs["column"].astype(str) == col] if not errs.empty else errs
            checks = mine["check"].astype(str) if not mine.empty else pd.Series([], dtype=object)
            present = col in self.dtypes
            d = drift.get(col)
            rows.append(
                {
                    "column": col,
                    "present": present,
                    "expected": not bool((checks == "column_in_schema").any()),
                    "dtype": self.dtypes.get(col),
                    "dtype_ok": present and not bool(checks.str.startswith("dtype(").any()),
                    "nulls": self.nulls.get(col),
                    "schema_errors": len(mine),
                    "checks_failed": ", ".join(dict.fromkeys(checks)),
                    "outliers": self.outliers.get(col),
                    "test": d.test if d else None,
                    "statistic": d.statistic if d else math.nan,
                    "p_value": d.p_value if d else math.nan,
                    "psi": d.psi if d else math.nan,
                    "drifted": d.drifted if d else False,
                }
            )
        return pd.DataFrame(rows).astype({"nulls": "Int64", "outliers": "Int64"})

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly form for logging to a run (at most MAX_ERRORS_IN_DICT failure cases)."""
        errs = self.schema_errors
        records = [
            {k: _jsonable(v) for k, v in rec.items()}
            for rec in errs.head(MAX_ERRORS_IN_DICT).to_dict(orient="records")
        ]
        return {
            "passed": bool(self.passed),
            "rows": int(self.rows),
            "columns": list(self.columns),
            "schema_error_count": len(errs),
            "schema_error_columns": self._error_columns(),
            "schema_errors": records,
            "schema_errors_truncated": len(errs) > MAX_ERRORS_IN_DICT,
            "outliers": {k: int(v) for k, v in self.outliers.items()},
            "nulls": {k: int(v) for k, v in self.nulls.items()},
            "dtypes": dict(self.dtypes),
            "drift": [{k: _jsonable(v) for k, v in asdict(d).items()} for d in self.drift],
            "drifted_columns": self.drifted_columns,
        }

    def plot(self, current: pd.DataFrame, reference: pd.DataFrame, max_columns: int = 12) -> Figure:
        """Reference vs current, one axis per column: overlaid histograms for numeric columns,
        paired bars of proportions for categorical ones. Drifted columns come first, titled in
        red. Uses ``matplotlib.figure.Figure`` directly (no pyplot state), so it works headless;
        save it with ``fig.savefig(path)``.
        """
        current = _check_frame(current, "current")
        reference = _check_frame(reference, "reference")
        from matplotlib.figure import Figure

        shown: list[tuple[str, Literal["numeric", "categorical"], ColumnDrift | None]] = []
        if self.drift:
            ordered = sorted(self.drift, key=lambda d: not d.drifted)
            shown = [(d.column, d.kind, d) for d in ordered]
        else:
            for col in reference.columns:
                kind = _column_kind(reference[col], 50)
                if kind is not None and col in current.columns:
                    shown.append((str(col), kind, None))
        # Report names are str(label); map them back to the frames' own labels.
        cur_labels = {str(c): c for c in current.columns}
        ref_labels = {str(c): c for c in reference.columns}
        shown = [t for t in shown if t[0] in cur_labels and t[0] in ref_labels]
        shown = shown[: max(0, max_columns)]

        n = len(shown)
        ncols = min(3, max(1, n))
        nrows = max(1, math.ceil(n / ncols))
        fig = Figure(figsize=(4.2 * ncols, 3.0 * nrows), layout="constrained")
        if n == 0:
            ax = fig.add_subplot(1, 1, 1)
            ax.text(0.5, 0.5, "no comparable columns", ha="center", va="center")
            ax.set_axis_off()
            return fig
        for i, (col, kind, d) in enumerate(shown):
            ax = fig.add_subplot(nrows, ncols, i + 1)
            ref_s, cur_s = reference[ref_labels[col]], current[cur_labels[col]]
            if kind == "numeric":
                _plot_numeric(ax, ref_s, cur_s)
            else:
                _plot_categorical(ax, ref_s, cur_s)
            title = col
            if d is not None:
                title += f"  ({d.test} p={d.p_value:.2g}, psi={d.psi:.2f})"
            ax.set_title(
                title,
                fontsize=9,
                color="red" if d is not None and d.drifted else "black",
                fontweight="bold" if d is not None and d.drifted else "normal",
            )
            if i == 0:
                ax.legend(fontsize=8)
        return fig


def _plot_numeric(ax: Any, ref: pd.Series, cur: pd.Series) -> None:
    import numpy as np

    r, c = _float_values(ref), _float_values(cur)
    both = np.concatenate([r, c])
    if len(both) == 0:
        return
    lo, hi = float(both.min()), float(both.max())
    if np.all(both == np.round(both)) and hi - lo <= 60:
        bins = np.arange(lo - 0.5, hi + 1.5)  # one bar per integer
    else:
        if lo == hi:
            lo, hi = lo - 0.5, hi + 0.5
        bins = np.linspace(lo, hi, 31)
    if len(r):
        ax.hist(r, bins=bins, density=True, alpha=0.5, label="reference", color="tab:blue")
    if len(c):
        ax.hist(c, bins=bins, density=True, alpha=0.5, label="current", color="tab:orange")


def _plot_categorical(ax: Any, ref: pd.Series, cur: pd.Series, top: int = 15) -> None:
    import numpy as np

    rp = ref.dropna().astype(str).value_counts(normalize=True)
    cp = cur.dropna().astype(str).value_counts(normalize=True)
    cats = list(dict.fromkeys([*rp.index, *cp.index]))
    cats.sort(key=lambda k: -max(rp.get(k, 0.0), cp.get(k, 0.0)))
    cats = cats[:top]
    x = np.arange(len(cats))
    ax.bar(x - 0.2, [rp.get(k, 0.0) for k in cats], 0.4, label="reference", color="tab:blue")
    ax.bar(x + 0.2, [cp.get(k, 0.0) for k in cats], 0.4, label="current", color="tab:orange")
    ax.set_xticks(x, [k if len(k) <= 12 else k[:11] + "…" for k in cats], fontsize=7)
    if len(cats) > 4:
        ax.tick_params(axis="x", labelrotation=45)


def _jsonable(value: Any) -> Any:
    value = _to_python(value)
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    try:
        import pandas as pd

        if pd.isna(value):
            return None
    except (TypeError, ValueError):
        pass
    return str(value)


# --------------------------------------------------------------------------------------------
# Validation


def _schema_errors(schema: DataFrameSchema, df: pd.DataFrame) -> pd.DataFrame:
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


def _psi(ref_p: np.ndarray, cur_p: np.ndarray) -> float:
    import numpy as np

    r = np.clip(ref_p, PSI_EPSILON, None)
    c = np.clip(cur_p, PSI_EPSILON, None)
    return float(np.sum((c - r) * np.log(c / r)))


def _numeric_drift(ref: pd.Series, cur: pd.Series) -> tuple[float, float, float] | None:
    import numpy as np
    from scipy.stats import ks_2samp

    r, c = _float_values(ref), _float_values(cur)
    if len(r) == 0 or len(c) == 0:
        return None
    ks = ks_2samp(r, c)
    edges = np.unique(np.quantile(r, np.linspace(0.0, 1.0, PSI_BINS + 1)[1:-1]))
    nbins = len(edges) + 1
    r_counts = np.bincount(np.searchsorted(edges, r, side="right"), minlength=nbins)
    c_counts = np.bincount(np.searchsorted(edges, c, side="right"), minlength=nbins)
    psi = _psi(r_counts / len(r), c_counts / len(c))
    return float(ks.statistic), float(ks.pvalue), psi


def _categorical_drift(ref: pd.Series, cur: pd.Series) -> tuple[float, float, float] | None:
    import numpy as np
    import pandas as pd
    from scipy.stats import chi2_contingency

    r = ref.dropna().astype(object).value_counts()
    c = cur.dropna().astype(object).value_counts()
    if r.sum() == 0 or c.sum() == 0:
        return None
    # The union of categories; one seen on a single side gets a zero count on the other.
    table = pd.concat([r.rename("ref"), c.rename("cur")], axis=1).fillna(0)
    table = table[(table["ref"] + table["cur"]) > 0]
    counts = table.to_numpy(dtype="float64").T  # 2 x k
    if counts.shape[1] < 2:  # a single category on both sides: nothing can have moved
        stat, p = 0.0, 1.0
    else:
        res = chi2_contingency(counts)
        stat, p = float(res.statistic), float(res.pvalue)
    psi = _psi(counts[0] / counts[0].sum(), counts[1] / counts[1].sum())
    return stat, p, float(np.round(psi, 12))


def _outlier_counts(df: pd.DataFrame, reference: pd.DataFrame | None) -> dict[str, int]:
    import numpy as np

    out: dict[str, int] = {}
    for col in df.columns:
        s = df[col]
        if not _is_numeric(s):
            continue
        base = s
        if reference is not None:
            if col not in reference.columns or not _is_numeric(reference[col]):
                continue
            base = reference[col]
        if _is_id_like(base):
            continue
        b = _float_values(base)
        if len(b) == 0:
            continue
        q1, q3 = np.quantile(b, [0.25, 0.75])
        iqr = q3 - q1
        if iqr <= 0:  # degenerate fences; the schema's range check covers constant columns
            continue
        v = _float_values(s)
        lo, hi = q1 - IQR_FENCE * iqr, q3 + IQR_FENCE * iqr
        out[str(col)] = int(np.count_nonzero((v < lo) | (v > hi)))
    return out


def validate_frame(
    df: pd.DataFrame,
    *,
    reference: pd.DataFrame | None = None,
    schema: DataFrameSchema | str | os.PathLike[str] | None = None,
    p_threshold: float = 0.01,
    psi_threshold: float = 0.2,
    categorical_max: int = 50,
) -> ValidationReport:
    """Check ``df`` against a schema and, when ``reference`` is given, for drift.

    ``schema`` is a pandera ``DataFrameSchema`` or the path of a YAML file from
    :func:`save_schema`; it defaults to ``infer_schema(reference, categorical_max=...)``. One of
    ``schema`` / ``reference`` is required. Validation is lazy: every failure case is collected.

    Drift (only with a reference) is measured on each column the reference and ``df`` share
    that is numeric in both (two-sample KS test) or categorical in the reference
    (string/object/category/bool with at most ``categorical_max`` distinct values; chi-square
    test on the counts of the union of categories, so one seen on one side only counts as 0 on
    the other). Nulls are left out of both tests (the schema checks nullability). Both kinds
    also get PSI: numeric over ``PSI_BINS`` reference-quantile bins, categorical over the
    categories; empty bins count as ``PSI_EPSILON``. Id-like columns (see :func:`infer_schema`)
    and datetimes are not compared.

    The drift rule::

        drifted = (p < p_threshold and (psi >= psi_threshold or kind == "categorical"))
                  or psi >= psi_threshold

    which is the same as: ``psi >= psi_threshold`` flags any column; a categorical column is
    also flagged by a significant chi-square alone. The KS p-value is reported for numeric
    columns, but a numeric column is flagged by the size of its shift (PSI), not by
    significance alone, so large samples do not flag negligible shifts.

    ``passed`` is false when there is any schema failure case or drifted column. Call
    :func:`raise_if_failed` to turn that into an exception.
    """
    df = _check_frame(df, "df")
    if reference is not None:
        reference = _check_frame(reference, "reference")
        if len(reference) == 0 or reference.shape[1] == 0:
            raise UsageError(
                "the reference frame is empty",
                fix="pass the training data (or another non-empty sample) as the reference",
            )
    if not 0.0 < p_threshold < 1.0:
        raise UsageError(
            f"p_threshold must be between 0 and 1, got {p_threshold}", fix="use e.g. 0.01"
        )
    if psi_threshold <= 0:
        raise UsageError(f"psi_threshold must be positive, got {psi_threshold}", fix="use e.g. 0.2")

    if schema is None:
        if reference is None:
            raise UsageError(
                "validate_frame needs a schema or a reference frame",
                fix="pass reference=<training frame> or schema=<DataFrameSchema or YAML path>",
            )
        schema = infer_schema(reference, categorical_max=categorical_max)
    elif isinstance(schema, str | os.PathLike):
        schema = load_schema(schema)
    schema = _check_schema(schema)

    errors = _schema_errors(schema, df)

    drift: list[ColumnDrift] = []
    if reference is not None:
        for col in reference.columns:
            if col not in df.columns:
                continue
            kind = _column_kind(reference[col], categorical_max)
            result = None
            if kind == "numeric" and _is_numeric(df[col]):
                result = _numeric_drift(reference[col], df[col])
            elif kind == "categorical":
                result = _categorical_drift(reference[col], df[col])
            if kind is None or result is None:
                continue
            stat, p, psi = result
            drifted = (
                p < p_threshold and (psi >= psi_threshold or kind == "categorical")
            ) or psi >= psi_threshold
            drift.append(
                ColumnDrift(
                    column=str(col),
                    kind=kind,
                    test="ks" if kind == "numeric" else "chi2",
                    statistic=stat,
                    p_value=p,
                    psi=psi,
                    drifted=bool(drifted),
                )
            )

    columns = [str(c) for c in schema.columns]
    columns += [str(c) for c in df.columns if str(c) not in columns]
    return ValidationReport(
        passed=errors.empty and not any(d.drifted for d in drift),
        schema_errors=errors,
        outliers=_outlier_counts(df, reference),
        drift=drift,
        rows=len(df),
        nulls={str(c): int(df[c].isna().sum()) for c in df.columns},
        dtypes={str(c): str(df[c].dtype) for c in df.columns},
        columns=columns,
    )


def raise_if_failed(report: ValidationReport) -> ValidationReport:
    """Raise :class:`~nbmlops.exceptions.ValidationFailed` (carrying ``report``) unless it
    passed; return the report otherwise, so calls can be chained."""
    if not isinstance(report, ValidationReport):
        raise UsageError(
            f"raise_if_failed takes a ValidationReport, got {type(report).__name__}",
            fix="pass the result of validate_frame(...)",
        )
    if report.passed:
        return report
    first = report.summary().splitlines()
    raise ValidationFailed(
        report,
        what="data validation failed: " + " ".join(first[1:]),
        fix="see err.report.to_table() and err.report.schema_errors; fix the data, or edit the "
        "schema YAML (save_schema / load_schema) if the new values are legitimate",
    )
