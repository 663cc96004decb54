"""Request bodies checked against a model's MLflow signature before the model sees them.

Accepted bodies (JSON):

* a list of records: ``[{"f0": 1.0, "f1": 2}, ...]``;
* ``{"records": [...]}``, ``{"dataframe_records": [...]}`` or ``{"instances": [...]}``;
* MLflow's split format: ``{"dataframe_split": {"columns": [...], "data": [[...], ...]}}``.

Next to the input key, an object body may carry MLflow's ``"params"`` object (its scoring
server's name for inference parameters). The gateway knows one: ``{"predict_proba": true}``
asks a classifier for class probabilities (see :func:`split_params`).

Every cell is checked against the column's type in the signature; a missing or unknown
column, a value of the wrong type, a null/NaN where the column is required, or a number its
column's type cannot hold (an infinite or 400-digit number for a float, 2**63 for a long) all
become :class:`InvalidInput` (HTTP 422) naming the field and the row; so does any value the
conversion to the model's array or DataFrame still refuses (a date pandas cannot hold). The checks
are written column by column in plain Python so a one-row request costs a few microseconds;
the DataFrame handed to the model is built once, in the signature's column order and dtypes.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from nbmlops.core.serving.errors import InvalidInput

_INF = math.inf
_MISSING: Any = object()  # a column absent from a record (distinct from JSON null)

_INT_BOUNDS = {"integer": (-(2**31), 2**31 - 1), "long": (-(2**63), 2**63 - 1)}
_FLOAT32_MAX = 3.4028234663852886e38
_CONVERSION_ERRORS = (TypeError, ValueError, OverflowError, ArithmeticError)
_NUMPY_DTYPES = {
    "double": "float64",
    "float": "float32",
    "long": "int64",
    "integer": "int32",
    "boolean": "bool",
}
FORMATS_HELP = (
    'Send a JSON list of records ([{"col": value, ...}]), {"records": [...]}, '
    '{"dataframe_records": [...]} or {"dataframe_split": {"columns": [...], "data": [[...]]}}.'
)


class HugeInt:
    """A JSON integer with more digits than Python converts (4,300): kept as its text so that
    the column check can name the field instead of the parser failing the whole body."""

    __slots__ = ("text",)

    def __init__(self, text: str):
        self.text = text

    def __str__(self) -> str:
        return f"an integer of {len(self.text.lstrip('-'))} digits"


def _parse_int(text: str) -> int | HugeInt:
    try:
        return int(text)
    except ValueError:
        return HugeInt(text)


@dataclass(frozen=True)
class ColumnSpec:
    """One input column of a model signature."""

    name: str
    type: str  # MLflow DataType name: double, float, long, integer, boolean, string, ...
    required: bool = True


@dataclass
class ValidatedInput:
    """A request's rows after the checks: column-wise values in signature order."""

    columns: dict[str, list[Any]]
    n_rows: int
    records: list[dict[str, Any]]  # what is logged: the rows as records
    schema: InputSchema | None

    def array(self) -> Any:
        """The rows as one float64 array in signature order (numeric signatures only; a
        missing optional value is NaN)."""
        import numpy as np

        assert self.schema is not None and self.schema.numeric
        names = self.schema.names
        try:
            return np.array([self.columns[n] for n in names], dtype="float64").T
        except _CONVERSION_ERRORS:
            for name in names:  # which column: looked for on this (rare) error path only
                _convert(name, np.array, self.columns[name], "float64")
            return _convert(None, lambda: np.array([self.columns[n] for n in names], "float64").T)

    def frame(self) -> Any:
        """A pandas DataFrame in the signature's column order and dtypes; InvalidInput (422)
        naming the column whose values the conversion refuses."""
        import pandas as pd

        schema = self.schema
        if schema is None:
            return _convert(None, pd.DataFrame, self.columns)
        if schema.all_double:
            # One 2-D block: far cheaper than a frame built column by column.
            return pd.DataFrame(self.array(), columns=list(schema.names), copy=False)
        data = {col.name: _convert(col.name, self._column, col) for col in schema.columns}
        return pd.DataFrame(data, columns=list(schema.names))

    def _column(self, col: ColumnSpec) -> Any:
        import numpy as np
        import pandas as pd

        values = self.columns[col.name]
        dtype = _NUMPY_DTYPES.get(col.type)
        if col.type in ("long", "integer") and any(v is None for v in values):
            return np.array([np.nan if v is None else v for v in values], dtype="float64")
        if col.type == "boolean" and any(v is None for v in values):
            return np.array(values, dtype=object)
        if col.type == "datetime":
            return pd.to_datetime(values)
        if dtype is not None:
            return np.array([np.nan if v is None else v for v in values], dtype=dtype)
        # One object per row, also for lists (np.array would make a 2-D array of them).
        column = np.empty(len(values), dtype=object)
        for i, v in enumerate(values):
            column[i] = v
        return column


