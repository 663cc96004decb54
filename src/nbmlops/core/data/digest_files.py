"""Digests of raw bytes and files: plain xxh3_128 of the bytes, so bytes and a file holding them
digest the same."""

from __future__ import annotations

import os

import xxhash

from nbmlops.core.data.digest_framing import ContentDigest
from nbmlops.exceptions import UsageError

__all__ = ["digest_bytes", "digest_file"]


def digest_bytes(obj: bytes | bytearray | memoryview) -> ContentDigest:
    """Plain xxh3_128 of a bytes-like object's bytes."""
    mv = memoryview(obj)
    if not mv.c_contiguous:
        mv = memoryview(mv.tobytes())
    mv = mv.cast("B") if mv.ndim != 1 or mv.format != "B" else mv
    h = xxhash.xxh3_128()
    h.update(mv)  # plain xxh3_128, so bytes and a file holding them digest the same
    return ContentDigest(h.hexdigest(), "bytes", (mv.nbytes,), None, mv.nbytes)


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
