"""Backends: the handful of file operations the store needs, on a local folder or any fsspec
filesystem, chosen by the store URL's scheme (see :data:`BACKENDS`)."""

from __future__ import annotations

import errno
import os
import re
import shutil
import socket
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, BinaryIO, Protocol

from nbmlops.core.data import fileio
from nbmlops.core.data.refs import EXT, object_rel
from nbmlops.core.process import pid_alive
from nbmlops.exceptions import DataStoreError

__all__ = [
    "BACKENDS",
    "TEMP_MARK",
    "Backend",
    "FsspecBackend",
    "LocalBackend",
    "open_backend",
    "space_fix",
    "temp_suffix",
    "unlink_quiet",
    "url_scheme",
    "write_cause",
    "writer_gone",
]

TEMP_MARK = ".tmp-"
_HOST = re.sub(r"[^A-Za-z0-9]", "_", socket.gethostname())[:40] or "host"


class Backend(Protocol):
    """What the store asks of whatever holds its files; paths are ``/``-separated and
    relative to the store's root."""

    local: bool
    root: str
    url: str

    @classmethod
    def open(cls, url: str, storage_options: dict[str, Any]) -> Backend:
        """The backend of the store at ``url``."""
        ...

    def path(self, rel: str) -> str: ...
    def exists(self, rel: str) -> bool: ...
    def listdir(self, rel: str) -> list[str]: ...
    def isdir(self, rel: str) -> bool: ...
    def size(self, rel: str) -> int: ...
    def mtime(self, rel: str) -> float | None: ...
    def open_read(self, rel: str) -> BinaryIO: ...
    def read_bytes(self, rel: str) -> bytes: ...
    def remove(self, rel: str) -> None: ...
    def walk(self, rel: str) -> Iterator[str]: ...
    def put(self, rel: str, write: Callable[[BinaryIO], object]) -> bool: ...
    def create_exclusive(self, rel: str, data: bytes) -> bool: ...


def temp_suffix() -> str:
    """Marks a temp file with its writer so a cleaner can tell a dead writer's leftovers."""
    return f"{TEMP_MARK}{_HOST}-{os.getpid()}-{uuid.uuid4().hex[:12]}"


def writer_gone(filename: str) -> bool:
    """True when a temp file was made by a process of this host that no longer runs."""
    parts = filename.rpartition(TEMP_MARK)[2].split("-")
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