def _convert(name: str | None, build: Callable[..., Any], *args: Any) -> Any:
    """``build(*args)``, with any conversion error turned into InvalidInput naming the column: a
    value the checks let through but numpy or pandas refuse is the request's fault, never the
    model's."""
    try:
        return build(*args)
    except _CONVERSION_ERRORS as err:
        where = f"Column {name!r} has" if name is not None else "The request has"
        raise InvalidInput(
            422,
            f"{where} a value that cannot be converted for the model: {type(err).__name__}: "
            f"{str(err)[:200]}",
            [name] if name is not None else [],
        ) from None


def _fail(message: str, field: str) -> InvalidInput:
    return InvalidInput(422, message, [field])


def _null(col: ColumnSpec, i: int, what: str) -> InvalidInput:
    return _fail(
        f"Column {col.name!r} has {what} in row {i}, but the model's signature requires a "
        f"value ({col.type})",
        col.name,
    )


def _short(value: Any) -> str:
    try:
        shown = json.dumps(value, default=str)
    except ValueError:  # an integer of thousands of digits inside a list or object
        shown = "..."
    return shown if len(shown) <= 40 else shown[:37] + "..."


def _wrong_type(col: ColumnSpec, i: int, value: Any, expected: str) -> InvalidInput:
    shown = _short(value)
    return _fail(
        f"Column {col.name!r} must be {expected} ({col.type}); got {_json_type(value)} "
        f"{shown} in row {i}",
        col.name,
    )


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float | HugeInt):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    if isinstance(value, dict):
        return "object"
    return type(value).__name__


def _out_of_range(col: ColumnSpec, i: int, value: Any) -> InvalidInput:
    shown = str(value) if type(value) is HugeInt else _short(value)
    return _fail(
        f"Column {col.name!r} has a number out of range for {col.type} ({shown}) in row {i}",
        col.name,
    )


def _check_floats(col: ColumnSpec, values: list[Any]) -> list[Any]:
    required = col.required
    is32 = col.type == "float"
    for i, v in enumerate(values):
        t = type(v)
        if t is float:
            if v != v:  # NaN
                if required:
                    raise _null(col, i, "NaN")
            elif v == _INF or v == -_INF or (is32 and abs(v) > _FLOAT32_MAX):
                raise _out_of_range(col, i, v)  # 1e400 parses as inf
        elif t is int:
            try:
                f = float(v)  # a 400-digit integer does not fit a double
            except OverflowError:
                raise _out_of_range(col, i, v) from None
            if is32 and abs(f) > _FLOAT32_MAX:
                raise _out_of_range(col, i, v)
        elif v is None or v is _MISSING:
            if required:
                raise _null(col, i, "null" if v is None else "no value")
            values[i] = None
        elif t is HugeInt:
            raise _out_of_range(col, i, v)
        else:
            raise _wrong_type(col, i, v, "a number")
    return values


