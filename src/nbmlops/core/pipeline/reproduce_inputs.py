"""The inputs of a recorded run, found by digest (a step reproduced just before, the recorded
path when unchanged, a data version) and put in the reproduction's scratch folder."""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

from nbmlops.config import Settings
from nbmlops.core.data.digest_files import digest_file
from nbmlops.core.pipeline.formatting import short_digest
from nbmlops.core.pipeline.reproduce_report import Check
from nbmlops.exceptions import NbmlopsError


def _copy_checked(src: Path, dest: Path, digest: str) -> bool:
    """Copy ``src`` to ``dest``; True when the copy has ``digest`` (else it is removed)."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    try:
        shutil.copyfile(src, dest)
    except OSError:
        return False
    if digest_file(dest).digest == digest:
        return True
    dest.unlink(missing_ok=True)
    return False


class RecordedInputs:
    """Finds each recorded input by digest and puts it in the scratch folder."""

    def __init__(self, settings: Settings, produced: dict[str, tuple[Path, str]]):
        self.settings = settings
        self.produced = produced
        self._store: Any = None

    @property
    def store(self) -> Any:
        if self._store is None:
            from nbmlops.core.data.store import DataStore

            self._store = DataStore(self.settings.resolved_data_url)
        return self._store

    def versions(self, digest: str) -> list[Any]:
        try:
            return [v for v in self.store.find_digest(digest) if v.kind == "file"]
        except (NbmlopsError, OSError):
            return []

    def checkout(self, version: Any, dest: Path) -> bool:
        from nbmlops.core.access import check_dataset
        from nbmlops.core.audit import AuditLog

        user = self.settings.resolved_user
        check_dataset(self.settings.access, user, "read", version.name)
        dest.parent.mkdir(parents=True, exist_ok=True)
        try:
            self.store.checkout_path(version.ref, dest)
        except NbmlopsError:
            return False
        AuditLog(self.settings.audit_path).append(
            "data.checkout",
            version.ref,
            user=user,
            details={"digest": version.digest, "dest": str(dest), "for": "reproduce"},
        )
        return True

    def file(self, name: str, path: str, digest: str, dest: Path) -> Check:
        item = f"input {name}"
        earlier = self.produced.get(path)
        if earlier is not None and earlier[1] == digest and _copy_checked(earlier[0], dest, digest):
            return Check(
                item, short_digest(digest), short_digest(digest), True, "reproduced output"
            )
        current: str | None = None
        if path and os.path.isfile(path):
            if _copy_checked(Path(path), dest, digest):
                return Check(
                    item, short_digest(digest), short_digest(digest), True, f"unchanged at {path}"
                )
            try:
                current = digest_file(path).digest
            except OSError:
                current = None
        for version in self.versions(digest):
            if self.checkout(version, dest):
                return Check(
                    item,
                    short_digest(digest),
                    short_digest(digest),
                    True,
                    f"restored from {version.ref}",
                )
        now = f"changed ({short_digest(current)})" if current else "missing"
        return Check(
            item,
            short_digest(digest),
            now,
            False,
            f"{path or name} {'changed since the run' if current else 'is gone'} and no data "
            "version with the recorded digest is in the data store",
        )

    def data(self, name: str, ref: str, digest: str) -> tuple[Check, str | None]:
        item = f"input {name}"
        try:
            current = self.store.get(ref)
        except (NbmlopsError, OSError):
            current = None
        if current is not None and current.digest == digest:
            return Check(
                item, short_digest(digest), short_digest(digest), True, f"data version {ref}"
            ), ref
        same = next(iter(self.store_versions(digest)), None)
        if same is not None:
            return (
                Check(item, short_digest(digest), short_digest(digest), True, f"as {same.ref}"),
                same.ref,
            )
        now = short_digest(current.digest) if current is not None else "missing"
        return (
            Check(item, short_digest(digest), now, False, f"no data version of {ref}'s content"),
            None,
        )

    def store_versions(self, digest: str) -> list[Any]:
        try:
            return list(self.store.find_digest(digest))
        except (NbmlopsError, OSError):
            return []
