"""A versioned, content-addressed data store on a local folder or any fsspec filesystem.

Layout under the store root::

    objects/<d0d1>/<digest>.parquet   a DataFrame or Series (pyarrow, pandas metadata kept)
    objects/<d0d1>/<digest>.npy       a numpy array (numpy.save, allow_pickle=False)
    objects/<d0d1>/<digest>.bin       the bytes of a committed file (or of one file of a folder)
    objects/<d0d1>/<digest>.json      a folder manifest: {relative_path: {digest, nbytes}}
    versions/<name>/<k>.json          one metadata file per version (DatasetVersion.to_dict)

An object's name is the content digest of the *value* (``hashing.digest_value`` for frames,
series and arrays, ``hashing.digest_file`` for files, the digest of the manifest bytes for
folders), so identical content is stored once whatever name it is committed under.

Crash safety: a payload is written to ``<object>.tmp-<host>-<pid>-<uuid>``, fsynced, then
renamed into place; a version file is written only after its object is durable, and it is
created exclusively (``os.link`` of a fsynced temp file on local disks), so two writers never
both get version k and a version never points at a missing or partial object. Temp files of
interrupted commits are removed by :meth:`DataStore.clean_orphans`.

Every path is built from validated names and hex digests; on local stores each path is also
resolved and must stay under the root, so a symbolic link planted in the store cannot make
nbmlops read or write outside it.

Committing a local file reads it once: on a local store its bytes go to a temp file under
``objects/`` while they are hashed, and the temp file is then renamed to its digest's name (or
dropped when that object exists). A stat cache (``cache/stat.db`` under a local store's root,
``~/.cache/nbmlops/stat.db`` for other stores) remembers the digest of every committed file by
(path, size, mtime, inode, device), so committing an unchanged file or folder again reads none
of its bytes; see :class:`_StatCache` for when an entry is trusted.
"""

from __future__ import annotations

import errno
import io
import json
import math
import os
import re
import shutil
import socket
import sqlite3
import sys
import threading
import time
import uuid
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, ClassVar, NamedTuple

import xxhash

from nbmlops.core.data.hashing import digest_value
from nbmlops.core.process import pid_alive
from nbmlops.exceptions import (
    DatasetNotFoundError,
    DataStoreError,
    IntegrityError,
    NbmlopsError,
    UndigestibleError,
    UsageError,
)

__all__ = [
    "CommitResult",
    "DataStore",
    "DatasetVersion",
    "parse_ref",
    "validate_name",
]

KINDS = ("dataframe", "series", "ndarray", "file", "folder")
FORMATS = ("parquet", "npy", "bytes", "tree")
_EXT = {"parquet": ".parquet", "npy": ".npy", "bytes": ".bin", "tree": ".json"}
_FORMAT_OF_EXT = {ext: fmt for fmt, ext in _EXT.items()}
# Temp files of commits in flight or interrupted ones; older than this, any commit removes them.
ORPHAN_AGE = 3600.0

_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
_NAME_FIX = (
    "Use 1-128 letters, digits, '.', '_' or '-', starting with a letter or digit and without "
    "'..' (e.g. 'sales-2024.q1')"
)
_DIGEST_RE = re.compile(r"[0-9a-f]{16,128}")
_VERSION_RE = re.compile(r"([1-9][0-9]{0,17})\.json")
_OBJECT_RE = re.compile(r"objects/([0-9a-f]{2})/([0-9a-f]{16,128})(\.[a-z]+)")
_TEMP_MARK = ".tmp-"
_HOST = re.sub(r"[^A-Za-z0-9]", "_", socket.gethostname())[:40] or "host"
_CHUNK = 8 << 20  # file commits and checkouts read and write in chunks of this size
_SMALL_CHUNK = 64 << 10  # the smallest buffer allocated for a (small) file
_EARLY_FLUSH = 64 << 20  # a file written to the store starts its write-back every this many bytes
_PARQUET_KEY = b"nbmlops"  # schema metadata key marking how a parquet object maps back


# --------------------------------------------------------------------------------------------
# Records
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DatasetVersion:
    """One committed version of a dataset: what it holds and where its content lives."""

    name: str
    version: int
    digest: str
    kind: str
    format: str
    shape: list[int]
    schema: dict[str, str] | None
    profile: dict[str, Any] | None
    message: str
    author: str
    created: float
    nbytes: int
    source: str | None = None

    def __hash__(self) -> int:  # lists and dicts inside: hash by identity of the content
        return hash((self.name, self.version, self.digest))

    @property
    def ref(self) -> str:
        """``NAME@k``: what :meth:`DataStore.get` / :meth:`DataStore.load` accept."""
        return f"{self.name}@{self.version}"

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "version": self.version,
            "digest": self.digest,
            "kind": self.kind,
            "format": self.format,
            "shape": list(self.shape),
            "schema": dict(self.schema) if self.schema is not None else None,
            "profile": self.profile,
            "message": self.message,
            "author": self.author,
            "created": self.created,
            "nbytes": self.nbytes,
            "source": self.source,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> DatasetVersion:
        """Build from :meth:`to_dict` output, checking every field a path is built from."""
        if not isinstance(d, dict):
            raise ValueError(f"expected a JSON object, got {type(d).__name__}")
        name = validate_name(d["name"])
        version = d["version"]
        if not isinstance(version, int) or isinstance(version, bool) or version < 1:
            raise ValueError(f"bad version number {version!r}")
        digest = d["digest"]
        if not isinstance(digest, str) or not _DIGEST_RE.fullmatch(digest):
            raise ValueError(f"bad digest {digest!r}")
        if d["kind"] not in KINDS or d["format"] not in FORMATS:
            raise ValueError(f"unknown kind/format {d['kind']!r}/{d['format']!r}")
        return cls(
            name=name,
            version=version,
            digest=digest,
            kind=d["kind"],
            format=d["format"],
            shape=[int(x) for x in d["shape"]],
            schema=dict(d["schema"]) if d.get("schema") is not None else None,
            profile=d.get("profile"),
            message=str(d.get("message", "")),
            author=str(d.get("author", "unknown")),
            created=float(d["created"]),
            nbytes=int(d["nbytes"]),
            source=d.get("source"),
        )


@dataclass(frozen=True)
class CommitResult:
    """What :meth:`DataStore.commit` did.

    ``created`` is False when the content equals the latest version of that name (the store
    was left unchanged and ``version`` is that latest version). ``bytes_written`` counts the
    payload bytes newly stored (0 when the content was already in the store).
    """

    version: DatasetVersion
    created: bool
    bytes_written: int


# --------------------------------------------------------------------------------------------
# Names and refs
# --------------------------------------------------------------------------------------------


def validate_name(name: str) -> str:
    """Return ``name`` if it is a safe dataset name, else raise UsageError saying why.

    Names become folder names in the store, so anything that could name a path is refused:
    separators, ``..``, percent-encoding (never decoded), URLs, drive letters.
    """
    if not isinstance(name, str):
        raise UsageError(
            f"A dataset name must be a string, got {type(name).__name__}",
            where="data store",
            fix=_NAME_FIX,
        )
    if _NAME_RE.fullmatch(name) and ".." not in name:
        return name
    raise UsageError(f"Invalid dataset name {name!r}: {_why_bad(name)}", fix=_NAME_FIX)


