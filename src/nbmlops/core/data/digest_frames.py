"""Digests of pandas DataFrames and Series: a framed header per column (label, dtype, length),
then its values, then the index."""

from __future__ import annotations

from typing import Any

from nbmlops.core.data.digest_arrays import feed_ndarray
from nbmlops.core.data.digest_arrow import ArrowHasher, UnsupportedArrowType
from nbmlops.core.data.digest_framing import (
    DOMAIN,
    ContentDigest,
    Sink,
    shown_label,
    stable_label,
    type_name_of_type,
)
from nbmlops.exceptions import UndigestibleError

__all__ = ["digest_frame", "digest_series"]


def digest_frame(df: Any) -> ContentDigest:
    """Digest of a DataFrame: column names, dtypes and values in order, then the index."""
    sink = Sink()
    nrows, ncols = df.shape
    sink.head(DOMAIN, "dataframe", nrows, ncols, tuple(stable_label(n) for n in df.columns.names))
    schema: dict[str, str] = {}
    for name, col in df.items():
        label = stable_label(name)
        _feed_column(sink, "column", label, col)
        schema[str(name)] = str(col.dtype)
    _feed_index(sink, df.index)
    return ContentDigest(sink.h.hexdigest(), "dataframe", (nrows, ncols), schema, sink.nbytes)


def digest_series(ser: Any) -> ContentDigest:
    """Digest of a Series: its name, dtype and values, then the index."""
    sink = Sink()
    sink.head(DOMAIN, "series", len(ser))
    _feed_column(sink, "series", stable_label(ser.name), ser)
    _feed_index(sink, ser.index)
    schema = {str(ser.name): str(ser.dtype)}
    return ContentDigest(sink.h.hexdigest(), "series", (len(ser),), schema, sink.nbytes)


def _feed_index(sink: Sink, idx: Any) -> None:
    import pandas as pd

    if isinstance(idx, pd.RangeIndex):
        # By its parameters only, normalised so equal ranges (range(0, 9, 2) and
        # range(0, 10, 2)) digest alike.
        n = len(idx)
        start = idx.start if n else 0
        step = idx.step if n > 1 else 1
        sink.head("rangeindex", stable_label(idx.name), start, n, step)
    elif isinstance(idx, pd.MultiIndex):
        # Level values row by row: canonical whatever the (possibly unused or unsorted) levels.
        sink.head("multiindex", len(idx), idx.nlevels)
        for i, name in enumerate(idx.names):
            _feed_column(sink, "level", stable_label(name), idx.get_level_values(i))
    else:
        _feed_column(sink, "index", stable_label(idx.name), idx)


def _feed_column(sink: Sink, role: str, label: str, obj: Any) -> None:
    """Header (role, label, dtype, length) then the data of a Series or an Index."""
    import numpy as np

    dtype = obj.dtype
    sink.head(role, label, str(dtype), len(obj))
    if isinstance(dtype, np.dtype):
        values = obj.to_numpy(copy=False)
        if dtype.kind == "O":
            _feed_object(sink, values, label)
        else:
            feed_ndarray(sink, values)
    else:
        _feed_extension(sink, obj.array, label)


def _feed_extension(sink: Sink, arr: Any, label: str) -> None:
    import pandas as pd

    dtype = arr.dtype
    if isinstance(dtype, pd.DatetimeTZDtype):
        sink.head("tz", str(dtype.tz))
        feed_ndarray(sink, arr.asi8)
    elif isinstance(dtype, pd.CategoricalDtype):
        sink.head("categorical", bool(dtype.ordered))
        _feed_column(sink, "categories", "", dtype.categories)
        feed_ndarray(sink, arr.codes)
    elif isinstance(arr, (pd.arrays.IntegerArray, pd.arrays.FloatingArray, pd.arrays.BooleanArray)):
        data, mask = arr._data, arr._mask
        if mask.any():  # whatever sits under a null is not content: zero it
            data = data.copy()
            data[mask] = 0
        sink.head("masked")
        feed_ndarray(sink, data)
        feed_ndarray(sink, mask)
    elif isinstance(dtype, (pd.StringDtype, pd.ArrowDtype)):
        try:
            chunked = arr.__arrow_array__()
            hasher = ArrowHasher()
            for chunk in getattr(chunked, "chunks", [chunked]):
                hasher.feed(chunk)
        except UnsupportedArrowType:
            _feed_pandas_hash(sink, arr, label)
        else:
            sink.head("arrow")
            hasher.finish(sink)
    else:  # Period, Interval, Sparse, third-party extension types
        _feed_pandas_hash(sink, arr, label)


def _feed_pandas_hash(sink: Sink, values: Any, label: str) -> None:
    """pandas' own per-row uint64 hash, for the layouts that have no buffer we can read."""
    import pandas as pd

    try:
        hashed = pd.util.hash_pandas_object(pd.Series(values, copy=False), index=False)
    except Exception as err:
        raise UndigestibleError(
            f"column {shown_label(label)} of dtype {values.dtype} cannot be digested "
            f"({type(err).__name__}: {err})",
            fix="Convert the column to a numeric, string or categorical dtype first",
        )
    sink.head("hash_pandas_object")
    feed_ndarray(sink, hashed.to_numpy())


def _stable_types() -> tuple[type, ...]:
    """Python types whose str() is the same in every process.

    hash_pandas_object hashes str(x) for object columns that are not all strings, so it is
    deterministic only for these (a default ``<Foo object at 0x...>`` would not be).
    """
    import datetime
    import decimal
    import fractions
    import uuid

    import numpy as np
    import pandas as pd

    return (
        str,
        bytes,
        int,
        float,
        complex,
        type(None),
        decimal.Decimal,
        fractions.Fraction,
        uuid.UUID,
        datetime.date,  # and datetime.datetime, pd.Timestamp
        datetime.time,
        datetime.timedelta,  # and pd.Timedelta
        np.generic,
        type(pd.NA),
        type(pd.NaT),
        pd.Period,
        pd.Interval,
    )


def _feed_object(sink: Sink, values: Any, label: str) -> None:
    """A numpy object column: strings or bytes via Arrow, other stable objects via pandas."""
    import numpy as np
    import pyarrow as pa
    from pandas.api.types import infer_dtype

    inferred = infer_dtype(values, skipna=True)
    if inferred in ("string", "empty", "bytes"):
        as_bytes = inferred == "bytes"
        try:
            converted = pa.array(
                values, type=pa.large_binary() if as_bytes else pa.large_string(), from_pandas=True
            )
        except (pa.ArrowException, TypeError, ValueError):
            pass  # e.g. lone surrogates; the slow path below decides
        else:
            sink.head("object-as-arrow", "bytes" if as_bytes else "utf8")
            hasher = ArrowHasher()
            hasher.feed(converted)
            hasher.finish(sink)
            return

    stable = _stable_types()
    kinds = set(map(type, values))
    for t in kinds:
        if issubclass(t, stable):
            continue
        raise UndigestibleError(
            f"object column {shown_label(label)} holds {type_name_of_type(t)} values, "
            "which have no stable byte form",
            fix="Convert the column to str, a numeric or a categorical dtype before digesting",
        )
    names = sorted(type_name_of_type(t) for t in kinds)
    # hash_pandas_object hashes str(x) in mixed columns, so 1 and "1" collide: add the types.
    sink.head("object-hashed", tuple(names))
    _feed_pandas_hash(sink, values, label)
    if len(names) > 1:
        code = {t: names.index(type_name_of_type(t)) for t in kinds}
        codes = np.fromiter((code[type(x)] for x in values), dtype=np.uint16, count=len(values))
        feed_ndarray(sink, codes)
