"""Reading local files: once, in large chunks, into one reused buffer.

Callers elsewhere use these through the module (``fileio.pump(...)``), so one name here is
the single place every pass over a file goes through.
"""

from __future__ import annotations

import io
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, BinaryIO

import xxhash

from nbmlops.exceptions import DataStoreError, UsageError

__all__ = [
    "CHUNK",
    "EarlyFlush",
    "advise_sequential",
    "changed_error",
    "check_unchanged",
    "early_flush",
    "hash_source",
    "open_source",
    "pump",
    "stat_source",
    "stream_digest",
    "unreadable_error",
]

CHUNK = 8 << 20  # file commits and checkouts read and write in chunks of this size
_SMALL_CHUNK = 64 << 10  # the smallest buffer allocated for a (small) file
_EARLY_FLUSH = 64 << 20  # a file written to the store starts its write-back every this many bytes


def changed_error(src: Path | str) -> DataStoreError:
    return DataStoreError(
        f"{src} changed while it was being committed",
        fix="Commit it again once nothing is writing to it; nothing partial was kept",
    )


def unreadable_error(src: Path | str, err: OSError) -> UsageError:
    return UsageError(f"Cannot read {src}: {err.strerror or err}")


def open_source(src: Path | str) -> Any:
    """The unbuffered file object of a file to commit (read errors are the caller's)."""
    try:
        return open(src, "rb", buffering=0)
    except OSError as err:
        raise unreadable_error(src, err) from None


def advise_sequential(f: Any) -> None:
    """Tell the kernel ``f`` is read front to back once: a larger read-ahead."""
    try:
        os.posix_fadvise(f.fileno(), 0, 0, os.POSIX_FADV_SEQUENTIAL)
    except (AttributeError, OSError, ValueError):
        pass  # not on this platform / file system


def _buffer(size_hint: int) -> memoryview:
    """A buffer of CHUNK bytes, smaller for a small file (allocating 8 MiB costs ~1 ms)."""
    return memoryview(bytearray(max(_SMALL_CHUNK, min(CHUNK, size_hint + 1))))


class EarlyFlush:
    """Write-back of a large file started while it is still being written.

    The kernel starts writing dirty pages to disk only once they make up a good share of
    memory, so a 1 GB copy followed by fsync would first fill the page cache, then wait for
    the whole gigabyte to reach the disk. A helper thread calls fdatasync every _EARLY_FLUSH
    bytes instead (the GIL is released meanwhile): the disk works while the copy goes on, and
    the final fsync waits for the tail only. An error it meets is raised by ``stop``'s caller
    (fsync errors are reported once per open file, so it must not be lost).
    """

    def __init__(self, fd: int):
        self._fd = fd
        self._since = 0
        self._wake = threading.Event()
        self._stopping = False
        self.error: OSError | None = None
        self._thread = threading.Thread(target=self._run, name="nbmlops-flush", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        sync = getattr(os, "fdatasync", os.fsync)
        while True:
            self._wake.wait()
            self._wake.clear()
            if self._stopping:
                return
            try:
                sync(self._fd)
            except OSError as err:
                self.error = err
                return

    def wrote(self, n: int) -> None:
        self._since += n
        if self._since >= _EARLY_FLUSH:
            self._since = 0
            self._wake.set()

    def stop(self) -> None:
        self._stopping = True
        self._wake.set()
        self._thread.join()


@contextmanager
def early_flush(fd: int, size: int) -> Iterator[EarlyFlush | None]:
    """An EarlyFlush of ``fd`` for a file of ``size`` bytes (None for small files); stopped,
    and its error raised, on leaving the block (before the file is closed)."""
    if size < 2 * _EARLY_FLUSH:
        yield None
        return
    flush = EarlyFlush(fd)
    try:
        yield flush
    finally:
        flush.stop()
    if flush.error is not None:
        raise flush.error


def pump(
    src: Any,
    name: Path | str | None,
    size_hint: int,
    out: Any = None,
    flush: EarlyFlush | None = None,
) -> tuple[str, int]:
    """xxh3_128 hex digest and length of what is left in the file ``src``, writing every
    chunk to ``out`` too when given (the single pass of a commit; ``flush`` is told of every
    write). A read error is a UsageError naming ``name`` (the OSError itself when ``name`` is
    None); a write error is the OSError itself (a store problem)."""
    h = xxhash.xxh3_128()
    view = _buffer(size_hint)
    total = 0
    while True:
        try:
            n = src.readinto(view)
        except OSError as err:
            if name is None:
                raise
            raise unreadable_error(name, err) from None
        if not n:
            break
        chunk = view[:n]
        h.update(chunk)
        if out is not None and not isinstance(out, io.RawIOBase):
            out.write(bytes(chunk))  # a writer that might keep a reference: its own copy
        elif out is not None:
            while chunk:  # a raw write may take fewer bytes than given
                done = out.write(chunk)
                if done is None or done >= len(chunk):
                    break
                chunk = chunk[done:]
            if flush is not None:
                flush.wrote(n)
        total += n
    return h.hexdigest(), total


def check_unchanged(src: Path | str, f: Any, before: os.stat_result, n: int) -> None:
    """Raise if the open file ``f`` changed (size, mtime) while it was read."""
    after = os.fstat(f.fileno())
    if (after.st_size, after.st_mtime_ns) != (before.st_size, before.st_mtime_ns) or (
        n != after.st_size
    ):
        raise changed_error(src)


def hash_source(src: Path) -> tuple[str, int, os.stat_result, bool]:
    """Digest of a local file, read once; (digest, size, stat before, unchanged meanwhile)."""
    with open_source(src) as f:
        before = os.fstat(f.fileno())
        advise_sequential(f)
        digest, n = pump(f, src, before.st_size)
        after = os.fstat(f.fileno())
    stable = (after.st_size, after.st_mtime_ns) == (before.st_size, before.st_mtime_ns)
    return digest, n, before, stable and n == after.st_size


def stat_source(path: Path) -> os.stat_result:
    try:
        return os.stat(path)
    except OSError as err:
        raise unreadable_error(path, err) from None


def stream_digest(f: BinaryIO) -> tuple[str, int]:
    return pump(f, None, CHUNK)
