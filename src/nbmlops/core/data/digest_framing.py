"""The building blocks every digester shares: the result type, the framed xxh3_128 stream the
digesters write to, and stable text for labels and types."""

from __future__ import annotations

import struct
import sys
from dataclasses import dataclass
from typing import Any

import xxhash

from nbmlops.exceptions import UndigestibleError

__all__ = [
    "DOMAIN",
    "ContentDigest",
    "Sink",
    "loaded_module",
    "shown_label",
    "stable_label",
    "type_name",
    "type_name_of_type",
]

# Version tag fed first into every structured digest; bump it when the framing changes.
DOMAIN = "nbmlops.digest/1"
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


def loaded_module(name: str, attr: str) -> Any:
    """``sys.modules[name]`` once it is fully imported (has ``attr``), else None.

    Another thread (the shipper importing mlflow) may be half-way through importing it.
    """
    module = sys.modules.get(name)
    return module if module is not None and hasattr(module, attr) else None


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


class Sink:
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

    def fold(self, child: Sink) -> None:
        """Feed a finished sub-stream: its digest goes in, its byte count is kept."""
        self.h.update(b"D" + child.h.digest())
        self.nbytes += child.nbytes


def type_name(obj: Any) -> str:
    """The qualified name of ``obj``'s type, for messages and headers."""
    return type_name_of_type(type(obj))


def type_name_of_type(t: type) -> str:
    """``t.__qualname__``, prefixed with its module unless it is a builtin."""
    return t.__qualname__ if t.__module__ == "builtins" else f"{t.__module__}.{t.__qualname__}"


def stable_label(name: Any) -> str:
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
    return f"{type_name(name)}:{name!r}"


def shown_label(label: str) -> str:
    """A :func:`stable_label` as a person would write the label, for messages."""
    return repr(label[2:]) if label.startswith("s:") else label.partition(":")[2] or "''"
