"""The serving cache: checked copies of model versions, and what the registry last said.

Layout under ``<home>/serving-cache/<name>/`` (``<name>`` quoted to one folder name):

* ``<version>/``: the version's files. They get there only after passing the safety checks
  (through a temporary folder renamed into place) and are checked again on every load.
* ``<version>.json``: the registry's record of that version (tags, source, run id) when it
  was last checked, so a start-up can check the copy without asking the registry.
* ``@<alias>.json``: the version the alias pointed at when the registry was last asked.
* ``<version>.scan.json``: the files digest and allow-list fingerprint of a copy this cache's
  own scan passed, so a restart loads that copy without scanning it again (any change to
  the files or to the allow list means a new scan).

Records are written to a temporary file and renamed, so a reader sees an old record or a new
one, never half of one. A record that cannot be read counts as missing, and so does one
written for another registry (each record carries a digest of the registry's URI: a project
that points at another tracking server does not start from the first one's answers). The cache lives in
the project's nbmlops home: whoever can write there can also change ``nbmlops.yaml`` and the
default store next to it, so the records are trusted as much as those are, and no more: a
gateway started from them asks the registry again straight away (see ``router``).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import shutil
import uuid
from pathlib import Path
from typing import Any
from urllib.parse import quote

from nbmlops.core.serving.registry import ModelRef, ResolvedVersion

log = logging.getLogger("nbmlops.serving")


def safe_segment(name: str) -> str:
    """A registered model name as one folder name (no separators, no '..')."""
    seg = quote(name, safe="")
    return "%2E" + seg[1:] if seg.startswith(".") else seg


def registry_key(uri: str) -> str:
    """A short digest naming a registry in records (a URI may hold credentials)."""
    return hashlib.blake2b(uri.encode("utf-8"), digest_size=12).hexdigest()


class ServingCache:
    """Model folders, and the records of one registry, under one cache root."""

    def __init__(self, root: Path, registry_uri: str):
        self.root = root
        self.registry = registry_key(registry_uri)
        self._remembered: dict[tuple[str, str], int] = {}  # alias answers this process wrote

    def folder(self, name: str) -> Path:
        return self.root / safe_segment(name)

    def version_dir(self, name: str, version: int) -> Path:
        return self.folder(name) / str(int(version))

    def new_download_dir(self, name: str) -> Path:
        """A fresh temporary folder next to the versions (same filesystem: rename works)."""
        folder = self.folder(name)
        folder.mkdir(parents=True, exist_ok=True)
        return folder / f".download-{uuid.uuid4().hex}"

    def discard(self, path: Path) -> None:
        """Remove a cached copy: renamed out of the way first, so no reader sees half of it."""
        aside = path.with_name(f".discard-{uuid.uuid4().hex}")
        try:
            os.replace(path, aside)
        except OSError:
            return
        shutil.rmtree(aside, ignore_errors=True)

    # --- records -----------------------------------------------------------------------------
    def _version_record(self, name: str, version: int) -> Path:
        return self.folder(name) / f"{int(version)}.json"

    def _alias_record(self, name: str, alias: str) -> Path:
        return self.folder(name) / f"@{alias}.json"

    def _read(self, path: Path) -> dict[str, Any] | None:
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as err:
            log.warning("ignoring the unreadable serving-cache record %s: %s", path, err)
            return None
        return data if isinstance(data, dict) else None

    def _write(self, path: Path, data: dict[str, Any]) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
        try:
            tmp.write_text(json.dumps(data, sort_keys=True), encoding="utf-8")
            os.replace(tmp, path)
        except OSError as err:  # a read-only cache only costs the next start its head start
            log.warning("cannot write the serving-cache record %s: %s", path, err)
            with contextlib.suppress(OSError):
                tmp.unlink()

    def read_version(self, name: str, version: int) -> ResolvedVersion | None:
        data = self._read(self._version_record(name, version))
        if data is None or data.get("registry") != self.registry:
            return None
        try:
            record = ResolvedVersion.from_json(data)
        except (KeyError, TypeError, ValueError):
            return None
        if record.name != name or record.version != int(version):
            return None
        return record

    def write_version(self, resolved: ResolvedVersion) -> None:
        if self.read_version(resolved.name, resolved.version) != resolved:
            record = {**resolved.to_json(), "registry": self.registry}
            self._write(self._version_record(resolved.name, resolved.version), record)

    def _scan_record(self, name: str, version: int) -> Path:
        return self.folder(name) / f"{int(version)}.scan.json"

    def scan_passed(self, name: str, version: int, digest: str, policy: str) -> bool:
        """Whether the scan passed a copy of the version with these files under this policy."""
        data = self._read(self._scan_record(name, version))
        return data == {"digest": digest, "policy": policy, "status": "passed"}

    def write_scan_passed(self, name: str, version: int, digest: str, policy: str) -> None:
        record = {"digest": digest, "policy": policy, "status": "passed"}
        self._write(self._scan_record(name, version), record)

    def read_alias(self, name: str, alias: str) -> int | None:
        data = self._read(self._alias_record(name, alias))
        if data is None or data.get("registry") != self.registry:
            return None
        try:
            return int(data["version"])
        except (KeyError, TypeError, ValueError):
            return None

    def write_alias(self, name: str, alias: str, version: int) -> None:
        if self.read_alias(name, alias) != int(version):
            record = {"version": int(version), "registry": self.registry}
            self._write(self._alias_record(name, alias), record)

    # --- look-up -----------------------------------------------------------------------------
    def remember(self, ref: ModelRef, resolved: ResolvedVersion) -> None:
        """What the registry just answered for ``ref`` (the version record is written when
        the version's files pass their checks)."""
        if ref.alias is None or resolved.name != ref.name:
            return
        key = (ref.name, ref.alias)
        if self._remembered.get(key) != resolved.version:  # not a file read on every poll
            self.write_alias(ref.name, ref.alias, resolved.version)
            self._remembered[key] = resolved.version

    def lookup(self, ref: ModelRef) -> ResolvedVersion | None:
        """What the registry last said ``ref`` means, if its checked copy is still here."""
        version = ref.version if ref.alias is None else self.read_alias(ref.name, ref.alias)
        if version is None:
            return None
        if not self.version_dir(ref.name, version).is_dir():
            return None
        return self.read_version(ref.name, version)
