"""One run at a time per pipeline (or per output notebook), across processes."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

import xxhash

from nbmlops.exceptions import PipelineError


@contextlib.contextmanager
def exclusive(folder: Path, name: str, what: str) -> Iterator[None]:
    """One run at a time per pipeline (or per output notebook): a second one is refused, never
    allowed to overwrite the first one's files. A local ``flock``, released if the process dies."""
    import fcntl

    folder.mkdir(parents=True, exist_ok=True)
    path = folder / (xxhash.xxh3_64_hexdigest(name.encode()) + ".lock")
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 64, 0).decode(errors="replace").strip() or "another process"
            raise PipelineError(
                f"The {what} is being written by a run in progress (process {holder})",
                fix="Wait for it to finish, or write elsewhere (-o PATH).",
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        yield
    finally:
        os.close(fd)
