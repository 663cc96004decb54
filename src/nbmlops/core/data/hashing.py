"""Full-content digests of DataFrames, Series, numpy arrays and bytes.

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

This module holds the entry points and the dispatch by type; the digesters live in
``digest_frames`` (DataFrame, Series), ``digest_arrays`` (numpy), ``digest_files`` (bytes,
files) and ``digest_arrow`` (Arrow columns), on the shared stream of ``digest_framing``.

Nothing here imports pandas, numpy or pyarrow at module import time.
"""

from __future__ import annotations

from typing import Any

from nbmlops.core.data.digest_arrays import digest_ndarray
from nbmlops.core.data.digest_files import digest_bytes
from nbmlops.core.data.digest_frames import digest_frame, digest_series
from nbmlops.core.data.digest_framing import ContentDigest, loaded_module, type_name
from nbmlops.exceptions import UndigestibleError

__all__ = ["digest_value", "is_digestible"]


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
        return digest_bytes(obj)
    pd = loaded_module("pandas", "Series")
    if pd is not None:
        if isinstance(obj, pd.DataFrame):
            return digest_frame(obj)
        if isinstance(obj, pd.Series):
            return digest_series(obj)
        if isinstance(obj, pd.Index):
            raise UndigestibleError(
                "a pandas Index cannot be digested on its own",
                fix="Digest idx.to_series() or idx.to_frame() instead",
            )
    np = loaded_module("numpy", "ndarray")
    if np is not None and isinstance(obj, np.ndarray):
        return digest_ndarray(obj)
    raise UndigestibleError(
        f"a {type_name(obj)} cannot be digested",
        fix="Only pandas DataFrame/Series, numpy arrays and bytes-like values have content digests",
    )