def _check_ints(col: ColumnSpec, values: list[Any]) -> list[Any]:
    low, high = _INT_BOUNDS[col.type]
    for i, v in enumerate(values):
        t = type(v)
        if t is int:
            pass
        elif t is float and v.is_integer():
            v = values[i] = int(v)
        elif v is None or v is _MISSING or (t is float and v != v):
            if col.required:
                raise _null(col, i, "null" if v is None else ("NaN" if t is float else "no value"))
            values[i] = None
            continue
        elif t is HugeInt or (t is float and v in (_INF, -_INF)):
            raise _out_of_range(col, i, v)
        else:
            raise _wrong_type(col, i, v, "an integer")
        if not low <= v <= high:
            raise _out_of_range(col, i, v)
    return values


def _check_simple(py_type: type, expected: str) -> Callable[[ColumnSpec, list[Any]], list[Any]]:
    def check(col: ColumnSpec, values: list[Any]) -> list[Any]:
        for i, v in enumerate(values):
            if type(v) is py_type:
                continue
            if v is None or v is _MISSING:
                if col.required:
                    raise _null(col, i, "null" if v is None else "no value")
                values[i] = None
            else:
                raise _wrong_type(col, i, v, expected)
        return values

    return check


def _check_datetime(col: ColumnSpec, values: list[Any]) -> list[Any]:
    values = _check_simple(str, "an ISO 8601 date-time string")(col, values)
    for i, v in enumerate(values):
        if v is not None:
            try:
                datetime.fromisoformat(v)
            except ValueError:
                raise _wrong_type(col, i, v, "an ISO 8601 date-time string") from None
    return values


def _check_binary(col: ColumnSpec, values: list[Any]) -> list[Any]:
    values = _check_simple(str, "a base64 string")(col, values)
    for i, v in enumerate(values):
        if v is not None:
            try:
                values[i] = base64.b64decode(v, validate=True)
            except (binascii.Error, ValueError):
                raise _wrong_type(col, i, v, "a base64 string") from None
    return values


def _unfit_number(value: Any) -> bool:
    """Whether ``value`` is or holds an integer no numeric type can hold (it overflows a
    double). A loop, not recursion: JSON nests deeper than Python's call stack."""
    stack = [value]
    while stack:
        v = stack.pop()
        t = type(v)
        if t is int:
            try:
                float(v)
            except OverflowError:
                return True
        elif t is HugeInt:
            return True
        elif t is list:
            stack.extend(v)
        elif t is dict:
            stack.extend(v.values())
    return False


def _check_any(col: ColumnSpec, values: list[Any]) -> list[Any]:
    for i, v in enumerate(values):
        if v is None or v is _MISSING:
            if col.required:
                raise _null(col, i, "null" if v is None else "no value")
            values[i] = None
        elif _unfit_number(v):
            raise _fail(f"Column {col.name!r} holds a number out of range in row {i}", col.name)
    return values


_CHECKS: dict[str, Callable[[ColumnSpec, list[Any]], list[Any]]] = {
    "double": _check_floats,
    "float": _check_floats,
    "long": _check_ints,
    "integer": _check_ints,
    "boolean": _check_simple(bool, "true or false"),
    "string": _check_simple(str, "a string"),
    "datetime": _check_datetime,
    "binary": _check_binary,
}


