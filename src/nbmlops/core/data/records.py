"""What the data store records: one committed version, and what a commit did."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from nbmlops.core.data.refs import DIGEST_RE, validate_name

__all__ = ["FORMATS", "KINDS", "CommitResult", "DatasetVersion"]

KINDS = ("dataframe", "series", "ndarray", "file", "folder")
FORMATS = ("parquet", "npy", "bytes", "tree")


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
        if not isinstance(digest, str) or not DIGEST_RE.fullmatch(digest):
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
