"""Digests of numpy arrays: the C-order bytes of fixed-size dtypes, Arrow's canonical form for
object arrays of strings."""

from __future__ import annotations

from typing import Any

from nbmlops.core.data.digest_arrow import ArrowHasher
from nbmlops.core.data.digest_framing import DOMAIN, ContentDigest, Sink, type_name
from nbmlops.exceptions import UndigestibleError

__all__ = ["digest_ndarray", "feed_ndarray"]

# Strided arrays are made contiguous this many bytes at a time (stays in cache, bounded memory).
_COPY_CHUNK = 4 << 20


def digest_ndarray(arr: Any) -> ContentDigest:
    """Digest of a numpy array: dtype, shape, then its values."""
    import numpy as np

    if isinstance(arr, np.ma.MaskedArray):
        raise UndigestibleError(
            "a numpy masked array cannot be digested (its mask is not part of the data)",
            fix="Use arr.filled(...) or a pandas nullable Series",
        )
    dtype = arr.dtype
    sink = Sink()
    sink.head(DOMAIN, "ndarray", dtype.str, str(dtype), tuple(arr.shape))
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
                f"numpy object array of {type_name(bad)} cannot be digested: only str (and None) "
                "elements have a stable byte form",
                fix="Convert it to a fixed dtype (arr.astype(...)) or to strings first",
            )
        import pyarrow as pa

        sink.head("utf8")
        hasher = ArrowHasher()
        hasher.feed(pa.array(flat, type=pa.large_string(), from_pandas=True))
        hasher.finish(sink)
    else:
        feed_ndarray(sink, arr)
    schema = {"dtype": str(dtype)}
    return ContentDigest(sink.h.hexdigest(), "ndarray", tuple(arr.shape), schema, sink.nbytes)


def feed_ndarray(sink: Sink, arr: Any) -> None:
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


def _is_missing(x: Any) -> bool:
    import pandas as pd

    return x is None or x is pd.NA or x is pd.NaT or (isinstance(x, float) and x != x)


def _object_is_str(values: Any) -> bool:
    """All elements str or missing (None / NaN / pd.NA)? pandas' C-level type inference."""
    from pandas.api.types import infer_dtype

    return infer_dtype(values, skipna=True) in ("string", "empty")