class InputSchema:
    """The named input columns of a model signature, with a checker per column."""

    def __init__(self, columns: Sequence[ColumnSpec]):
        self.columns = tuple(columns)
        self.names = tuple(c.name for c in self.columns)
        self.name_set = frozenset(self.names)
        self.required = frozenset(c.name for c in self.columns if c.required)
        self.all_double = bool(self.columns) and all(
            c.type == "double" and c.required for c in self.columns
        )
        self.numeric = bool(self.columns) and all(
            c.type in ("double", "float", "long", "integer") for c in self.columns
        )
        self._checks = [(c, _CHECKS.get(c.type, _check_any)) for c in self.columns]

    def __repr__(self) -> str:
        cols = ", ".join(f"{c.name}:{c.type}{'' if c.required else '?'}" for c in self.columns)
        return f"InputSchema({cols})"

    @classmethod
    def from_mlmodel(cls, mlmodel: dict[str, Any]) -> InputSchema | None:
        """The column schema from a parsed MLmodel file; None for no signature or tensors."""
        signature = mlmodel.get("signature") or {}
        raw = signature.get("inputs")
        if not raw:
            return None
        specs = json.loads(raw) if isinstance(raw, str) else raw
        columns = []
        for spec in specs:
            if not isinstance(spec, dict) or spec.get("type") == "tensor" or "name" not in spec:
                return None  # tensor or unnamed columns: left to the model's own checks
            columns.append(
                ColumnSpec(
                    str(spec["name"]), str(spec.get("type")), bool(spec.get("required", True))
                )
            )
        return cls(columns) if columns else None

    def _valid_list(self) -> str:
        names = ", ".join(self.names[:20])
        return names + (", ..." if len(self.names) > 20 else "")

    def _check_keys(self, keys: Any, i: int) -> None:
        extra = sorted(str(k) for k in keys if k not in self.name_set)
        if extra:
            raise InvalidInput(
                422,
                f"Unknown field{'s' if len(extra) > 1 else ''} "
                f"{', '.join(repr(k) for k in extra)} in row {i}; the model's signature has: "
                f"{self._valid_list()}",
                extra,
            )
        missing = sorted(n for n in self.required if n not in keys)
        if missing:
            raise InvalidInput(
                422,
                f"Missing required field{'s' if len(missing) > 1 else ''} "
                f"{', '.join(repr(k) for k in missing)} in row {i}",
                missing,
            )

    def validate_records(self, records: list[Any]) -> ValidatedInput:
        name_set = self.name_set
        for i, rec in enumerate(records):
            if type(rec) is not dict:
                raise InvalidInput(
                    422, f"Row {i} is a JSON {_json_type(rec)}, not an object of fields"
                )
            if rec.keys() != name_set:
                self._check_keys(rec.keys(), i)
        columns = {
            col.name: check(col, [rec.get(col.name, _MISSING) for rec in records])
            for col, check in self._checks
        }
        return ValidatedInput(columns, len(records), records, self)

    def validate_split(self, names: list[Any], data: list[Any]) -> ValidatedInput:
        if len(set(names)) != len(names):
            dupes = sorted({str(n) for n in names if names.count(n) > 1})
            raise InvalidInput(422, f"Duplicate column(s) {', '.join(map(repr, dupes))}", dupes)
        self._check_keys(names, 0)
        width = len(names)
        for i, row in enumerate(data):
            if type(row) is not list or len(row) != width:
                raise InvalidInput(
                    422, f"Row {i} of dataframe_split.data must be a list of {width} values"
                )
        index = {name: j for j, name in enumerate(names)}
        columns: dict[str, list[Any]] = {}
        for col, check in self._checks:
            j = index.get(col.name)
            values = [row[j] for row in data] if j is not None else [_MISSING] * len(data)
            columns[col.name] = check(col, values)
        records = [dict(zip(names, row, strict=True)) for row in data]
        return ValidatedInput(columns, len(data), records, self)


def _unchecked_records(records: list[Any]) -> ValidatedInput:
    for i, rec in enumerate(records):
        if type(rec) is not dict:
            raise InvalidInput(422, f"Row {i} is a JSON {_json_type(rec)}, not an object of fields")
        for name, value in rec.items():
            # No signature, so no column types: refuse only numbers no numeric type can hold.
            if _unfit_number(value):
                raise _fail(
                    f"Field {name!r} has a number out of range ({_short(value)}) in row {i}", name
                )
    names: dict[str, None] = {}
    for rec in records:
        names.update(dict.fromkeys(rec))
    columns = {n: [rec.get(n) for rec in records] for n in names}
    return ValidatedInput(columns, len(records), records, None)


PARAMS_KEY = "params"  # MLflow's scoring server reads inference parameters from this key
KNOWN_PARAMS = {"predict_proba": bool}


