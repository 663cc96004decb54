"""What every registry operation shares: the project's settings, its MLflow client and audit
log, the current user, and the plumbing around them (store errors, the per-model lock, roles,
lookups of models, versions, alias holders and histories, data versions)."""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from nbmlops.config import ModelRule, Settings, load_settings
from nbmlops.core.registry.names import HISTORY_TAG
from nbmlops.core.registry.roles import check_role, matching_rule
from nbmlops.exceptions import ModelNotFound, NbmlopsError, RegistryBusy, StoreError, UsageError

if TYPE_CHECKING:
    from mlflow import MlflowClient

    from nbmlops.core.audit import AuditLog
    from nbmlops.core.lineage.graph import LineageGraph

__all__ = ["RegistryContext", "approvals_of", "is_not_found"]


def is_not_found(err: BaseException) -> bool:
    """Whether an MLflow error says the thing asked for does not exist."""
    code = getattr(err, "error_code", "")
    return code in ("RESOURCE_DOES_NOT_EXIST", "NOT_FOUND") or "not found" in str(err).lower()


def approvals_of(tags: dict[str, str]) -> list[dict[str, Any]]:
    """The approvals recorded in a version's tags (malformed entries are left out)."""
    try:
        value = json.loads(tags.get("nbmlops.approvals", "[]"))
    except ValueError:
        return []
    return [a for a in value if isinstance(a, dict) and "user" in a]


def _quiet_downloads() -> contextlib.AbstractContextManager[None]:
    from nbmlops.core.tracking.store import quiet_artifact_downloads

    return quiet_artifact_downloads()


