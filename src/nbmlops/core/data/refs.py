"""Dataset names, refs (``NAME@k``) and the store-relative paths built from them.

Every path the store touches is built here from a validated name and a hex digest.
"""

from __future__ import annotations

import re

from nbmlops.exceptions import UsageError

__all__ = [
    "DIGEST_RE",
    "EXT",
    "FORMAT_OF_EXT",
    "OBJECT_RE",
    "VERSION_RE",
    "is_valid_name",
    "object_rel",
    "parse_ref",
    "validate_name",
    "version_rel",
]

EXT = {"parquet": ".parquet", "npy": ".npy", "bytes": ".bin", "tree": ".json"}
FORMAT_OF_EXT = {ext: fmt for fmt, ext in EXT.items()}
DIGEST_RE = re.compile(r"[0-9a-f]{16,128}")
VERSION_RE = re.compile(r"([1-9][0-9]{0,17})\.json")
OBJECT_RE = re.compile(r"objects/([0-9a-f]{2})/([0-9a-f]{16,128})(\.[a-z]+)")

_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
_NAME_FIX = (
    "Use 1-128 letters, digits, '.', '_' or '-', starting with a letter or digit and without "
    "'..' (e.g. 'sales-2024.q1')"
)


def is_valid_name(name: str) -> bool:
    """True when ``name`` is a safe dataset name (what :func:`validate_name` accepts)."""
    return bool(_NAME_RE.fullmatch(name)) and ".." not in name


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
    if is_valid_name(name):
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


def object_rel(digest: str, fmt: str) -> str:
    return f"objects/{digest[:2]}/{digest}{EXT[fmt]}"


def version_rel(name: str, k: int) -> str:
    return f"versions/{name}/{k}.json"
