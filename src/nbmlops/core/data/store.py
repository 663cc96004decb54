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
of its bytes; see :class:`nbmlops.core.data.statcache.StatCache` for when an entry is trusted.

The store's parts live beside it: ``records`` (what is recorded), ``refs`` (names, refs
and paths), ``backends`` (file operations by URL scheme), ``payloads`` (what a commit
stores), ``sources`` (committing local paths), ``fileio`` (reading local files) and
``statcache``.
"""

from __future__ import annotations

import json
import math
import os
import time
from pathlib import Path
from typing import Any, ClassVar

import xxhash

from nbmlops.core.data import fileio
from nbmlops.core.data.backends import (
    TEMP_MARK,
    Backend,
    LocalBackend,
    open_backend,
    space_fix,
    temp_suffix,
    unlink_quiet,
    write_cause,
    writer_gone,
)
from nbmlops.core.data.hashing import digest_value
from nbmlops.core.data.payloads import (
    Payload,
    copy_verified,
    frame_to_parquet,
    load_npy,
    parquet_to_value,
    prepare,
    safe_join,
    save_npy,
    source_path,
    walk_folder,
)
from nbmlops.core.data.records import CommitResult, DatasetVersion
from nbmlops.core.data.refs import (
    DIGEST_RE,
    EXT,
    FORMAT_OF_EXT,
    OBJECT_RE,
    VERSION_RE,
    is_valid_name,
    object_rel,
    parse_ref,
    validate_name,
    version_rel,
)
from nbmlops.core.data.sources import file_payload, is_folder, read_folder
from nbmlops.core.data.statcache import StatCache
from nbmlops.exceptions import (
    DatasetNotFoundError,
    DataStoreError,
    IntegrityError,
    NbmlopsError,
    UsageError,
)

__all__ = ["ORPHAN_AGE", "DataStore"]

# Temp files of commits in flight or interrupted ones; older than this, any commit removes them.
ORPHAN_AGE = 3600.0


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
        self._backend: Backend = open_backend(self.url, self.storage_options)

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
        source = source_path(obj) if isinstance(obj, str | os.PathLike) else None
        payload = prepare(obj) if source is None else None
        try:
            self._sweep_now_and_then()
            if payload is None:
                assert source is not None
                payload = self._prepare_source(source, name)
            return self._commit(payload, name, message, author)
        except OSError as err:
            root = self._backend.root if isinstance(self._backend, LocalBackend) else None
            raise DataStoreError(
                f"Could not commit {name!r}: {write_cause(err, root)}",
                where=self._where,
                fix=space_fix(err, "commit again", root)
                or "Fix the store's permissions and commit again; nothing partial was kept",
            ) from err

    def _prepare_source(self, path: Path, name: str) -> Payload:
        """Digest a local file or folder, storing its bytes on the way (see
        :func:`nbmlops.core.data.sources.digest_source`).

        Files whose stat-cache entry is trusted and whose object is in the store are not read
        at all, so committing unchanged data again costs a few stat calls.
        """
        folder = is_folder(path)
        latest = self._latest_of(name)
        with StatCache.of(self._backend) as cache:
            if not folder:
                return file_payload(self._backend, path, latest, cache)
            root = path.resolve()
            entries = walk_folder(root)  # every file checked before anything is read
            previous: dict[str, dict[str, Any]] = {}
            if latest is not None and latest.kind == "folder":
                try:
                    previous = self._read_manifest(latest)
                except (IntegrityError, ValueError):
                    previous = {}
            return read_folder(self._backend, root, entries, previous, cache)

    def _commit(self, p: Payload, name: str, message: str, author: str) -> CommitResult:
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
            if self._backend.create_exclusive(version_rel(name, k), data):
                return CommitResult(version, True, written)
            # Another process took version k first; it may have committed this very content.
            latest = self._latest_of(name)
            if latest is not None and (latest.digest, latest.format) == (p.digest, p.format):
                return CommitResult(latest, False, written)
            k = max(k, latest.version if latest is not None else 0) + 1

    def _store_payload(self, p: Payload) -> tuple[int, int]:
        """Write the payload's objects that are missing; (bytes written, payload bytes)."""
        b = self._backend
        rel = object_rel(p.digest, p.format)
        if p.format == "tree":
            assert p.files is not None and p.manifest is not None
            written = 0
            for _, path, digest, n in p.files:  # files first, the manifest naming them last
                if b.put(object_rel(digest, "bytes"), copy_verified(path, digest)):
                    written += n
            manifest = p.manifest
            if b.put(rel, lambda f: f.write(manifest)):
                written += len(manifest)
            return written, sum(n for *_, n in p.files) + len(manifest)
        if b.exists(rel):
            return 0, b.size(rel)
        if p.format == "parquet":
            buf = frame_to_parquet(p.value, p.kind, p.digest)
            created = b.put(rel, lambda f: f.write(buf))
            return (buf.size if created else 0), buf.size
        if p.format == "npy":
            arr = p.value
            created = b.put(rel, lambda f: save_npy(f, arr))
            size = b.size(rel)
            return (size if created else 0), size
        created = b.put(rel, copy_verified(p.value, p.digest))
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
                if TEMP_MARK not in fname:
                    continue
                if not writer_gone(fname):
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
            m = VERSION_RE.fullmatch(fname)
            if m:
                nums.append(int(m.group(1)))
        return sorted(nums)

    def _read_version(self, name: str, k: int) -> DatasetVersion:
        rel = version_rel(name, k)
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
            if is_valid_name(n) and self._version_numbers(n)
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
        rel = object_rel(v.digest, v.format)
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
                if isinstance(b, LocalBackend):
                    return parquet_to_value(b.path(rel))
                # Whole bytes, not the fsspec file object: Arrow reading a Python file from its
                # I/O threads can abort the interpreter at exit.
                import pyarrow as pa

                return parquet_to_value(pa.BufferReader(b.read_bytes(rel)))
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
        rel = object_rel(v.digest, "tree")
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
            and DIGEST_RE.fullmatch(e["digest"])
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
                    target = safe_join(root, relpath)
                    target.parent.mkdir(parents=True, exist_ok=True)
                    self._copy_out(object_rel(entry["digest"], "bytes"), target, v, entry["digest"])
                return dest
            if dest.is_dir():
                if v.kind == "file" and v.source:
                    dest = dest / Path(v.source).name
                else:
                    dest = dest / f"{v.name}-{v.version}{EXT[v.format]}"
            dest.parent.mkdir(parents=True, exist_ok=True)
            self._copy_out(object_rel(v.digest, v.format), dest, v, v.digest)
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
                f"Could not write {v.ref} to {dest}: {write_cause(err, folder)}",
                where=self._where,
                fix=space_fix(err, "check out again, or choose another destination", folder)
                or "Fix the destination's permissions or choose another destination",
            ) from err

    def _copy_out(self, rel: str, target: Path, v: DatasetVersion, digest: str) -> None:
        tmp = str(target) + temp_suffix()
        try:
            with self._backend.open_read(rel) as src, open(tmp, "xb", buffering=0) as out:
                if isinstance(self._backend, LocalBackend):
                    fileio.advise_sequential(src)
                size = self._size_hint(rel)
                with fileio.early_flush(out.fileno(), size) as flush:
                    hexdigest, _ = fileio.pump(src, None, size, out, flush)
                os.fsync(out.fileno())
            if v.format in ("parquet", "npy") and rel == object_rel(v.digest, v.format):
                value = parquet_to_value(tmp) if v.format == "parquet" else load_npy(tmp)
                actual = digest_value(value).digest
            else:
                actual = hexdigest
            if actual != digest:
                raise self._mismatch(rel, v.ref, digest, actual)
            os.replace(tmp, target)
        finally:
            unlink_quiet(tmp)

    def _size_hint(self, rel: str) -> int:
        try:
            return self._backend.size(rel)
        except (OSError, ValueError, NotImplementedError):
            return fileio.CHUNK

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
                m = OBJECT_RE.fullmatch(rel)
                if rel in checked or m is None or m.group(3) not in FORMAT_OF_EXT:
                    continue
                problem = self._check_object(rel, FORMAT_OF_EXT[m.group(3)], m.group(2))
                if problem:
                    problems.append(problem)
        return problems

    def _objects_of(self, v: DatasetVersion, problems: list[str]) -> list[tuple[str, str, str]]:
        if v.format != "tree":
            return [(object_rel(v.digest, v.format), v.format, v.digest)]
        try:
            manifest = self._read_manifest(v)
        except (IntegrityError, ValueError) as err:
            problems.append(f"{v.ref}: {err}")
            return []
        return [(object_rel(e["digest"], "bytes"), "bytes", e["digest"]) for e in manifest.values()]

    def _check_object(self, rel: str, fmt: str, digest: str) -> str | None:
        b = self._backend
        if not b.exists(rel):
            return f"object {rel} is missing"
        try:
            if fmt in ("bytes", "tree"):
                with b.open_read(rel) as f:
                    actual, _ = fileio.stream_digest(f)
            else:
                actual = digest_value(self._read_value(rel, fmt, rel)).digest
        except IntegrityError as err:
            return err.what
        if actual != digest:
            return f"object {rel} does not match its digest (its content digests to {actual})"
        return None
