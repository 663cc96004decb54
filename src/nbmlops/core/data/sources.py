"""Committing local files and folders: digest them, storing their bytes on the way, reading
each file at most once (not at all when the stat cache vouches for it)."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

from nbmlops.core.data import fileio
from nbmlops.core.data.backends import Backend, LocalBackend
from nbmlops.core.data.payloads import Payload, folder_payload
from nbmlops.core.data.records import DatasetVersion
from nbmlops.core.data.refs import object_rel
from nbmlops.core.data.statcache import StatCache
from nbmlops.exceptions import UsageError

__all__ = ["digest_source", "file_payload", "is_folder", "read_folder"]


def is_folder(path: Path) -> bool:
    """True for a folder, False for a file; UsageError when ``path`` is neither."""
    try:
        is_dir, is_file = path.is_dir(), path.is_file()
    except OSError as err:
        raise fileio.unreadable_error(path, err) from None
    if not (is_dir or is_file):
        raise UsageError(
            f"No such file or folder: {path}",
            fix="Pass the path of an existing local file or folder (or a DataFrame / array)",
        )
    return is_dir


def file_payload(
    b: Backend, path: Path, latest: DatasetVersion | None, cache: StatCache
) -> Payload:
    """The payload of one local file (its bytes stored on the way when it is new)."""
    source = str(path.resolve())
    st = fileio.stat_source(path)
    # The latest version holds a file of the same size: probably this one again.
    likely = latest is not None and latest.kind == "file" and latest.nbytes == st.st_size
    digest, n, written = digest_source(b, path, source, st, cache, likely)
    return Payload(
        "file", "bytes", digest, [n], None, value=path, source=source, prewritten=written
    )


def read_folder(
    b: Backend,
    root: Path,
    entries: list[tuple[str, Path]],
    previous: dict[str, dict[str, Any]],
    cache: StatCache,
) -> Payload:
    """The payload of a folder whose files are ``entries``; ``previous`` is the manifest of
    the name's latest version (what its files probably still hold)."""
    files: list[tuple[str, Path, str, int]] = []
    written = 0
    for rel, file in entries:
        st = fileio.stat_source(file)
        before = previous.get(rel)
        likely = before is not None and before.get("nbytes") == st.st_size
        digest, n, w = digest_source(b, file, str(file), st, cache, likely)
        files.append((rel, file, digest, n))
        written += w
    return folder_payload(root, files, written)


def digest_source(
    b: Backend, path: Path, source: str, st: os.stat_result, cache: StatCache, likely: bool
) -> tuple[str, int, int]:
    """(digest, size, bytes stored) of one local file, reading it at most once if it can.

    1. A trusted stat-cache entry whose object is in the store: no read at all.
    2. On a local store, when the file is not ``likely`` already stored: one pass that
       hashes the bytes and writes them to the store at once (``LocalBackend.ingest``).
    3. Otherwise hash only (the object then usually exists: nothing to write). On a local
       store a miss falls back to the one-pass store; elsewhere the store uploads the file
       later, checking its digest again.
    """
    cached = cache.get(source, st)
    if cached is not None and b.exists(object_rel(cached, "bytes")):
        return cached, st.st_size, 0
    if isinstance(b, LocalBackend) and not likely:
        hashed_ns = time.time_ns()
        digest, n, written, before = b.ingest(path)
        cache.add(source, before, digest, hashed_ns)
        return digest, n, written
    hashed_ns = time.time_ns()
    digest, n, before, stable = fileio.hash_source(path)
    if not isinstance(b, LocalBackend):
        if not stable:
            raise fileio.changed_error(path)
        cache.add(source, before, digest, hashed_ns)
        return digest, n, 0
    if stable:
        cache.add(source, before, digest, hashed_ns)
        if b.exists(object_rel(digest, "bytes")):
            return digest, n, 0
    hashed_ns = time.time_ns()
    digest, n, written, before = b.ingest(path)  # new content after all
    cache.add(source, before, digest, hashed_ns)
    return digest, n, written
