"""Full-content digests of DataFrames, Series, numpy arrays, bytes and files.

Why this is hand-written rather than borrowed:

* ``mlflow.data.from_pandas(df).digest`` hashes only the first 10,000 rows and keeps 8 hex
  characters, so two datasets that differ anywhere after row 10,000 get the same digest (and it
  still runs ``df.map(type)`` over every cell to choose the columns, so it is not even fast).
* ``pandas.util.hash_pandas_object`` covers every row but runs at roughly 0.4 GB/s: it
  materialises one uint64 per row and column and combines them in several numpy passes.

Here one streaming ``xxhash.xxh3_128`` hasher reads the memory pandas / numpy / Arrow already
hold, zero-copy, with a small framed header per column (label, dtype, length) so that column
names, order, dtypes and the index all count. Only the layouts that have no canonical buffer
(strided arrays, Python objects, masked values hidden under a null) are copied or converted.

The digest is over the bit pattern of the values: ``0.0`` and ``-0.0``, or two NaNs with different
payloads, digest differently. Arrow columns are hashed in a canonical form (null positions,
normalised offsets, value bytes; each in its own sub-stream), so a column digests the same
however Arrow happens to chunk or slice it.

Nothing here imports pandas, numpy or pyarrow at module import time.
"""

from __future__ import annotations

import os
import struct
import sys
from dataclasses import dataclass
from typing import Any

import xxhash

from nbmlops.exceptions import UndigestibleError, UsageError

__all__ = ["ContentDigest", "digest_file", "digest_value", "is_digestible"]

# Version tag fed first into every structured digest; bump it when the framing changes.
_DOMAIN = "nbmlops.digest/1"
# Strided arrays are made contiguous this many bytes at a time (stays in cache, bounded memory).
_COPY_CHUNK = 4 << 20
_LEN = struct.Struct("<Q")


@dataclass(frozen=True)
class ContentDigest:
    """What :func:`digest_value` / :func:`digest_file` return.

    ``digest`` is 32 lowercase hex characters of xxh3_128 over the whole content; ``shape`` is
    ``(rows, cols)`` for frames, ``(len,)`` for series, the array shape for arrays and
    ``(nbytes,)`` for bytes and files; ``schema`` maps column name to dtype (``None`` for
    bytes and files); ``nbytes`` counts the bytes that went through the hasher.
    """

    digest: str
    kind: str
    shape: tuple[int, ...]
    schema: dict[str, str] | None
    nbytes: int

    def __hash__(self) -> int:  # the schema dict is unhashable; equal digests hash equal
        return hash((self.kind, self.digest))

    def to_dict(self) -> dict[str, Any]:
        return {
            "digest": self.digest,
            "kind": self.kind,
            "shape": list(self.shape),
            "schema": dict(self.schema) if self.schema is not None else None,
            "nbytes": self.nbytes,
        }


# --------------------------------------------------------------------------------------------
# Public functions
# --------------------------------------------------------------------------------------------


def loaded_module(name: str, attr: str) -> Any:
    """``sys.modules[name]`` once it is fully imported (has ``attr``), else None.

    Another thread (the shipper importing mlflow) may be half-way through importing it.
    """
    module = sys.modules.get(name)
    return module if module is not None and hasattr(module, attr) else None