class RegistryContext:
    """One project's registry plumbing, handed to every operation module."""

    def __init__(self, settings: Settings | None = None):
        self.settings = settings or load_settings()
        self._client: MlflowClient | None = None

    # -- plumbing ---------------------------------------------------------------------------
    @property
    def user(self) -> str:
        return self.settings.resolved_user

    @property
    def client(self) -> MlflowClient:
        if self._client is None:
            from nbmlops.core.tracking.store import open_client

            self._client = open_client(self.settings)
        return self._client

    @property
    def audit(self) -> AuditLog:
        from nbmlops.core.audit import AuditLog

        return AuditLog(self.settings.audit_path)

    def ensure_store(self) -> None:
        from nbmlops.core.tracking.store import reachable

        uri = self.settings.resolved_tracking_uri
        if not reachable(uri):
            raise StoreError(
                "The MLflow tracking server does not answer; nothing was changed",
                where=uri,
                fix="Start the server (or fix tracking_uri in nbmlops.yaml) and try again.",
            )

    @contextlib.contextmanager
    def store(self, doing: str) -> Iterator[None]:
        """MLflow and connection failures become a StoreError that says nothing changed."""
        try:
            yield
        except NbmlopsError:
            raise
        except Exception as err:
            from mlflow.exceptions import MlflowException

            if isinstance(err, (MlflowException, ConnectionError, OSError)):
                first = str(err).strip().splitlines()[0] if str(err).strip() else ""
                raise StoreError(
                    f"Could not {doing}: {type(err).__name__}: {first[:300]}; nothing was changed",
                    where=self.settings.resolved_tracking_uri,
                    fix="Check that the tracking store is reachable and writable, then retry.",
                ) from err
            raise

    @contextlib.contextmanager
    def lock(self, name: str) -> Iterator[None]:
        """Exclusive per-model lock (read-check-write of aliases, history and approvals)."""
        folder = self.settings.home_dir / "locks"
        folder.mkdir(parents=True, exist_ok=True)
        digest = hashlib.sha256(name.encode()).hexdigest()[:16]
        path = folder / f"model-{name[:60]}-{digest}.lock"
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        timeout = self.settings.registry.lock_timeout_seconds
        deadline = time.monotonic() + timeout
        try:
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if time.monotonic() >= deadline:
                        raise RegistryBusy(
                            f"Another promotion, rollback or approval of model {name!r} has "
                            f"held its lock for over {timeout:g} s; nothing was changed",
                            where=str(path),
                            fix="Retry when it has finished (raise registry.lock_timeout_seconds "
                            "in nbmlops.yaml if such actions are legitimately slow).",
                        ) from None
                    time.sleep(0.05)
            yield
        finally:
            os.close(fd)  # releases the flock

    def rule(self, name: str) -> tuple[str | None, ModelRule | None]:
        found = matching_rule(self.settings.registry, name)
        return (None, None) if found is None else found

    def require(self, name: str, role: str, action: str) -> None:
        check_role(self.settings.registry, self.user, name, role, action)

    def graph(self) -> LineageGraph:
        from nbmlops.core.data.store import DataStore
        from nbmlops.core.lineage.graph import LineageGraph
        from nbmlops.core.lineage.store import LineageStore

        return LineageGraph(
            LineageStore(self.settings.home_dir / "lineage.db"),
            DataStore(self.settings.resolved_data_url),
        )

    def registered(self, name: str) -> Any:
        try:
            return self.client.get_registered_model(name)
        except Exception as err:
            if not is_not_found(err):
                raise
        names = [m.name for m in self.client.search_registered_models(max_results=50)]
        raise ModelNotFound(
            f"No registered model {name!r}",
            where=self.settings.resolved_tracking_uri,
            fix=f"Registered models: {', '.join(sorted(names)) or 'none yet'}. "
            "Register one with %register VARIABLE NAME.",
        )

    def version(self, name: str, version: int) -> Any:
        self.registered(name)
        try:
            return self.client.get_model_version(name, str(version))
        except Exception as err:
            if not is_not_found(err):
                raise
        have = sorted(int(v.version) for v in self.all_versions(name))
        raise ModelNotFound(
            f"Model {name!r} has no version {version}",
            where=self.settings.resolved_tracking_uri,
            fix=f"Versions: {', '.join(map(str, have)) or 'none'}.",
        )

    def all_versions(self, name: str) -> list[Any]:
        return list(self.client.search_model_versions(f"name = '{name}'", max_results=10000))

    def holder(self, name: str, alias: str) -> int | None:
        aliases = self.registered(name).aliases or {}
        value = aliases.get(alias)
        return int(value) if value is not None else None

    def history_raw(self, name: str, alias: str) -> str | None:
        tags = self.registered(name).tags or {}
        return tags.get(HISTORY_TAG + alias)

    def history_events(self, name: str, alias: str) -> list[dict[str, Any]]:
        raw = self.history_raw(name, alias)
        if not raw:
            return []
        try:
            events = json.loads(raw)
        except ValueError:
            raise StoreError(
                f"The alias history of {name}@{alias} is not valid JSON",
                where=f"registered model tag {HISTORY_TAG + alias}",
                fix="Restore it from the audit log (nbmlops audit log --target "
                f"'models:/{name}@{alias}') or delete the tag to start a new history.",
            ) from None
        return events if isinstance(events, list) else []

    def download(self, uri: str, dst: str) -> Path:
        import mlflow.artifacts

        with _quiet_downloads():
            local = mlflow.artifacts.download_artifacts(
                artifact_uri=uri, dst_path=dst, tracking_uri=self.settings.resolved_tracking_uri
            )
        return Path(local)

    def load_frame(self, ref: str) -> Any:
        """A data version, read as nbmlops.data.load reads it: the dataset's access rules
        for this user first, and a ``data.checkout`` audit entry."""
        from nbmlops.core.access import check_dataset
        from nbmlops.core.data.refs import parse_ref
        from nbmlops.core.data.store import DataStore

        dataset, _ = parse_ref(ref)
        check_dataset(self.settings.access, self.user, "read", dataset)
        store = DataStore(self.settings.resolved_data_url)
        version = store.get(ref)
        value = store.load(version.ref)
        self.audit.append(
            "data.checkout",
            version.ref,
            user=self.user,
            details={"digest": version.digest, "for": "model registry"},
        )
        return value

    def holdout_xy(self, ref: str, target: str) -> tuple[Any, Any]:
        frame = self.load_frame(ref)
        columns = list(getattr(frame, "columns", []))
        if target not in columns:
            raise UsageError(
                f"Target column {target!r} is not in {ref}",
                fix=f"Columns of {ref}: {', '.join(map(str, columns)) or 'none (not a frame)'}.",
            )
        return frame.drop(columns=[target]), frame[target]

    # -- register -------------------------------------------------------------------------
