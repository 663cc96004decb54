"""Schemas for DataFrames: :func:`infer_schema` builds a pandera ``DataFrameSchema`` from a
reference frame; :func:`save_schema` / :func:`load_schema` keep it as pandera's own YAML, which a
person can read and edit (widen a range, add a category) and load back."""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from nbmlops.core.data.column_kinds import (
    check_frame,
    float_values,
    is_discrete_dtype,
    is_id_like,
    is_numeric,
    nunique,
    to_python,
)
from nbmlops.exceptions import UsageError

if TYPE_CHECKING:
    import pandas as pd
    from pandera.api.pandas.container import DataFrameSchema

__all__ = ["check_schema", "infer_schema", "load_schema", "save_schema"]

# Float ranges are widened by this fraction of max(|min|, |max|, max - min) on each side.
RANGE_TOLERANCE = 1e-6


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
    reference = check_frame(reference, "reference")
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
        if is_id_like(s):
            unique = True
        elif is_numeric(s):
            values = float_values(s)
            if len(values):
                lo, hi = to_python(s.min()), to_python(s.max())
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
        elif is_discrete_dtype(s):
            n = nunique(s)
            if n is not None and n <= categorical_max:
                allowed = sorted(
                    (to_python(v) for v in s.dropna().unique()), key=lambda v: (str(type(v)), v)
                )
                checks.append(pa.Check.isin(allowed))
        columns[name] = pa.Column(dtype, checks=checks, nullable=nullable, unique=unique)
    return pa.DataFrameSchema(columns, strict=True, ordered=False, coerce=False)


def save_schema(schema: DataFrameSchema, path: str | os.PathLike[str]) -> Path:
    """Write ``schema`` to ``path`` as pandera YAML (``schema.to_yaml()``); returns the path."""
    check_schema(schema)
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


def check_schema(schema: object) -> DataFrameSchema:
    """``schema`` itself if it is a pandera ``DataFrameSchema``; a UsageError otherwise."""
    from pandera.pandas import DataFrameSchema

    if not isinstance(schema, DataFrameSchema):
        raise UsageError(
            f"schema must be a pandera.pandas.DataFrameSchema, got {type(schema).__name__}",
            fix="build one with infer_schema(reference) or load_schema(path)",
        )
    return schema


def _is_str_or_null(value: Any) -> bool:
    import pandas as pd

    return isinstance(value, str) or bool(pd.isna(value))