def is_digestible(obj: Any) -> bool:
    """Cheap type check: would :func:`digest_value` accept ``obj``?

    Never imports pandas or numpy. For numpy object arrays only a few elements are looked at,
    so ``digest_value`` can still refuse an object array that mixes strings with other objects.
    """
    if isinstance(obj, (bytes, bytearray, memoryview)):
        return True
    pd = loaded_module("pandas", "Series")
    if pd is not None and isinstance(obj, (pd.DataFrame, pd.Series)):
        return True
    np = loaded_module("numpy", "ndarray")
    if np is not None and isinstance(obj, np.ndarray):
        ma = loaded_module("numpy.ma", "MaskedArray")
        if ma is not None and isinstance(obj, ma.MaskedArray):
            return False
        if not obj.dtype.hasobject:
            return True
        if obj.dtype.fields is not None:  # structured dtype with object fields
            return False
        if obj.size == 0:
            return True
        probe = {0, obj.size // 2, obj.size - 1}
        return all(isinstance(obj.flat[i], str) for i in probe)
    return False


def digest_value(obj: Any) -> ContentDigest:
    """Digest the full content of a DataFrame, Series, numpy array or bytes-like object.

    Raises :class:`~nbmlops.exceptions.UndigestibleError` for anything else, and for values
    whose content has no stable byte form (e.g. object arrays of arbitrary Python objects).
    """
    if isinstance(obj, (bytes, bytearray, memoryview)):
        return _digest_bytes(obj)
    pd = loaded_module("pandas", "Series")
    if pd is not None:
        if isinstance(obj, pd.DataFrame):
            return _digest_frame(obj)
        if isinstance(obj, pd.Series):
            return _digest_series(obj)
        if isinstance(obj, pd.Index):
            raise UndigestibleError(
                "a pandas Index cannot be digested on its own",
                fix="Digest idx.to_series() or idx.to_frame() instead",
            )
    np = loaded_module("numpy", "ndarray")
    if np is not None and isinstance(obj, np.ndarray):
        return _digest_ndarray(obj)
    raise UndigestibleError(
        f"a {_type_name(obj)} cannot be digested",
        fix="Only pandas DataFrame/Series, numpy arrays and bytes-like values have content digests",
    )


def digest_file(path: str | os.PathLike[str], chunk_size: int = 8 << 20) -> ContentDigest:
    """Streaming xxh3_128 of a file's bytes (the same digest as ``digest_value`` of those bytes)."""
    if chunk_size <= 0:
        raise UsageError(f"chunk_size must be positive, got {chunk_size}", where="digest_file")
    h = xxhash.xxh3_128()
    buf = bytearray(chunk_size)
    view = memoryview(buf)
    total = 0
    with open(path, "rb", buffering=0) as f:
        while n := f.readinto(view):
            h.update(view[:n])
            total += n
    return ContentDigest(h.hexdigest(), "file", (total,), None, total)


# --------------------------------------------------------------------------------------------
# Framing
# --------------------------------------------------------------------------------------------


def _frame(items: tuple[Any, ...]) -> bytes:
    """Unambiguous byte encoding of header fields: a type letter, a length, the payload."""
    out = []
    for it in items:
        if it is None:
            out.append(b"N")
        elif it is True:
            out.append(b"T")
        elif it is False:
            out.append(b"F")
        elif isinstance(it, int):
            s = str(it).encode()
            out.append(b"I" + _LEN.pack(len(s)) + s)
        elif isinstance(it, str):
            s = it.encode("utf-8", "surrogatepass")
            out.append(b"S" + _LEN.pack(len(s)) + s)
        elif isinstance(it, bytes):
            out.append(b"B" + _LEN.pack(len(it)) + it)
        elif isinstance(it, tuple):
            s = _frame(it)
            out.append(b"(" + _LEN.pack(len(s)) + s)
        else:  # pragma: no cover - internal misuse
            raise TypeError(f"cannot frame {type(it)!r}")
    return b"".join(out)


class _Sink:
    """One xxh3_128 stream plus a count of the data bytes fed to it."""

    __slots__ = ("h", "nbytes")

    def __init__(self) -> None:
        self.h = xxhash.xxh3_128()
        self.nbytes = 0

    def head(self, *items: Any) -> None:
        self.h.update(_frame(items))

    def data(self, buf: Any) -> None:
        """Feed a C-contiguous buffer (numpy array or memoryview) without copying it."""
        self.h.update(buf)
        self.nbytes += buf.nbytes

    def fold(self, child: _Sink) -> None:
        """Feed a finished sub-stream: its digest goes in, its byte count is kept."""
        self.h.update(b"D" + child.h.digest())
        self.nbytes += child.nbytes


def _type_name(obj: Any) -> str:
    return _type_name_of_type(type(obj))


def _label(name: Any) -> str:
    """Stable text for a column / index label: ``'a'`` and ``1`` and ``'1'`` all differ."""
    if isinstance(name, str):
        return "s:" + str(name)
    np = loaded_module("numpy", "floating")
    if np is not None and isinstance(name, (np.integer, np.floating, np.bool_)):
        name = name.item()  # np.int64(1) labels the same column as 1
    if type(name).__repr__ is object.__repr__:
        raise UndigestibleError(
            f"the label {name!r} has no stable text form",
            fix="Use str, int, float, tuple or timestamp labels",
        )
    return f"{_type_name(name)}:{name!r}"


def _shown(label: str) -> str:
    return repr(label[2:]) if label.startswith("s:") else label.partition(":")[2] or "''"


# --------------------------------------------------------------------------------------------
# Top-level kinds
# --------------------------------------------------------------------------------------------


def _digest_bytes(obj: bytes | bytearray | memoryview) -> ContentDigest:
    mv = memoryview(obj)
    if not mv.c_contiguous:
        mv = memoryview(mv.tobytes())
    mv = mv.cast("B") if mv.ndim != 1 or mv.format != "B" else mv
    h = xxhash.xxh3_128()
    h.update(mv)  # plain xxh3_128, so bytes and a file holding them digest the same
    return ContentDigest(h.hexdigest(), "bytes", (mv.nbytes,), None, mv.nbytes)


def _digest_frame(df: Any) -> ContentDigest:
    sink = _Sink()
    nrows, ncols = df.shape
    sink.head(_DOMAIN, "dataframe", nrows, ncols, tuple(_label(n) for n in df.columns.names))
    schema: dict[str, str] = {}
    for name, col in df.items():
        label = _label(name)
        _feed_column(sink, "column", label, col)
        schema[str(name)] = str(col.dtype)
    _feed_index(sink, df.index)
    return ContentDigest(sink.h.hexdigest(), "dataframe", (nrows, ncols), schema, sink.nbytes)


def _digest_series(ser: Any) -> ContentDigest:
    sink = _Sink()
    sink.head(_DOMAIN, "series", len(ser))
    _feed_column(sink, "series", _label(ser.name), ser)
    _feed_index(sink, ser.index)
    schema = {str(ser.name): str(ser.dtype)}
    return ContentDigest(sink.h.hexdigest(), "series", (len(ser),), schema, sink.nbytes)


def _digest_ndarray(arr: Any) -> ContentDigest:
    import numpy as np

    if isinstance(arr, np.ma.MaskedArray):
        raise UndigestibleError(
            "a numpy masked array cannot be digested (its mask is not part of the data)",
            fix="Use arr.filled(...) or a pandas nullable Series",
        )
    dtype = arr.dtype
    sink = _Sink()
    sink.head(_DOMAIN, "ndarray", dtype.str, str(dtype), tuple(arr.shape))
    if dtype.hasobject:
        if dtype.fields is not None:
            raise UndigestibleError(
                f"a numpy structured array with object fields ({dtype}) cannot be digested",
                fix="Use only fixed-size fields",
            )
        flat = arr.reshape(-1) if arr.flags.c_contiguous else arr.ravel()
        if not _object_is_str(flat):
            bad = next((x for x in flat if not isinstance(x, str) and not _is_missing(x)), None)
            raise UndigestibleError(
                f"numpy object array of {_type_name(bad)} cannot be digested: only str (and None) "
                "elements have a stable byte form",
                fix="Convert it to a fixed dtype (arr.astype(...)) or to strings first",
            )
        import pyarrow as pa

        sink.head("utf8")
        hasher = _ArrowHasher()
        hasher.feed(pa.array(flat, type=pa.large_string(), from_pandas=True))
        hasher.finish(sink)
    else:
        _feed_ndarray(sink, arr)
    schema = {"dtype": str(dtype)}
    return ContentDigest(sink.h.hexdigest(), "ndarray", tuple(arr.shape), schema, sink.nbytes)


# --------------------------------------------------------------------------------------------
# Columns and indexes
# --------------------------------------------------------------------------------------------


def _feed_ndarray(sink: _Sink, arr: Any) -> None:
    """C-order bytes of a fixed-size numpy array; zero-copy when it is already C-contiguous."""
    import numpy as np

    if arr.flags.c_contiguous:
        sink.data(arr.reshape(-1).view(np.uint8))
        return
    rows = arr.shape[0]
    row_bytes = max(1, arr.nbytes // rows) if rows else 1
    step = max(1, _COPY_CHUNK // row_bytes)
    for start in range(0, rows, step):
        piece = np.ascontiguousarray(arr[start : start + step])
        sink.data(piece.reshape(-1).view(np.uint8))


def _feed_index(sink: _Sink, idx: Any) -> None:
    import pandas as pd

    if isinstance(idx, pd.RangeIndex):
        # By its parameters only, normalised so equal ranges (range(0, 9, 2) and
        # range(0, 10, 2)) digest alike.
        n = len(idx)
        start = idx.start if n else 0
        step = idx.step if n > 1 else 1
        sink.head("rangeindex", _label(idx.name), start, n, step)
    elif isinstance(idx, pd.MultiIndex):
        # Level values row by row: canonical whatever the (possibly unused or unsorted) levels.
        sink.head("multiindex", len(idx), idx.nlevels)
        for i, name in enumerate(idx.names):
            _feed_column(sink, "level", _label(name), idx.get_level_values(i))
    else:
        _feed_column(sink, "index", _label(idx.name), idx)


def _feed_column(sink: _Sink, role: str, label: str, obj: Any) -> None:
    """Header (role, label, dtype, length) then the data of a Series or an Index."""
    import numpy as np

    dtype = obj.dtype
    sink.head(role, label, str(dtype), len(obj))
    if isinstance(dtype, np.dtype):
        values = obj.to_numpy(copy=False)
        if dtype.kind == "O":
            _feed_object(sink, values, label)
        else:
            _feed_ndarray(sink, values)
    else:
        _feed_extension(sink, obj.array, label)


def _feed_extension(sink: _Sink, arr: Any, label: str) -> None:
    import pandas as pd

    dtype = arr.dtype
    if isinstance(dtype, pd.DatetimeTZDtype):
        sink.head("tz", str(dtype.tz))
        _feed_ndarray(sink, arr.asi8)
    elif isinstance(dtype, pd.CategoricalDtype):
        sink.head("categorical", bool(dtype.ordered))
        _feed_column(sink, "categories", "", dtype.categories)
        _feed_ndarray(sink, arr.codes)
    elif isinstance(arr, (pd.arrays.IntegerArray, pd.arrays.FloatingArray, pd.arrays.BooleanArray)):
        data, mask = arr._data, arr._mask
        if mask.any():  # whatever sits under a null is not content: zero it
            data = data.copy()
            data[mask] = 0
        sink.head("masked")
        _feed_ndarray(sink, data)
        _feed_ndarray(sink, mask)
    elif isinstance(dtype, (pd.StringDtype, pd.ArrowDtype)):
        try:
            chunked = arr.__arrow_array__()
            hasher = _ArrowHasher()
            for chunk in getattr(chunked, "chunks", [chunked]):
                hasher.feed(chunk)
        except _Unsupported:
            _feed_pandas_hash(sink, arr, label)
        else:
            sink.head("arrow")
            hasher.finish(sink)
    else:  # Period, Interval, Sparse, third-party extension types
        _feed_pandas_hash(sink, arr, label)


def _feed_pandas_hash(sink: _Sink, values: Any, label: str) -> None:
    """pandas' own per-row uint64 hash, for the layouts that have no buffer we can read."""
    import pandas as pd

    try:
        hashed = pd.util.hash_pandas_object(pd.Series(values, copy=False), index=False)
    except Exception as err:
        raise UndigestibleError(
            f"column {_shown(label)} of dtype {values.dtype} cannot be digested "
            f"({type(err).__name__}: {err})",
            fix="Convert the column to a numeric, string or categorical dtype first",
        )
    sink.head("hash_pandas_object")
    _feed_ndarray(sink, hashed.to_numpy())


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


def _is_missing(x: Any) -> bool:
    import pandas as pd

    return x is None or x is pd.NA or x is pd.NaT or (isinstance(x, float) and x != x)


def _object_is_str(values: Any) -> bool:
    """All elements str or missing (None / NaN / pd.NA)? pandas' C-level type inference."""
    from pandas.api.types import infer_dtype

    return infer_dtype(values, skipna=True) in ("string", "empty")


def _feed_object(sink: _Sink, values: Any, label: str) -> None:
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
            hasher = _ArrowHasher()
            hasher.feed(converted)
            hasher.finish(sink)
            return

    stable = _stable_types()
    kinds = set(map(type, values))
    for t in kinds:
        if issubclass(t, stable):
            continue
        raise UndigestibleError(
            f"object column {_shown(label)} holds {_type_name_of_type(t)} values, "
            "which have no stable byte form",
            fix="Convert the column to str, a numeric or a categorical dtype before digesting",
        )
    names = sorted(_type_name_of_type(t) for t in kinds)
    # hash_pandas_object hashes str(x) in mixed columns, so 1 and "1" collide: add the types.
    sink.head("object-hashed", tuple(names))
    _feed_pandas_hash(sink, values, label)
    if len(names) > 1:
        code = {t: names.index(_type_name_of_type(t)) for t in kinds}
        codes = np.fromiter((code[type(x)] for x in values), dtype=np.uint16, count=len(values))
        _feed_ndarray(sink, codes)


def _type_name_of_type(t: type) -> str:
    return t.__qualname__ if t.__module__ == "builtins" else f"{t.__module__}.{t.__qualname__}"


# --------------------------------------------------------------------------------------------
# Arrow
# --------------------------------------------------------------------------------------------


class _Unsupported(Exception):
    """An Arrow layout _ArrowHasher does not know; the caller falls back."""


def _is(t: Any, *predicates: str) -> bool:
    """``pa.types.<predicate>(t)`` for any of the names (older pyarrow lacks some of them)."""
    import pyarrow as pa

    return any(getattr(pa.types, p, lambda _t: False)(t) for p in predicates)


class _ArrowHasher:
    """Canonical hash of one logical Arrow column fed chunk by chunk.

    Each aspect goes to its own sub-stream, so neither chunk boundaries nor array offsets
    show: null positions (as global row numbers), normalised int64 end offsets (or list
    lengths), the value bytes (null slots zeroed or emptied), and one child hasher per list
    or struct child.
    """

    def __init__(self) -> None:
        self.rows = 0
        self.nulls = _Sink()
        self.offsets = _Sink()
        self.values = _Sink()
        self.value_base = 0
        self.children: list[_ArrowHasher] = []

    def _child(self, i: int) -> _ArrowHasher:
        while len(self.children) <= i:
            self.children.append(_ArrowHasher())
        return self.children[i]

    def finish(self, sink: _Sink) -> None:
        sink.head("arrow-column", self.rows, len(self.children))
        for sub in (self.nulls, self.offsets, self.values):
            sink.fold(sub)
        for child in self.children:
            child.finish(sink)

    def feed(self, arr: Any) -> None:
        import numpy as np
        import pyarrow as pa
        import pyarrow.compute as pc

        n = len(arr)
        if n == 0:
            return
        if isinstance(arr, pa.ExtensionArray):
            arr = arr.storage
        t = arr.type
        if _is(t, "is_dictionary"):
            arr = arr.dictionary_decode()
        elif _is(t, "is_string_view"):
            arr = arr.cast(pa.large_string())
        elif _is(t, "is_binary_view"):
            arr = arr.cast(pa.large_binary())
        elif _is(t, "is_map"):
            arr = arr.cast(pa.large_list(pa.struct([t.key_field, t.item_field])))
        t = arr.type

        if _is(t, "is_null"):
            layout = "null"
        elif _is(t, "is_boolean"):
            layout = "bits"
        elif _is(
            t, "is_integer", "is_floating", "is_temporal", "is_decimal", "is_fixed_size_binary"
        ):
            if t.bit_width % 8:
                raise _Unsupported(str(t))
            layout = "fixed"
        elif _is(t, "is_string", "is_large_string", "is_binary", "is_large_binary"):
            layout = "varwidth"
        elif _is(
            t,
            "is_list",
            "is_large_list",
            "is_fixed_size_list",
            "is_list_view",
            "is_large_list_view",
        ):
            layout = "list"
        elif _is(t, "is_struct"):
            layout = "struct"
        else:
            raise _Unsupported(str(t))

        isnull = None
        if arr.null_count:
            isnull = pc.is_null(arr).to_numpy(zero_copy_only=False)
            self.nulls.data(np.flatnonzero(isnull).astype(np.int64) + self.rows)

        if layout == "bits":
            self._feed_bits(arr, n, isnull)
        elif layout == "fixed":
            self._feed_fixed(arr, n, t.bit_width // 8, isnull)
        elif layout == "varwidth":
            self._feed_varwidth(arr, n, isnull)
        elif layout == "list":
            lengths = pc.fill_null(pc.list_value_length(arr), 0)
            self.offsets.data(lengths.to_numpy(zero_copy_only=False).astype(np.int64))
            self._child(0).feed(arr.flatten())  # flatten honours the offset and skips nulls
        elif layout == "struct":
            for i, field in enumerate(arr.flatten()):  # children with the parent's offset/nulls
                self._child(i).feed(field)
        self.rows += n

    def _feed_bits(self, arr: Any, n: int, isnull: Any) -> None:
        import numpy as np

        buf, off = arr.buffers()[1], arr.offset
        if buf is None:
            bits = np.zeros(n, dtype=np.uint8)
        else:
            raw = np.frombuffer(buf, dtype=np.uint8)[off // 8 : (off + n + 7) // 8]
            bits = np.unpackbits(raw, bitorder="little")[off % 8 : off % 8 + n]
        if isnull is not None:
            bits[isnull] = 0
        self.values.data(np.ascontiguousarray(bits))

    def _feed_fixed(self, arr: Any, n: int, width: int, isnull: Any) -> None:
        import numpy as np

        buf, off = arr.buffers()[1], arr.offset
        if buf is None:
            raw = np.zeros(n * width, dtype=np.uint8)
        else:
            raw = np.frombuffer(buf, dtype=np.uint8)[off * width : (off + n) * width]
        if isnull is not None:
            rows = raw.reshape(n, width).copy()
            rows[isnull] = 0
            raw = rows.reshape(-1)
        self.values.data(raw)

    def _feed_varwidth(self, arr: Any, n: int, isnull: Any) -> None:
        import numpy as np
        import pyarrow as pa
        import pyarrow.compute as pc

        offsets = _offsets_of(arr, n)
        if isnull is not None and (offsets[1:][isnull] != offsets[:-1][isnull]).any():
            # Null slots that still point at bytes (legal in Arrow): make them empty.
            empty = b"" if _is(arr.type, "is_binary", "is_large_binary") else ""
            arr = pc.if_else(pc.is_valid(arr), arr, pa.scalar(empty, type=arr.type))
            offsets = _offsets_of(arr, n)
        start, end = int(offsets[0]), int(offsets[-1])
        if end > start:
            self.values.data(memoryview(arr.buffers()[2])[start:end])
        if offsets.dtype == np.int64 and start == 0 and self.value_base == 0:
            self.offsets.data(offsets[1:])  # the common case: zero-copy
        else:
            self.offsets.data(offsets[1:].astype(np.int64) + (self.value_base - start))
        self.value_base += end - start


def _offsets_of(arr: Any, n: int) -> Any:
    import numpy as np

    large = _is(arr.type, "is_large_string", "is_large_binary")
    buf = arr.buffers()[1]
    if buf is None:
        return np.zeros(n + 1, dtype=np.int64)
    width = np.int64 if large else np.int32
    return np.frombuffer(buf, dtype=width)[arr.offset : arr.offset + n + 1]