def split_params(payload: Any) -> tuple[Any, dict[str, Any]]:
    """(the input part of a parsed body, its checked ``params``); InvalidInput(422) naming
    an unknown parameter or a value of the wrong type."""
    if type(payload) is not dict or PARAMS_KEY not in payload:
        return payload, {}
    rest = {k: v for k, v in payload.items() if k != PARAMS_KEY}
    params = payload[PARAMS_KEY]
    if type(params) is not dict:
        raise InvalidInput(
            422, "'params' must be an object such as {\"predict_proba\": true}", [PARAMS_KEY]
        )
    for name, value in params.items():
        kind = KNOWN_PARAMS.get(name)
        if kind is None:
            known = ", ".join(sorted(KNOWN_PARAMS))
            raise InvalidInput(
                422, f"Unknown parameter {name!r} in 'params'; known: {known}", [f"params.{name}"]
            )
        if type(value) is not kind:
            raise InvalidInput(
                422,
                f"'params.{name}' must be a JSON {'true/false' if kind is bool else kind.__name__}"
                f", got {_json_type(value)}",
                [f"params.{name}"],
            )
    return rest, dict(params)


def parse_body(body: bytes) -> Any:
    """JSON from the raw body; InvalidInput(400) when it is not JSON."""
    if not body:
        raise InvalidInput(400, "Empty request body. " + FORMATS_HELP)
    try:
        return json.loads(body)
    except (ValueError, RecursionError) as err:  # JSONDecodeError and bad UTF-8 are ValueErrors
        if "integer string conversion" in str(err):
            # Valid JSON with an integer of over 4,300 digits: parsed again (rare, so the
            # common path keeps json's own integer parsing) with that number kept as a
            # HugeInt, which its column's check then refuses by name.
            return json.loads(body, parse_int=_parse_int)
        raise InvalidInput(400, f"Malformed JSON: {err}") from None


def validate_payload(payload: Any, schema: InputSchema | None) -> ValidatedInput:
    """Rows of a parsed body checked against ``schema``; InvalidInput(422) names the fault."""
    if type(payload) is list:
        records: Any = payload
    elif type(payload) is dict:
        keys = list(payload)
        if len(keys) != 1:
            raise InvalidInput(
                422,
                f"Expected one top-level key, got {len(keys)}: "
                f"{', '.join(map(repr, keys[:10]))}. {FORMATS_HELP}",
                [str(k) for k in keys[:10]],
            )
        key = keys[0]
        if key in ("records", "dataframe_records", "instances"):
            records = payload[key]
            if type(records) is not list:
                raise InvalidInput(422, f"{key!r} must be a list of records", [key])
        elif key == "dataframe_split":
            split = payload[key]
            if type(split) is not dict or type(split.get("data")) is not list:
                raise InvalidInput(
                    422, "'dataframe_split' must hold 'columns' and 'data' lists", [key]
                )
            extra = sorted(set(split) - {"columns", "data", "index"})
            if extra:
                raise InvalidInput(
                    422, f"Unknown key(s) in dataframe_split: {', '.join(map(repr, extra))}", extra
                )
            names = split.get("columns")
            if type(names) is not list or not all(type(n) is str for n in names):
                raise InvalidInput(
                    422, "'dataframe_split.columns' must be a list of column names", [key]
                )
            data = split["data"]
            if not data:
                raise InvalidInput(422, "No rows to predict: 'dataframe_split.data' is empty")
            if schema is None:
                for i, row in enumerate(data):
                    if type(row) is not list or len(row) != len(names):
                        raise InvalidInput(
                            422, f"Row {i} of dataframe_split.data must have {len(names)} values"
                        )
                return _unchecked_records([dict(zip(names, row, strict=True)) for row in data])
            return schema.validate_split(names, data)
        else:
            raise InvalidInput(422, f"Unknown body format {key!r}. {FORMATS_HELP}", [str(key)])
    else:
        raise InvalidInput(
            422, f"Expected a JSON list or object, got {_json_type(payload)}. " + FORMATS_HELP
        )
    if not records:
        raise InvalidInput(422, "No rows to predict: the list of records is empty")
    if schema is None:
        return _unchecked_records(records)
    return schema.validate_records(records)
