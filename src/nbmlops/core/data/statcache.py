"""The stat cache: digests of local files that have not changed since they were committed."""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Callable
from typing import NamedTuple

from nbmlops.core.data.backends import Backend, LocalBackend, unlink_quiet
from nbmlops.core.data.refs import DIGEST_RE
from nbmlops.exceptions import DataStoreError, NbmlopsError

__all__ = ["RACY_NS", "StatCache", "user_cache_dir"]

# An entry is trusted only if the file's mtime was at least this much older than the moment
# its bytes began to be read. Otherwise a write landing right after the read, within the same
# mtime tick (1-2 s on FAT, SMB and some NFS mounts; a kernel clock tick on ext4), would leave
# size and mtime as recorded while the content changed, and the stale digest would be trusted
# from then on: the "racy git" problem. A racy file is simply read again at its next commit,
# which then records a trusted entry. (Like make or rsync's quick check, the cache is fooled
# by a tool that rewrites a file and then restores its size and mtime on purpose.)
RACY_NS = 2_000_000_000

_STAT_TABLE = (
    "CREATE TABLE IF NOT EXISTS stat (path TEXT PRIMARY KEY, key TEXT NOT NULL, "
    "mtime_ns INTEGER NOT NULL, hashed_ns INTEGER NOT NULL, digest TEXT NOT NULL)"
)


class _Entry(NamedTuple):
    path: str
    key: str
    mtime_ns: int
    hashed_ns: int
    digest: str


def _stat_key(st: os.stat_result) -> str:
    # text: st_ino and st_dev may not fit a signed 64-bit SQLite integer
    return f"{st.st_size}:{st.st_mtime_ns}:{st.st_ino}:{st.st_dev}"


def user_cache_dir() -> str:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "nbmlops")


class StatCache:
    """(absolute path, size, mtime_ns, inode, device) -> xxh3_128 digest, in SQLite (WAL).

    Purely an optimisation: any problem with the database (locked, read-only, on a file
    system without shared memory for WAL) turns the cache off for this commit, which then
    reads the files as if it were empty; a damaged database is replaced by a new one when
    entries are next written. Entries are written once the commit has read its files, in one
    transaction.
    """

    def __init__(self, db: str | None, make_folder: Callable[[], None] | None = None):
        self.db = db
        self._make_folder = make_folder
        self._conn: sqlite3.Connection | None = None
        self._pending: list[_Entry] = []
        self._damaged = False

    def _connect(self, create: bool) -> sqlite3.Connection | None:
        if self._conn is not None or self.db is None:
            return self._conn
        if not create and (self._damaged or not os.path.exists(self.db)):
            return None
        try:
            if create and self._make_folder is not None:
                self._make_folder()
            try:
                conn = self._open(self.db)
            except sqlite3.DatabaseError as err:
                if isinstance(err, sqlite3.OperationalError):
                    raise  # busy, locked, unavailable: not damaged
                if not create:
                    self._damaged = True  # recreated when entries are written
                    return None
                for suffix in ("", "-wal", "-shm"):
                    unlink_quiet(self.db + suffix)
                conn = self._open(self.db)
        except (sqlite3.Error, OSError, NbmlopsError):
            self.db = None  # no cache for this commit
            return None
        self._conn = conn
        return conn

    @staticmethod
    def _open(db: str) -> sqlite3.Connection:
        conn = sqlite3.connect(db, timeout=2.0, isolation_level=None)
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            conn.execute(_STAT_TABLE)
        except sqlite3.Error:
            conn.close()
            raise
        return conn

    def get(self, path: str, st: os.stat_result) -> str | None:
        """The digest recorded for this very file, if the entry is trusted (see RACY_NS)."""
        conn = self._connect(create=False)
        if conn is None:
            return None
        try:
            row = conn.execute(
                "SELECT digest FROM stat WHERE path = ? AND key = ? AND mtime_ns < hashed_ns - ?",
                (path, _stat_key(st), RACY_NS),
            ).fetchone()
        except sqlite3.Error:
            return None
        digest = row[0] if row else None
        return digest if isinstance(digest, str) and DIGEST_RE.fullmatch(digest) else None

    def add(self, path: str, st: os.stat_result, digest: str, hashed_ns: int) -> None:
        """Record that ``path`` with stat ``st`` has ``digest``; ``hashed_ns`` is the wall
        time at which its read started (what the racy check compares the mtime with)."""
        self._pending.append(_Entry(path, _stat_key(st), st.st_mtime_ns, hashed_ns, digest))

    def close(self) -> None:
        try:
            if self._pending:
                conn = self._connect(create=True)
                if conn is not None:
                    with conn:  # one transaction
                        conn.execute("BEGIN IMMEDIATE")
                        conn.executemany(
                            "INSERT OR REPLACE INTO stat VALUES (?, ?, ?, ?, ?)", self._pending
                        )
        except sqlite3.Error:
            pass
        finally:
            self._pending = []
            if self._conn is not None:
                self._conn.close()
                self._conn = None

    @classmethod
    def of(cls, b: Backend) -> StatCache:
        """The stat cache of the store on ``b``: ``<root>/cache/stat.db`` on a local store
        (created at the first file commit), the user's ``~/.cache/nbmlops/stat.db`` otherwise."""
        if isinstance(b, LocalBackend):
            try:
                db = b.path("cache/stat.db")
            except DataStoreError:
                return cls(None)  # a link planted at cache/: no cache, never outside

            def make_folder() -> None:
                b.makedirs(os.path.dirname(db))
                b.path("cache/stat.db")

            return cls(db, make_folder)
        folder = user_cache_dir()
        return cls(os.path.join(folder, "stat.db"), lambda: os.makedirs(folder, exist_ok=True))

    def __enter__(self) -> StatCache:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