def unlink_quiet(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
    except OSError:
        pass  # a leftover temp is removed later by clean_orphans


class LocalBackend:
    """Plain ``os`` calls: fsync, atomic rename and hard links for exclusive creation."""

    local = True

    def __init__(self, root: str, url: str):
        self.root = os.path.abspath(os.path.expanduser(root))
        self.url = url

    @classmethod
    def open(cls, url: str, storage_options: dict[str, Any]) -> LocalBackend:
        """A plain path as it is; a ``file://`` or ``local://`` URL through fsspec."""
        if not url_scheme(url):
            return cls(url, url)
        return cls(_url_to_fs(url, storage_options)[1], url)

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

    def makedirs(self, path: str) -> None:
        if os.path.isdir(path):
            return
        parent = os.path.dirname(path)
        if parent != path:
            self.makedirs(parent)
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
        self.makedirs(folder)
        self.path(rel)  # re-check: the folders now exist and resolve for real
        tmp = final + temp_suffix()
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
            unlink_quiet(tmp)

    def ingest(self, src: Path, fmt: str = "bytes") -> tuple[str, int, int, os.stat_result]:
        """Store the bytes of the local file ``src`` reading them once; (digest, size, bytes
        written, the file's stat before the read).

        The bytes are hashed while they are copied to a temp file under ``objects/``; once the
        digest is known the temp file is fsynced and renamed to the object's name, or dropped
        when that object is already stored. Raises DataStoreError if ``src`` changed while it
        was read (nothing is kept), UsageError if it cannot be read.
        """
        objects = self.path("objects")
        self.makedirs(objects)
        self.path("objects")  # re-check: it exists now and resolves for real
        tmp = os.path.join(objects, "incoming" + EXT[fmt] + temp_suffix())
        try:
            with fileio.open_source(src) as s:
                before = os.fstat(s.fileno())
                fileio.advise_sequential(s)
                # O_EXCL: never follows a link planted at the temp name
                with open(tmp, "xb", buffering=0) as out:
                    with fileio.early_flush(out.fileno(), before.st_size) as flush:
                        digest, n = fileio.pump(s, src, before.st_size, out, flush)
                    fileio.check_unchanged(src, s, before, n)
                    rel = object_rel(digest, fmt)
                    final = self.path(rel)
                    if os.path.exists(final):  # already stored (by any name, any process)
                        return digest, n, 0, before
                    out.flush()
                    os.fsync(out.fileno())
            folder = os.path.dirname(final)
            self.makedirs(folder)
            self.path(rel)
            if os.path.exists(final):  # another process stored the same content meanwhile
                return digest, n, 0, before
            os.replace(tmp, final)
            _fsync_dir(folder)
            return digest, n, n, before
        finally:
            unlink_quiet(tmp)

    def create_exclusive(self, rel: str, data: bytes) -> bool:
        """Create ``rel`` with ``data`` unless it exists (then False); never half-written."""
        final = self.path(rel)
        folder = os.path.dirname(final)
        self.makedirs(folder)
        self.path(rel)
        tmp = final + temp_suffix()
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
            unlink_quiet(tmp)


class FsspecBackend:
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

    @classmethod
    def open(cls, url: str, storage_options: dict[str, Any]) -> Backend:
        """The filesystem fsspec gives for ``url``; a LocalBackend when that is the local one."""
        from fsspec.implementations.local import LocalFileSystem

        fs, path = _url_to_fs(url, storage_options)
        if isinstance(fs, LocalFileSystem):
            return LocalBackend(path, url)
        return cls(fs, path, url)

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
        tmp = final + temp_suffix()
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


def url_scheme(url: str) -> str:
    """What picks a store's backend: "" for a local path, else the first protocol of an
    fsspec URL ("s3" for ``s3://b/p``, "simplecache" for ``simplecache::s3://b/p``)."""
    if "://" not in url and "::" not in url:
        return ""
    return url.split("::", 1)[0].split("://", 1)[0].lower()


# The backend class of each URL scheme, as papermill's iorw picks an I/O handler by a path's
# scheme. A scheme not listed here that fsspec knows (s3, gcs, memory, ...) goes to
# FsspecBackend; any other is refused.
BACKENDS: dict[str, type[Backend]] = {"": LocalBackend, "file": LocalBackend, "local": LocalBackend}


def open_backend(url: str, storage_options: dict[str, Any]) -> Backend:
    """The backend for the store at ``url``; DataStoreError for a scheme nothing handles."""
    scheme = url_scheme(url)
    cls = BACKENDS.get(scheme)
    if cls is None:
        import fsspec

        if scheme not in fsspec.available_protocols():
            raise DataStoreError(
                f"Cannot open the data store {url!r}: unknown URL scheme {scheme!r}",
                fix="Use a local folder or an fsspec URL such as s3://bucket/prefix (with its "
                "fsspec implementation installed, e.g. pip install s3fs)",
            )
        cls = FsspecBackend
    return cls.open(url, storage_options)


def _url_to_fs(url: str, storage_options: dict[str, Any]) -> tuple[Any, str]:
    import fsspec

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
    return fs, path


# --------------------------------------------------------------------------------------------
# Write errors, in words
# --------------------------------------------------------------------------------------------

# Write errors that more room (or a bigger disk) cures.
_SPACE_ERRNOS = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)


def write_cause(err: OSError, folder: str | None = None) -> str:
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


def space_fix(err: OSError, retry: str, folder: str | None) -> str | None:
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
