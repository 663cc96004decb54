"""Payloads: what one commit stores, and how frames, arrays and folders become stored bytes
(and come back)."""

from __future__ import annotations

import json
import os
import re
import sys
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import xxhash

from nbmlops.core.data import fileio
from nbmlops.core.data.hashing import digest_value
from nbmlops.exceptions import IntegrityError, UndigestibleError, UsageError

__all__ = [
    "Payload",
    "copy_verified",
    "folder_payload",
    "frame_to_parquet",
    "load_npy",
    "parquet_to_value",
    "prepare",
    "safe_join",
    "save_npy",
    "source_path",
    "walk_folder",
]

_PARQUET_KEY = b"nbmlops"  # schema metadata key marking how a parquet object maps back


@dataclass
class Payload:
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


def prepare(obj: Any) -> Payload:
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
        return Payload(kind, "parquet", cd.digest, list(cd.shape), cd.schema, value=obj)
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
        return Payload("ndarray", "npy", cd.digest, list(cd.shape), cd.schema, value=obj)
    raise UsageError(
        f"Cannot commit a {type(obj).__module__}.{type(obj).__qualname__}",
        fix="Commit a pandas DataFrame or Series, a numpy array, or the path of a local file "
        "or folder",
    )


def source_path(obj: str | os.PathLike[str]) -> Path:
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


def walk_folder(root: Path) -> list[tuple[str, Path]]:
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


def folder_payload(root: Path, files: list[tuple[str, Path, str, int]], written: int) -> Payload:
    manifest = _manifest_bytes({rel: {"digest": d, "nbytes": n} for rel, _, d, n in files})
    digest = xxhash.xxh3_128(manifest).hexdigest()  # == digest_value(manifest)
    return Payload(
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


def copy_verified(src: Path, digest: str) -> Callable[[BinaryIO], object]:
    """A writer that copies ``src`` and fails if its bytes no longer have ``digest``."""

    def write(f: BinaryIO) -> None:
        with fileio.open_source(src) as s:
            size = os.fstat(s.fileno()).st_size
            fileio.advise_sequential(s)
            actual, _ = fileio.pump(s, src, size, f)
        if actual != digest:
            raise fileio.changed_error(src)

    return write


def frame_to_parquet(value: Any, kind: str, digest: str) -> Any:
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
    back = parquet_to_value(pa.BufferReader(buf))
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


def parquet_to_value(source: Any) -> Any:
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


def safe_join(root: Path, rel: str) -> Path:
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


class _PlainWriter:
    """Only the ``write`` of a file: numpy then writes in chunks through it. Given the real
    file, ``np.save`` uses ``ndarray.tofile``, which reports a full disk as a bare OSError
    ("N requested and M written") without the errno that says the disk is full."""

    def __init__(self, f: BinaryIO):
        self.write = f.write


def save_npy(f: BinaryIO, arr: Any) -> None:
    """Write ``arr`` to ``f`` as ``.npy`` (never pickled); a full disk raises ENOSPC."""
    import numpy as np

    np.save(_PlainWriter(f), arr, allow_pickle=False)


def load_npy(path: str) -> Any:
    import numpy as np

    return np.load(path, allow_pickle=False)