def _why_bad(name: str) -> str:
    if not name:
        return "it is empty"
    if len(name) > 128:
        return f"it is {len(name)} characters long (at most 128)"
    if "://" in name or name.lower().startswith("file:"):
        return "it looks like a URL; a dataset name is a name, not a location"
    if "/" in name or "\\" in name or re.match(r"[A-Za-z]:", name) or name.startswith("~"):
        return "it contains a path separator or drive; a dataset name cannot point at a path"
    if "%" in name:
        return "it contains '%' (percent-encoded text is not decoded, and not allowed)"
    if ".." in name:
        return "it contains '..'"
    if not name[0].isascii() or not name[0].isalnum():
        return "it must start with a letter or digit"
    bad = sorted({c for c in name if not (c.isascii() and (c.isalnum() or c in "._-"))})
    return "it contains " + ", ".join(repr(c) for c in bad)


def parse_ref(ref: str) -> tuple[str, int | None]:
    """``"NAME@3"`` -> ``("NAME", 3)``; ``"NAME"`` or ``"NAME@latest"`` -> ``("NAME", None)``."""
    if not isinstance(ref, str):
        raise UsageError(
            f"A dataset ref must be a string like 'NAME@3', got {type(ref).__name__}",
            fix="Write NAME@k for version k, or NAME for the latest version",
        )
    name, sep, ver = ref.partition("@")
    validate_name(name)
    if not sep or ver == "latest":
        return name, None
    if not re.fullmatch(r"[1-9][0-9]{0,17}", ver):
        raise UsageError(
            f"Invalid version {ver!r} in dataset ref {ref!r}",
            fix="Write NAME@k with k = 1, 2, 3 ..., or NAME (or NAME@latest) for the latest",
        )
    return name, int(ver)


# --------------------------------------------------------------------------------------------
# Backends: the handful of file operations the store needs
# --------------------------------------------------------------------------------------------


def _temp_suffix() -> str:
    """Marks a temp file with its writer so a cleaner can tell a dead writer's leftovers."""
    return f"{_TEMP_MARK}{_HOST}-{os.getpid()}-{uuid.uuid4().hex[:12]}"


def _writer_gone(filename: str) -> bool:
    """True when a temp file was made by a process of this host that no longer runs."""
    parts = filename.rpartition(_TEMP_MARK)[2].split("-")
    if len(parts) != 3 or parts[0] != _HOST or not parts[1].isdigit():
        return False
    pid = int(parts[1])
    if pid == os.getpid():
        return False
    return not pid_alive(pid)


