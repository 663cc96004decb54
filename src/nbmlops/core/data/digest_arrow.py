"""Canonical digest of Arrow columns, the same however Arrow chunks or slices them."""

from __future__ import annotations

from typing import Any

from nbmlops.core.data.digest_framing import Sink

__all__ = ["ArrowHasher", "UnsupportedArrowType"]


class UnsupportedArrowType(Exception):
    """An Arrow layout ArrowHasher does not know; the caller falls back."""


def _is(t: Any, *predicates: str) -> bool:
    """``pa.types.<predicate>(t)`` for any of the names (older pyarrow lacks some of them)."""
    import pyarrow as pa

    return any(getattr(pa.types, p, lambda _t: False)(t) for p in predicates)


class ArrowHasher:
    """Canonical hash of one logical Arrow column fed chunk by chunk.

    Each aspect goes to its own sub-stream, so neither chunk boundaries nor array offsets
    show: null positions (as global row numbers), normalised int64 end offsets (or list
    lengths), the value bytes (null slots zeroed or emptied), and one child hasher per list
    or struct child.
    """

    def __init__(self) -> None:
        self.rows = 0
        self.nulls = Sink()
        self.offsets = Sink()
        self.values = Sink()
        self.value_base = 0
        self.children: list[ArrowHasher] = []

    def _child(self, i: int) -> ArrowHasher:
        while len(self.children) <= i:
            self.children.append(ArrowHasher())
        return self.children[i]

    def finish(self, sink: Sink) -> None:
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
                raise UnsupportedArrowType(str(t))
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
            raise UnsupportedArrowType(str(t))

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