def _fsync_dir(path: str) -> None:
    """Make a rename or a new entry in ``path`` durable (no-op where unsupported)."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError as err:
        if err.errno not in (errno.EINVAL, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EBADF):
            raise
    finally:
        os.close(fd)


def _unlink_quiet(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
    except OSError:
        pass  # a leftover temp is removed later by clean_orphans


class _LocalBackend:
    """Plain ``os`` calls: fsync, atomic rename and hard links for exclusive creation."""

    local = True

    def __init__(self, root: str, url: str):
        self.root = os.path.abspath(os.path.expanduser(root))
        self.url = url

    def path(self, rel: str) -> str:
        """Absolute path of ``rel``; refuses anything that resolves outside the root."""
        full = os.path.join(self.root, *rel.split("/")) if rel else self.root
        root = os.path.realpath(self.root)
        real = os.path.realpath(full)
        if real != root and not real.startswith(root.rstrip(os.sep) + os.sep):
            raise DataStoreError(
                f"{rel!r} resolves to {real}, outside the data store root {root}",
                where=f"data store {self.url}",
                fix="Remove the symbolic link that points out of the store; nbmlops never "
                "reads or writes outside its root",
            )
        return full

    def exists(self, rel: str) -> bool:
        return os.path.exists(self.path(rel))

    def listdir(self, rel: str) -> list[str]:
        try:
            return sorted(os.listdir(self.path(rel)))
        except (FileNotFoundError, NotADirectoryError):
            return []

    def isdir(self, rel: str) -> bool:
        return os.path.isdir(self.path(rel))

    def size(self, rel: str) -> int:
        return os.path.getsize(self.path(rel))

    def mtime(self, rel: str) -> float | None:
        return os.path.getmtime(self.path(rel))

    def open_read(self, rel: str) -> BinaryIO:
        return open(self.path(rel), "rb")

    def read_bytes(self, rel: str) -> bytes:
        with open(self.path(rel), "rb") as f:
            return f.read()

    def remove(self, rel: str) -> None:
        try:
            os.unlink(self.path(rel))
        except FileNotFoundError:
            pass

    def walk(self, rel: str) -> Iterator[str]:
        """Relative paths of the files below ``rel`` (symbolic links to folders not followed)."""
        top = self.path(rel)
        for folder, dirs, files in os.walk(top, followlinks=False):
            dirs.sort()
            sub = os.path.relpath(folder, self.root).replace(os.sep, "/")
            for f in sorted(files):
                yield f"{sub}/{f}"

    def _makedirs(self, path: str) -> None:
        if os.path.isdir(path):
            return
        parent = os.path.dirname(path)
        if parent != path:
            self._makedirs(parent)
        try:
            os.mkdir(path)
        except FileExistsError:
            return
        _fsync_dir(parent)  # the new folder's entry must survive a crash too

    def put(self, rel: str, write: Callable[[BinaryIO], object]) -> bool:
        """Store an object atomically; False (nothing written) when it already exists."""
        final = self.path(rel)
        if os.path.exists(final):
            return False
        folder = os.path.dirname(final)
        self._makedirs(folder)
        self.path(rel)  # re-check: the folders now exist and resolve for real
        tmp = final + _temp_suffix()
        try:
            with open(tmp, "xb") as f:
                write(f)
                f.flush()
                os.fsync(f.fileno())
            if os.path.exists(final):  # another process stored the same content meanwhile
                return False
            os.replace(tmp, final)
            _fsync_dir(folder)
            return True
        finally:
            _unlink_quiet(tmp)

    def ingest(self, src: Path, fmt: str = "bytes") -> tuple[str, int, int, os.stat_result]:
        """Store the bytes of the local file ``src`` reading them once; (digest, size, bytes
        written, the file's stat before the read).

        The bytes are hashed while they are copied to a temp file under ``objects/``; once the
        digest is known the temp file is fsynced and renamed to the object's name, or dropped
        when that object is already stored. Raises DataStoreError if ``src`` changed while it
        was read (nothing is kept), UsageError if it cannot be read.
        """
        objects = self.path("objects")
        self._makedirs(objects)
        self.path("objects")  # re-check: it exists now and resolves for real
        tmp = os.path.join(objects, "incoming" + _EXT[fmt] + _temp_suffix())
        try:
            with _open_source(src) as s:
                before = os.fstat(s.fileno())
                _advise_sequential(s)
                # O_EXCL: never follows a link planted at the temp name
                with open(tmp, "xb", buffering=0) as out:
                    with _early_flush(out.fileno(), before.st_size) as flush:
                        digest, n = _pump(s, src, before.st_size, out, flush)
                    _check_unchanged(src, s, before, n)
                    rel = _object_rel(digest, fmt)
                    final = self.path(rel)
                    if os.path.exists(final):  # already stored (by any name, any process)
                        return digest, n, 0, before
                    out.flush()
                    os.fsync(out.fileno())
            folder = os.path.dirname(final)
            self._makedirs(folder)
            self.path(rel)
            if os.path.exists(final):  # another process stored the same content meanwhile
                return digest, n, 0, before
            os.replace(tmp, final)
            _fsync_dir(folder)
            return digest, n, n, before
        finally:
            _unlink_quiet(tmp)

    def create_exclusive(self, rel: str, data: bytes) -> bool:
        """Create ``rel`` with ``data`` unless it exists (then False); never half-written."""
        final = self.path(rel)
        folder = os.path.dirname(final)
        self._makedirs(folder)
        self.path(rel)
        tmp = final + _temp_suffix()
        try:
            with open(tmp, "xb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            try:
                # link() fails if the name exists: an atomic create-if-absent of a whole file.
                os.link(tmp, final)
            except FileExistsError:
                return False
            except OSError as err:
                if err.errno not in (
                    errno.EPERM,
                    errno.ENOTSUP,
                    errno.EOPNOTSUPP,
                    errno.EXDEV,
                    errno.EMLINK,
                    errno.ENOSYS,
                ):
                    raise
                # No hard links on this filesystem (some FUSE/SMB mounts): check, then rename.
                # Two writers racing here could both pass the check (as on fsspec backends).
                if os.path.exists(final):
                    return False
                os.replace(tmp, final)
            _fsync_dir(folder)
            return True
        finally:
            _unlink_quiet(tmp)


class _FsspecBackend:
    """Any fsspec filesystem (memory://, s3://, gcs://, ...).

    Objects are written to a temp name and moved into place (``fs.mv``; on object stores a
    server-side copy, so a reader never sees a partial object). Version files are created by
    check-then-move, which is NOT atomic across processes: two writers committing the same
    name at the same instant could both take version k, the later move winning. Use a local
    folder (which uses ``os.link``) when several processes commit the same name at once.
    """

    local = False

    def __init__(self, fs: Any, root: str, url: str):
        self.fs = fs
        self.root = root.rstrip("/") or "/"
        self.url = url

    def path(self, rel: str) -> str:
        return f"{self.root.rstrip('/')}/{rel}" if rel else self.root

    def exists(self, rel: str) -> bool:
        return bool(self.fs.exists(self.path(rel)))

    def listdir(self, rel: str) -> list[str]:
        p = self.path(rel)
        self.fs.invalidate_cache(p)
        try:
            entries = self.fs.ls(p, detail=False)
        except (FileNotFoundError, NotADirectoryError):
            return []
        return sorted(e.rstrip("/").rsplit("/", 1)[-1] for e in entries if e.rstrip("/") != p)

    def isdir(self, rel: str) -> bool:
        return bool(self.fs.isdir(self.path(rel)))

    def size(self, rel: str) -> int:
        return int(self.fs.size(self.path(rel)))

    def mtime(self, rel: str) -> float | None:
        try:
            return float(self.fs.modified(self.path(rel)).timestamp())
        except (NotImplementedError, AttributeError, OSError):
            return None

    def open_read(self, rel: str) -> BinaryIO:
        f: BinaryIO = self.fs.open(self.path(rel), "rb")
        return f

    def read_bytes(self, rel: str) -> bytes:
        return bytes(self.fs.cat_file(self.path(rel)))

    def remove(self, rel: str) -> None:
        try:
            self.fs.rm_file(self.path(rel))
        except FileNotFoundError:
            pass

    def walk(self, rel: str) -> Iterator[str]:
        top = self.path(rel)
        self.fs.invalidate_cache(top)
        try:
            found = self.fs.find(top)
        except FileNotFoundError:
            return
        prefix = self.root.rstrip("/") + "/"
        for p in sorted(found):
            p = "/" + p.lstrip("/") if prefix.startswith("/") else p
            if p.startswith(prefix):
                yield p[len(prefix) :]

    def _rm_quiet(self, path: str) -> None:
        try:
            self.fs.rm_file(path)
        except (FileNotFoundError, OSError):
            pass

    def put(self, rel: str, write: Callable[[BinaryIO], object]) -> bool:
        final = self.path(rel)
        if self.fs.exists(final):
            return False
        self.fs.makedirs(final.rsplit("/", 1)[0], exist_ok=True)
        tmp = final + _temp_suffix()
        try:
            with self.fs.open(tmp, "wb") as f:
                write(f)
            if self.fs.exists(final):
                return False
            self.fs.mv(tmp, final)
            return True
        finally:
            if self.fs.exists(tmp):
                self._rm_quiet(tmp)

    def create_exclusive(self, rel: str, data: bytes) -> bool:
        # Check-then-move, exactly as put(): see the class docstring for the race this leaves.
        return self.put(rel, lambda f: f.write(data))


_Backend = _LocalBackend | _FsspecBackend


def _open_backend(url: str, storage_options: dict[str, Any]) -> _Backend:
    if "://" not in url and "::" not in url:
        return _LocalBackend(url, url)
    import fsspec
    from fsspec.implementations.local import LocalFileSystem

    try:
        fs, path = fsspec.core.url_to_fs(url, **storage_options)
    except ImportError as err:
        raise DataStoreError(
            f"Cannot open the data store {url!r}: {err}",
            fix="Install the fsspec implementation for that protocol (e.g. pip install s3fs)",
        ) from None
    except (ValueError, TypeError) as err:
        raise DataStoreError(
            f"Cannot open the data store {url!r}: {err}",
            fix="Use a local folder or an fsspec URL such as s3://bucket/prefix",
        ) from None
    if isinstance(fs, LocalFileSystem):
        return _LocalBackend(path, url)
    return _FsspecBackend(fs, path, url)


# --------------------------------------------------------------------------------------------
# Payloads: what one commit stores
# --------------------------------------------------------------------------------------------


@dataclass
class _Payload:
    kind: str
    format: str
    digest: str
    shape: list[int]
    schema: dict[str, str] | None
    value: Any = None
    source: str | None = None
    files: list[tuple[str, Path, str, int]] | None = None  # folders: (relpath, path, digest, n)
    manifest: bytes | None = None
    prewritten: int = 0  # payload bytes already stored while the source was read


def _object_rel(digest: str, fmt: str) -> str:
    return f"objects/{digest[:2]}/{digest}{_EXT[fmt]}"


def _version_rel(name: str, k: int) -> str:
    return f"versions/{name}/{k}.json"


def _prepare(obj: Any) -> _Payload:
    """Digest a frame, series or array and decide how it is stored (no store access).

    Paths are not handled here: their commit reads and stores in one pass
    (:meth:`DataStore._prepare_source`)."""
    pd = sys.modules.get("pandas")
    np = sys.modules.get("numpy")
    if pd is not None and isinstance(obj, pd.DataFrame | pd.Series):
        kind = "dataframe" if isinstance(obj, pd.DataFrame) else "series"
        try:
            cd = digest_value(obj)
        except UndigestibleError as err:
            raise UsageError(f"This {kind} cannot be committed: {err}", fix=err.fix) from None
        return _Payload(kind, "parquet", cd.digest, list(cd.shape), cd.schema, value=obj)
    if np is not None and isinstance(obj, np.ndarray):
        if obj.dtype.hasobject:
            raise UsageError(
                f"A numpy array of dtype {obj.dtype} (Python objects) cannot be committed: "
                "it could only be stored with pickle, which runs code when loaded",
                fix="Convert it to a fixed dtype first (e.g. arr.astype(str) or "
                "arr.astype(float)), or commit a DataFrame",
            )
        try:
            cd = digest_value(obj)
        except UndigestibleError as err:
            raise UsageError(f"This array cannot be committed: {err}", fix=err.fix) from None
        return _Payload("ndarray", "npy", cd.digest, list(cd.shape), cd.schema, value=obj)
    raise UsageError(
        f"Cannot commit a {type(obj).__module__}.{type(obj).__qualname__}",
        fix="Commit a pandas DataFrame or Series, a numpy array, or the path of a local file "
        "or folder",
    )


def _source_path(obj: str | os.PathLike[str]) -> Path:
    """The local path a commit reads, or UsageError (URLs, bytes paths)."""
    text = os.fspath(obj)
    if isinstance(text, bytes):
        raise UsageError("Pass a str or pathlib.Path, not a bytes path")
    if "://" in text:
        raise UsageError(
            f"commit() reads local files and folders only, got the URL {text!r}",
            fix="Download it first, or load it into a DataFrame and commit that",
        )
    return Path(text).expanduser()


def _walk_folder(root: Path) -> list[tuple[str, Path]]:
    """(relative posix path, path) of every file below ``root``, checked before any read."""
    files: list[tuple[str, Path]] = []
    for folder, dirs, names in os.walk(root, followlinks=False):
        linked = [d for d in dirs if os.path.islink(os.path.join(folder, d))]
        if linked:
            raise UsageError(
                f"{os.path.join(folder, linked[0])} is a symbolic link to a folder; folder "
                "commits do not follow them",
                fix="Copy the linked folder in, or remove the link",
            )
        dirs.sort()
        for fname in sorted(names):
            path = Path(folder) / fname
            if not path.is_file():
                raise UsageError(
                    f"{path} is not a regular file (a broken link, a socket or a pipe)",
                    fix="Remove it from the folder before committing",
                )
            files.append((path.relative_to(root).as_posix(), path))
    return files


def _folder_payload(root: Path, files: list[tuple[str, Path, str, int]], written: int) -> _Payload:
    manifest = _manifest_bytes({rel: {"digest": d, "nbytes": n} for rel, _, d, n in files})
    digest = xxhash.xxh3_128(manifest).hexdigest()  # == digest_value(manifest)
    return _Payload(
        "folder",
        "tree",
        digest,
        [len(files)],
        None,
        value=root,
        source=str(root),
        files=files,
        manifest=manifest,
        prewritten=written,
    )


def _manifest_bytes(entries: dict[str, dict[str, Any]]) -> bytes:
    return json.dumps(entries, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def _copy_verified(src: Path, digest: str) -> Callable[[BinaryIO], object]:
    """A writer that copies ``src`` and fails if its bytes no longer have ``digest``."""

    def write(f: BinaryIO) -> None:
        with _open_source(src) as s:
            size = os.fstat(s.fileno()).st_size
            _advise_sequential(s)
            actual, _ = _pump(s, src, size, f)
        if actual != digest:
            raise _changed(src)

    return write


# --------------------------------------------------------------------------------------------
# Reading local files: once, in large chunks, into one reused buffer
# --------------------------------------------------------------------------------------------


def _changed(src: Path | str) -> DataStoreError:
    return DataStoreError(
        f"{src} changed while it was being committed",
        fix="Commit it again once nothing is writing to it; nothing partial was kept",
    )


def _unreadable(src: Path | str, err: OSError) -> UsageError:
    return UsageError(f"Cannot read {src}: {err.strerror or err}")


def _open_source(src: Path | str) -> Any:
    """The unbuffered file object of a file to commit (read errors are the caller's)."""
    try:
        return open(src, "rb", buffering=0)
    except OSError as err:
        raise _unreadable(src, err) from None


def _advise_sequential(f: Any) -> None:
    """Tell the kernel ``f`` is read front to back once: a larger read-ahead."""
    try:
        os.posix_fadvise(f.fileno(), 0, 0, os.POSIX_FADV_SEQUENTIAL)
    except (AttributeError, OSError, ValueError):
        pass  # not on this platform / file system


def _buffer(size_hint: int) -> memoryview:
    """A buffer of _CHUNK bytes, smaller for a small file (allocating 8 MiB costs ~1 ms)."""
    return memoryview(bytearray(max(_SMALL_CHUNK, min(_CHUNK, size_hint + 1))))


class _EarlyFlush:
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
def _early_flush(fd: int, size: int) -> Iterator[_EarlyFlush | None]:
    """An _EarlyFlush of ``fd`` for a file of ``size`` bytes (None for small files); stopped,
    and its error raised, on leaving the block (before the file is closed)."""
    if size < 2 * _EARLY_FLUSH:
        yield None
        return
    flush = _EarlyFlush(fd)
    try:
        yield flush
    finally:
        flush.stop()
    if flush.error is not None:
        raise flush.error


def _pump(
    src: Any,
    name: Path | str | None,
    size_hint: int,
    out: Any = None,
    flush: _EarlyFlush | None = None,
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
            raise _unreadable(name, err) from None
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


def _check_unchanged(src: Path | str, f: Any, before: os.stat_result, n: int) -> None:
    """Raise if the open file ``f`` changed (size, mtime) while it was read."""
    after = os.fstat(f.fileno())
    if (after.st_size, after.st_mtime_ns) != (before.st_size, before.st_mtime_ns) or (
        n != after.st_size
    ):
        raise _changed(src)


def _hash_source(src: Path) -> tuple[str, int, os.stat_result, bool]:
    """Digest of a local file, read once; (digest, size, stat before, unchanged meanwhile)."""
    with _open_source(src) as f:
        before = os.fstat(f.fileno())
        _advise_sequential(f)
        digest, n = _pump(f, src, before.st_size)
        after = os.fstat(f.fileno())
    stable = (after.st_size, after.st_mtime_ns) == (before.st_size, before.st_mtime_ns)
    return digest, n, before, stable and n == after.st_size


def _stat_source(path: Path) -> os.stat_result:
    try:
        return os.stat(path)
    except OSError as err:
        raise _unreadable(path, err) from None


# --------------------------------------------------------------------------------------------
# The stat cache: digests of local files that have not changed since they were committed
# --------------------------------------------------------------------------------------------

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


def _user_cache_dir() -> str:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "nbmlops")


class _StatCache:
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
                    _unlink_quiet(self.db + suffix)
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
        return digest if isinstance(digest, str) and _DIGEST_RE.fullmatch(digest) else None

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

    def __enter__(self) -> _StatCache:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _frame_to_parquet(value: Any, kind: str, digest: str) -> Any:
    """Parquet bytes (a pyarrow Buffer) that read back to exactly ``value``, or UsageError."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    frame = value if kind == "dataframe" else value.to_frame()
    marker = {"kind": kind, "unnamed": kind == "series" and value.name is None}
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # lossy conversions are caught below, exactly
            table = pa.Table.from_pandas(frame, preserve_index=None)
    except (pa.ArrowException, ValueError, TypeError) as err:
        raise UsageError(
            f"This {kind} cannot be stored as Parquet: {err}",
            fix="Convert the offending column to a numeric, string, categorical or datetime "
            "dtype first",
        ) from None
    meta = dict(table.schema.metadata or {})
    meta[_PARQUET_KEY] = json.dumps(marker).encode()
    table = table.replace_schema_metadata(meta)
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink)
    buf = sink.getvalue()
    back = _parquet_to_value(pa.BufferReader(buf))
    if digest_value(back).digest != digest:
        raise UsageError(
            f"This {kind} does not come back exactly from Parquet: {_difference(value, back)}",
            fix="Convert that column to a dtype Parquet keeps (e.g. mixed-type object columns "
            "to str), or commit the data as a file",
        )
    return buf


def _difference(before: Any, after: Any) -> str:
    import pandas as pd

    if isinstance(before, pd.Series):
        before, after = before.to_frame(), after.to_frame()
    if list(map(repr, before.columns)) != list(map(repr, after.columns)):
        return f"column labels {list(before.columns)!r} came back as {list(after.columns)!r}"
    for (name, a), (_, b) in zip(before.items(), after.items(), strict=False):
        if str(a.dtype) != str(b.dtype):
            return f"column {name!r} of dtype {a.dtype} came back as {b.dtype}"
    if type(before.index) is not type(after.index) or str(before.index.dtype) != str(
        after.index.dtype
    ):
        return f"the index ({type(before.index).__name__}, {before.index.dtype}) changed"
    return "some values differ"


def _parquet_to_value(source: Any) -> Any:
    import pyarrow.parquet as pq

    table = pq.read_table(source)
    marker = json.loads((table.schema.metadata or {}).get(_PARQUET_KEY, b"{}"))
    df = table.to_pandas()
    if marker.get("kind") == "series":
        ser = df.iloc[:, 0]
        if marker.get("unnamed"):
            ser = ser.copy(deep=False)
            ser.name = None
        return ser
    return df


def _stream_digest(f: BinaryIO) -> tuple[str, int]:
    return _pump(f, None, _CHUNK)


# Write errors that more room (or a bigger disk) cures.
_SPACE_ERRNOS = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)


def _write_cause(err: OSError, folder: str | None = None) -> str:
    """What went wrong, in words; for a full disk also the folder and the space left there."""
    causes = {
        errno.ENOSPC: "no space left on the device (disk full)",
        errno.EFBIG: "file too large (a file-size limit was reached)",
        errno.EDQUOT: "disk quota exceeded",
        errno.EROFS: "the file system is read-only",
        errno.EACCES: "permission denied",
        errno.EPERM: "operation not permitted",
    }
    cause = causes.get(err.errno or -1, err.strerror or str(err) or type(err).__name__)
    text = f"{cause} ({type(err).__name__}: {err})"
    if folder is not None and err.errno in _SPACE_ERRNOS:
        text += f"; {folder} has {_free_space(folder)} free"
    return text


def _space_fix(err: OSError, retry: str, folder: str | None) -> str | None:
    """How to get out of a full disk (None for other errors)."""
    if err.errno not in _SPACE_ERRNOS:
        return None
    where = folder or "the store"
    return (
        f"Free space on the disk holding {where} (or set data_url in nbmlops.yaml to a folder "
        f"on a bigger disk) and {retry}; nothing partial was kept and earlier versions are "
        "intact"
    )


def _free_space(folder: str) -> str:
    """Free space on the disk holding ``folder`` (or its nearest existing parent), readable."""
    path = folder
    while not os.path.exists(path) and os.path.dirname(path) != path:
        path = os.path.dirname(path)
    try:
        free = float(shutil.disk_usage(path).free)
    except OSError:
        return "an unknown amount of space"
    units = ("bytes", "KiB", "MiB", "GiB", "TiB")
    i = 0
    while free >= 1024 and i < len(units) - 1:
        free /= 1024
        i += 1
    return f"{free:.0f} bytes" if i == 0 else f"{free:.1f} {units[i]}"


class _PlainWriter:
    """Only the ``write`` of a file: numpy then writes in chunks through it. Given the real
    file, ``np.save`` uses ``ndarray.tofile``, which reports a full disk as a bare OSError
    ("N requested and M written") without the errno that says the disk is full."""

    def __init__(self, f: BinaryIO):
        self.write = f.write


def _safe_join(root: Path, rel: str) -> Path:
    """``root / rel`` for a manifest path; refuses absolute paths, '..' and escapes via links."""
    parts = rel.split("/")
    if (
        not rel
        or rel.startswith("/")
        or "\x00" in rel
        or re.match(r"[A-Za-z]:", rel)
        or any(p in ("", ".", "..") for p in parts)
    ):
        raise IntegrityError(
            f"A folder manifest holds the unsafe path {rel!r}",
            fix="The store was tampered with: restore it from a backup",
        )
    target = root.joinpath(*parts)
    if not Path(os.path.realpath(target)).is_relative_to(root):
        raise IntegrityError(
            f"{rel!r} would be written outside {root} (through a symbolic link)",
            fix="Check out into an empty folder",
        )
    return target


# --------------------------------------------------------------------------------------------
# The store
# --------------------------------------------------------------------------------------------


class DataStore:
    """Versioned datasets on a local folder or an fsspec URL; created on first write.

    ``DataStore(".nbmlops/data")``, ``DataStore("memory://bucket/root")``,
    ``DataStore("s3://bucket/prefix", storage_options={...})``.
    """

    # When each store (by URL) last swept its temp files, in this process.
    _swept: ClassVar[dict[str, float]] = {}

    def __init__(self, url: str | os.PathLike[str], storage_options: dict[str, Any] | None = None):
        if not isinstance(url, str | os.PathLike) or not os.fspath(url):
            raise UsageError(
                f"A data store URL must be a non-empty string or path, got {url!r}",
                fix="Pass a local folder or an fsspec URL such as s3://bucket/prefix",
            )
        self.url: str = str(os.fspath(url))
        self.storage_options = dict(storage_options or {})
        self._backend: _Backend = _open_backend(self.url, self.storage_options)

    def __repr__(self) -> str:
        return f"DataStore({self.url!r})"

    @property
    def _where(self) -> str:
        return f"data store {self.url}"

    # -- writing ---------------------------------------------------------------------------

    def commit(
        self, obj: Any, name: str, *, message: str = "", author: str = "unknown"
    ) -> CommitResult:
        """Store ``obj`` as the next version of ``name`` (or return the latest if unchanged).

        ``obj`` is a pandas DataFrame or Series, a numpy array (not of Python objects), or the
        path of a local file or folder. Disk-full and other write errors raise DataStoreError
        and leave no partial object or version behind.

        A local file is read once (hashed while it is stored); a file already committed to
        this store and unchanged since (same path, size, mtime, inode, device) is not read
        at all.
        """
        validate_name(name)
        if not isinstance(message, str) or not isinstance(author, str):
            raise UsageError("message and author must be strings", where="DataStore.commit")
        source = _source_path(obj) if isinstance(obj, str | os.PathLike) else None
        payload = _prepare(obj) if source is None else None
        try:
            self._sweep_now_and_then()
            if payload is None:
                assert source is not None
                payload = self._prepare_source(source, name)
            return self._commit(payload, name, message, author)
        except OSError as err:
            root = self._backend.root if isinstance(self._backend, _LocalBackend) else None
            raise DataStoreError(
                f"Could not commit {name!r}: {_write_cause(err, root)}",
                where=self._where,
                fix=_space_fix(err, "commit again", root)
                or "Fix the store's permissions and commit again; nothing partial was kept",
            ) from err

    def _prepare_source(self, path: Path, name: str) -> _Payload:
        """Digest a local file or folder, storing its bytes on the way (see ``_digest_source``).

        Files whose stat-cache entry is trusted and whose object is in the store are not read
        at all, so committing unchanged data again costs a few stat calls.
        """
        try:
            is_dir, is_file = path.is_dir(), path.is_file()
        except OSError as err:
            raise _unreadable(path, err) from None
        if not (is_dir or is_file):
            raise UsageError(
                f"No such file or folder: {path}",
                fix="Pass the path of an existing local file or folder (or a DataFrame / array)",
            )
        latest = self._latest_of(name)
        with self._stat_cache() as cache:
            if is_file:
                source = str(path.resolve())
                st = _stat_source(path)
                # The latest version holds a file of the same size: probably this one again.
                likely = (
                    latest is not None and latest.kind == "file" and latest.nbytes == st.st_size
                )
                digest, n, written = self._digest_source(path, source, st, cache, likely)
                return _Payload(
                    "file",
                    "bytes",
                    digest,
                    [n],
                    None,
                    value=path,
                    source=source,
                    prewritten=written,
                )
            root = path.resolve()
            entries = _walk_folder(root)  # every file checked before anything is read
            previous: dict[str, dict[str, Any]] = {}
            if latest is not None and latest.kind == "folder":
                try:
                    previous = self._read_manifest(latest)
                except (IntegrityError, ValueError):
                    previous = {}
            files: list[tuple[str, Path, str, int]] = []
            written = 0
            for rel, file in entries:
                st = _stat_source(file)
                before = previous.get(rel)
                likely = before is not None and before.get("nbytes") == st.st_size
                digest, n, w = self._digest_source(file, str(file), st, cache, likely)
                files.append((rel, file, digest, n))
                written += w
            return _folder_payload(root, files, written)

    def _digest_source(
        self, path: Path, source: str, st: os.stat_result, cache: _StatCache, likely: bool
    ) -> tuple[str, int, int]:
        """(digest, size, bytes stored) of one local file, reading it at most once if it can.

        1. A trusted stat-cache entry whose object is in the store: no read at all.
        2. On a local store, when the file is not ``likely`` already stored: one pass that
           hashes the bytes and writes them to the store at once (``_LocalBackend.ingest``).
        3. Otherwise hash only (the object then usually exists: nothing to write). On a local
           store a miss falls back to the one-pass store; elsewhere ``_store_payload`` uploads
           the file later, checking its digest again.
        """
        b = self._backend
        cached = cache.get(source, st)
        if cached is not None and b.exists(_object_rel(cached, "bytes")):
            return cached, st.st_size, 0
        if isinstance(b, _LocalBackend) and not likely:
            hashed_ns = time.time_ns()
            digest, n, written, before = b.ingest(path)
            cache.add(source, before, digest, hashed_ns)
            return digest, n, written
        hashed_ns = time.time_ns()
        digest, n, before, stable = _hash_source(path)
        if not isinstance(b, _LocalBackend):
            if not stable:
                raise _changed(path)
            cache.add(source, before, digest, hashed_ns)
            return digest, n, 0
        if stable:
            cache.add(source, before, digest, hashed_ns)
            if b.exists(_object_rel(digest, "bytes")):
                return digest, n, 0
        hashed_ns = time.time_ns()
        digest, n, written, before = b.ingest(path)  # new content after all
        cache.add(source, before, digest, hashed_ns)
        return digest, n, written

    def _stat_cache(self) -> _StatCache:
        """The stat cache of this store: ``<root>/cache/stat.db`` on a local store (created
        at the first file commit), the user's ``~/.cache/nbmlops/stat.db`` otherwise."""
        b = self._backend
        if isinstance(b, _LocalBackend):
            try:
                db = b.path("cache/stat.db")
            except DataStoreError:
                return _StatCache(None)  # a link planted at cache/: no cache, never outside

            def make_folder() -> None:
                b._makedirs(os.path.dirname(db))
                b.path("cache/stat.db")

            return _StatCache(db, make_folder)
        folder = _user_cache_dir()
        return _StatCache(
            os.path.join(folder, "stat.db"), lambda: os.makedirs(folder, exist_ok=True)
        )

    def _commit(self, p: _Payload, name: str, message: str, author: str) -> CommitResult:
        latest = self._latest_of(name)
        if latest is not None and (latest.digest, latest.format) == (p.digest, p.format):
            return CommitResult(latest, False, p.prewritten)
        written, nbytes = self._store_payload(p)
        written += p.prewritten
        profile = None
        if p.kind in ("dataframe", "series"):
            from nbmlops.core.data.profile import profile_frame

            profile = profile_frame(p.value)
        k = latest.version + 1 if latest is not None else 1
        while True:
            version = DatasetVersion(
                name=name,
                version=k,
                digest=p.digest,
                kind=p.kind,
                format=p.format,
                shape=p.shape,
                schema=p.schema,
                profile=profile,
                message=message,
                author=author,
                created=time.time(),
                nbytes=nbytes,
                source=p.source,
            )
            data = json.dumps(version.to_dict(), indent=2, allow_nan=False).encode()
            # Written only now: the objects it names are durable, so it never dangles.
            if self._backend.create_exclusive(_version_rel(name, k), data):
                return CommitResult(version, True, written)
            # Another process took version k first; it may have committed this very content.
            latest = self._latest_of(name)
            if latest is not None and (latest.digest, latest.format) == (p.digest, p.format):
                return CommitResult(latest, False, written)
            k = max(k, latest.version if latest is not None else 0) + 1

    def _store_payload(self, p: _Payload) -> tuple[int, int]:
        """Write the payload's objects that are missing; (bytes written, payload bytes)."""
        b = self._backend
        rel = _object_rel(p.digest, p.format)
        if p.format == "tree":
            assert p.files is not None and p.manifest is not None
            written = 0
            for _, path, digest, n in p.files:  # files first, the manifest naming them last
                if b.put(_object_rel(digest, "bytes"), _copy_verified(path, digest)):
                    written += n
            manifest = p.manifest
            if b.put(rel, lambda f: f.write(manifest)):
                written += len(manifest)
            return written, sum(n for *_, n in p.files) + len(manifest)
        if b.exists(rel):
            return 0, b.size(rel)
        if p.format == "parquet":
            buf = _frame_to_parquet(p.value, p.kind, p.digest)
            created = b.put(rel, lambda f: f.write(buf))
            return (buf.size if created else 0), buf.size
        if p.format == "npy":
            import numpy as np

            arr = p.value
            created = b.put(rel, lambda f: np.save(_PlainWriter(f), arr, allow_pickle=False))
            size = b.size(rel)
            return (size if created else 0), size
        created = b.put(rel, _copy_verified(p.value, p.digest))
        return (p.shape[0] if created else 0), p.shape[0]

    def clean_orphans(self, older_than: float = ORPHAN_AGE) -> int:
        """Remove temp files left by interrupted commits; return how many were removed.

        A temp file goes when its writer (a process of this host) has died, or when it is
        older than ``older_than`` seconds, so commits in flight elsewhere are left alone.
        """
        now = time.time()
        removed = 0
        for top in ("objects", "versions"):
            for rel in list(self._backend.walk(top)):
                fname = rel.rsplit("/", 1)[-1]
                if _TEMP_MARK not in fname:
                    continue
                if not _writer_gone(fname):
                    mtime = self._backend.mtime(rel)
                    if mtime is None or now - mtime < older_than:
                        continue
                self._backend.remove(rel)
                removed += 1
        return removed

    def _sweep_now_and_then(self) -> None:
        """Run clean_orphans at the first commit and then at most hourly, per store URL."""
        now = time.time()
        if now - DataStore._swept.get(self.url, -math.inf) < ORPHAN_AGE:
            return
        DataStore._swept[self.url] = now
        try:
            self.clean_orphans()
        except (OSError, NbmlopsError):
            pass  # cleaning is housekeeping; the commit itself reports real problems

    # -- reading ---------------------------------------------------------------------------

    def _version_numbers(self, name: str) -> list[int]:
        nums = []
        for fname in self._backend.listdir(f"versions/{name}"):
            m = _VERSION_RE.fullmatch(fname)
            if m:
                nums.append(int(m.group(1)))
        return sorted(nums)

    def _read_version(self, name: str, k: int) -> DatasetVersion:
        rel = _version_rel(name, k)
        try:
            v = DatasetVersion.from_dict(json.loads(self._backend.read_bytes(rel)))
        except (ValueError, KeyError, TypeError, UsageError) as err:
            raise DataStoreError(
                f"The version file {rel} cannot be read: {err}",
                where=self._where,
                fix="Restore it from a backup or delete it",
            ) from None
        if (v.name, v.version) != (name, k):
            raise DataStoreError(
                f"The version file {rel} describes {v.ref}",
                where=self._where,
                fix="Restore it from a backup or delete it",
            )
        return v

    def _latest_of(self, name: str) -> DatasetVersion | None:
        nums = self._version_numbers(name)
        return self._read_version(name, nums[-1]) if nums else None

    def names(self) -> list[str]:
        """Every dataset name in the store, sorted."""
        return [
            n
            for n in self._backend.listdir("versions")
            if _NAME_RE.fullmatch(n) and ".." not in n and self._version_numbers(n)
        ]

    def _unknown_name(self, name: str) -> DatasetNotFoundError:
        known = self.names()
        if known:
            shown = ", ".join(known[:20]) + (
                f" ... ({len(known)} in all)" if len(known) > 20 else ""
            )
            fix = f"Known datasets: {shown}"
        else:
            fix = "The store holds no datasets yet; commit one with DataStore.commit(obj, name)"
        return DatasetNotFoundError(f"No dataset named {name!r}", where=self._where, fix=fix)

    def get(self, ref: str) -> DatasetVersion:
        """The version ``ref`` names (``NAME@k``, or ``NAME`` for the latest)."""
        name, k = parse_ref(ref)
        nums = self._version_numbers(name)
        if not nums:
            raise self._unknown_name(name)
        if k is None:
            k = nums[-1]
        elif k not in nums:
            refs = [f"{name}@{n}" for n in nums]
            shown = ", ".join(refs if len(refs) <= 10 else [*refs[:3], "...", *refs[-5:]])
            raise DatasetNotFoundError(
                f"{name}@{k} does not exist", where=self._where, fix=f"Known versions: {shown}"
            )
        return self._read_version(name, k)

    def log(self, name: str) -> list[DatasetVersion]:
        """All versions of ``name``, oldest first."""
        validate_name(name)
        nums = self._version_numbers(name)
        if not nums:
            raise self._unknown_name(name)
        return [self._read_version(name, k) for k in nums]

    def latest(self) -> list[DatasetVersion]:
        """The latest version of every dataset, by name."""
        out = []
        for name in self.names():
            v = self._latest_of(name)
            if v is not None:
                out.append(v)
        return out

    def find_digest(self, digest: str) -> list[DatasetVersion]:
        """Every version (of any name) whose content has this digest."""
        digest = digest.lower()
        return [v for name in self.names() for v in self.log(name) if v.digest == digest]

    def load(self, ref: str) -> Any:
        """The DataFrame, Series or array of ``ref``, exactly as committed (digest-checked)."""
        v = self.get(ref)
        if v.kind in ("file", "folder"):
            raise UsageError(
                f"{v.ref} is a {v.kind}; load() returns frames, series and arrays only",
                fix=f"Use store.checkout_path({v.ref!r}, dest) to write it to a local path",
            )
        rel = _object_rel(v.digest, v.format)
        value = self._read_value(rel, v.format, v.ref)
        actual = digest_value(value).digest
        if actual != v.digest:
            raise self._mismatch(rel, v.ref, v.digest, actual)
        return value

    def _mismatch(self, rel: str, ref: str, expected: str, actual: str) -> IntegrityError:
        return IntegrityError(
            f"The object {rel} of {ref} does not match its recorded digest {expected} "
            f"(its content digests to {actual})",
            where=self._where,
            fix="The store is damaged: restore the object from a backup or commit the data "
            "again; DataStore.verify() lists every damaged version",
        )

    def _read_value(self, rel: str, fmt: str, ref: str) -> Any:
        """Decode a parquet / npy object; a missing or undecodable one is an IntegrityError."""
        b = self._backend
        try:
            if fmt == "parquet":
                if isinstance(b, _LocalBackend):
                    return _parquet_to_value(b.path(rel))
                # Whole bytes, not the fsspec file object: Arrow reading a Python file from its
                # I/O threads can abort the interpreter at exit.
                import pyarrow as pa

                return _parquet_to_value(pa.BufferReader(b.read_bytes(rel)))
            import numpy as np

            with b.open_read(rel) as f:
                return np.load(f, allow_pickle=False)
        except FileNotFoundError:
            raise IntegrityError(
                f"The object {rel} of {ref} is missing",
                where=self._where,
                fix="Restore it from a backup or commit the data again",
            ) from None
        except (PermissionError, NbmlopsError):
            raise
        except Exception as err:  # pyarrow / numpy decoding errors of damaged bytes
            raise IntegrityError(
                f"The object {rel} of {ref} cannot be decoded ({type(err).__name__}: {err})",
                where=self._where,
                fix="The store is damaged: restore the object from a backup or commit again",
            ) from None

    def _read_manifest(self, v: DatasetVersion) -> dict[str, dict[str, Any]]:
        rel = _object_rel(v.digest, "tree")
        try:
            data = self._backend.read_bytes(rel)
        except FileNotFoundError:
            raise IntegrityError(
                f"The folder manifest {rel} of {v.ref} is missing", where=self._where
            ) from None
        actual = xxhash.xxh3_128(data).hexdigest()
        if actual != v.digest:
            raise self._mismatch(rel, v.ref, v.digest, actual)
        manifest = json.loads(data)
        if not isinstance(manifest, dict) or not all(
            isinstance(e, dict)
            and isinstance(e.get("digest"), str)
            and _DIGEST_RE.fullmatch(e["digest"])
            and isinstance(e.get("nbytes"), int)
            for e in manifest.values()
        ):
            raise IntegrityError(f"The folder manifest {rel} of {v.ref} is malformed")
        return manifest

    def checkout_path(self, ref: str, dest: str | os.PathLike[str]) -> Path:
        """Write the content of ``ref`` to the local path ``dest`` and return it.

        A file goes to ``dest`` (or into it, under its original name, when ``dest`` is a
        folder); a folder's files go below ``dest``; a frame or array becomes its Parquet or
        npy file. Every file is checked against its digest before it appears at its name.
        """
        v = self.get(ref)
        dest = Path(dest).expanduser()
        try:
            if v.kind == "folder":
                manifest = self._read_manifest(v)
                dest.mkdir(parents=True, exist_ok=True)
                root = dest.resolve()
                for relpath, entry in sorted(manifest.items()):
                    target = _safe_join(root, relpath)
                    target.parent.mkdir(parents=True, exist_ok=True)
                    self._copy_out(
                        _object_rel(entry["digest"], "bytes"), target, v, entry["digest"]
                    )
                return dest
            if dest.is_dir():
                if v.kind == "file" and v.source:
                    dest = dest / Path(v.source).name
                else:
                    dest = dest / f"{v.name}-{v.version}{_EXT[v.format]}"
            dest.parent.mkdir(parents=True, exist_ok=True)
            self._copy_out(_object_rel(v.digest, v.format), dest, v, v.digest)
            return dest
        except FileNotFoundError as err:
            raise IntegrityError(
                f"An object of {v.ref} is missing ({err})",
                where=self._where,
                fix="Restore it from a backup or commit the data again",
            ) from None
        except OSError as err:
            folder = str(dest.parent.resolve())
            raise DataStoreError(
                f"Could not write {v.ref} to {dest}: {_write_cause(err, folder)}",
                where=self._where,
                fix=_space_fix(err, "check out again, or choose another destination", folder)
                or "Fix the destination's permissions or choose another destination",
            ) from err

    def _copy_out(self, rel: str, target: Path, v: DatasetVersion, digest: str) -> None:
        tmp = str(target) + _temp_suffix()
        try:
            with self._backend.open_read(rel) as src, open(tmp, "xb", buffering=0) as out:
                if isinstance(self._backend, _LocalBackend):
                    _advise_sequential(src)
                size = self._size_hint(rel)
                with _early_flush(out.fileno(), size) as flush:
                    hexdigest, _ = _pump(src, None, size, out, flush)
                os.fsync(out.fileno())
            if v.format in ("parquet", "npy") and rel == _object_rel(v.digest, v.format):
                value = _parquet_to_value(tmp) if v.format == "parquet" else _load_npy(tmp)
                actual = digest_value(value).digest
            else:
                actual = hexdigest
            if actual != digest:
                raise self._mismatch(rel, v.ref, digest, actual)
            os.replace(tmp, target)
        finally:
            _unlink_quiet(tmp)

    def _size_hint(self, rel: str) -> int:
        try:
            return self._backend.size(rel)
        except (OSError, ValueError, NotImplementedError):
            return _CHUNK

    # -- checking --------------------------------------------------------------------------

    def verify(self, ref: str | None = None) -> list[str]:
        """Problems found; an empty list means the store (or ``ref``) is sound.

        Checks that every version's objects exist and match their digests. Without ``ref`` it
        also checks every object file in the store, referenced or not. Temp files of
        interrupted commits are not problems (``clean_orphans`` removes them).
        """
        problems: list[str] = []
        checked: dict[str, str | None] = {}
        versions: list[DatasetVersion] = []
        if ref is not None:
            versions.append(self.get(ref))
        else:
            for name in self._backend.listdir("versions"):
                try:
                    validate_name(name)
                    for k in self._version_numbers(name):
                        versions.append(self._read_version(name, k))
                except NbmlopsError as err:
                    problems.append(str(err))
        for v in versions:
            for rel, fmt, digest in self._objects_of(v, problems):
                if rel not in checked:
                    checked[rel] = self._check_object(rel, fmt, digest)
                if checked[rel]:
                    problems.append(f"{v.ref}: {checked[rel]}")
        if ref is None:
            for rel in self._backend.walk("objects"):
                m = _OBJECT_RE.fullmatch(rel)
                if rel in checked or m is None or m.group(3) not in _FORMAT_OF_EXT:
                    continue
                problem = self._check_object(rel, _FORMAT_OF_EXT[m.group(3)], m.group(2))
                if problem:
                    problems.append(problem)
        return problems

    def _objects_of(self, v: DatasetVersion, problems: list[str]) -> list[tuple[str, str, str]]:
        if v.format != "tree":
            return [(_object_rel(v.digest, v.format), v.format, v.digest)]
        try:
            manifest = self._read_manifest(v)
        except (IntegrityError, ValueError) as err:
            problems.append(f"{v.ref}: {err}")
            return []
        return [
            (_object_rel(e["digest"], "bytes"), "bytes", e["digest"]) for e in manifest.values()
        ]

    def _check_object(self, rel: str, fmt: str, digest: str) -> str | None:
        b = self._backend
        if not b.exists(rel):
            return f"object {rel} is missing"
        try:
            if fmt in ("bytes", "tree"):
                with b.open_read(rel) as f:
                    actual, _ = _stream_digest(f)
            else:
                actual = digest_value(self._read_value(rel, fmt, rel)).digest
        except IntegrityError as err:
            return err.what
        if actual != digest:
            return f"object {rel} does not match its digest (its content digests to {actual})"
        return None


def _load_npy(path: str) -> Any:
    import numpy as np

    return np.load(path, allow_pickle=False)
