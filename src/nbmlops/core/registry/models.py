"""The model registry: register versions with their lineage, card and scan; move aliases
(``champion``, ``challenger``, any name) through gates and roles; roll them back.

MLflow's model registry is the store: a registered model version points at an MLflow 3
LoggedModel (``model_id``) and its run, and carries nbmlops's facts as version tags
(``nbmlops.*``). Model versions have no artifact store of their own, so a version's card and
scan report are logged to its source run under ``model_card/<NAME>/v<k>/``.

Aliases, not stages. Each (model, alias) keeps a linear history in the registered model tag
``nbmlops.alias_history.<alias>`` (JSON list of events: promote, rollback, external); the
holders stack it implies is what ``rollback`` pops. Every register, promotion, refusal,
override, rollback, approval and card edit is appended to the hash-chained audit log.

Concurrency (RELIABILITY 15): a promotion decides (roles, gates) against the alias holder it
read first, then takes an exclusive per-model file lock (``<home>/locks/``), reads the holder
again and refuses if it moved meanwhile (ConcurrentChange): of two promotions decided at
once, exactly one wins and the history stays linear. The lock is a local ``flock``: processes
sharing one machine (kernels, CLI, Jupyter server) are serialised; several machines sharing a
tracking server are not, beyond the holder re-check.

Never lose (RELIABILITY 24): every refusal (role, gate, lock busy, alias moved, store down)
happens before the first write; a write that fails midway is undone (alias, history tag,
version) before the error is raised, so a failed action changes nothing.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import re
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from nbmlops.config import ROLE_NAMES, ModelRule, Settings, load_settings
from nbmlops.core.registry.card import (
    INDICATIVE_NOTE,
    ModelCard,
    figure_png,
    fit_labels,
    importance_figure,
    permutation_importances,
    render_html,
    render_markdown,
)
from nbmlops.core.registry.gates import GateContext, GateResult, build_gates, run_gates, score
from nbmlops.core.registry.roles import alias_role, check_role, matching_rule, roles_of
from nbmlops.core.registry.safety import files_digest, inspect_model_dir, verify_files
from nbmlops.core.registry.scan import ScanReport, scan_model_dir
from nbmlops.exceptions import (
    ConcurrentChange,
    GateRefused,
    ModelNotFound,
    NbmlopsError,
    RegistryBusy,
    StoreError,
    UnsafeModelError,
    UsageError,
)

if TYPE_CHECKING:
    from mlflow import MlflowClient

    from nbmlops.core.audit import AuditLog
    from nbmlops.core.lineage.graph import LineageGraph

__all__ = [
    "AliasEvent",
    "Approval",
    "ModelRegistry",
    "PromotionResult",
    "RegisteredVersion",
    "VersionInfo",
    "alias_stack",
]

TAG = "nbmlops."
HISTORY_TAG = "nbmlops.alias_history."
CARD_DIR = "model_card"
_HISTORY_LIMIT = 90_000  # MLflow allows 100,000 characters per registry tag value
_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
_ALIAS_RE = re.compile(r"[A-Za-z][A-Za-z0-9_-]{0,63}")
_MODEL_ID_RE = re.compile(r"m-[0-9a-f]{32}")
_RUN_ID_RE = re.compile(r"[0-9a-f]{32}")


# --- records -------------------------------------------------------------------------------


@dataclass(frozen=True)
class RegisteredVersion:
    """What :meth:`ModelRegistry.register` made."""

    name: str
    version: int
    run_id: str
    model_id: str
    source: str
    files_digest: str
    scan: ScanReport
    card: ModelCard
    card_uri: str
    data_versions: list[str]
    tags: dict[str, str]

    @property
    def uri(self) -> str:
        return f"models:/{self.name}/{self.version}"


@dataclass(frozen=True)
class VersionInfo:
    name: str
    version: int
    aliases: list[str]
    run_id: str | None
    model_id: str | None
    created: float
    registered_by: str
    scan: str
    card_complete: bool
    approvals: list[str]
    data_versions: list[str]


@dataclass(frozen=True)
class AliasEvent:
    action: str  # promote | rollback | external | base
    version: int | None
    previous: int | None
    user: str
    ts: float
    override: str | None = None


@dataclass(frozen=True)
class PromotionResult:
    name: str
    alias: str
    before: int | None
    after: int | None
    action: str  # promote | rollback | unchanged
    user: str
    gates: list[GateResult] = field(default_factory=list)
    override: str | None = None

    @property
    def changed(self) -> bool:
        return self.action != "unchanged"

    def summary(self) -> str:
        if not self.changed:
            return f"{self.name}: v{self.after} already holds @{self.alias}; nothing changed"
        before = f"v{self.before}" if self.before is not None else "nobody"
        verb = "rolled back" if self.action == "rollback" else "moved"
        text = f"{self.name}@{self.alias} {verb}: {before} -> v{self.after} (by {self.user})"
        if self.override:
            failed = [g.gate for g in self.gates if not g.passed]
            text += f"; gates overridden ({', '.join(failed) or 'none failed'}): {self.override}"
        return text


@dataclass(frozen=True)
class Approval:
    name: str
    version: int
    user: str
    ts: float
    comment: str
    new: bool  # False when this user had approved already


# --- helpers -------------------------------------------------------------------------------


def check_model_name(name: str) -> str:
    """A registered model name nbmlops accepts (it becomes a folder name under the run's
    artifacts and a lock file name, so nothing path-like)."""
    if isinstance(name, str) and _NAME_RE.fullmatch(name) and ".." not in name:
        return name
    raise UsageError(
        f"Invalid model name {name!r}",
        fix="Use 1-128 letters, digits, '.', '_' or '-', starting with a letter or digit, "
        "without '..' (e.g. 'churn-model').",
    )


def check_alias(alias: str) -> str:
    if (
        isinstance(alias, str)
        and _ALIAS_RE.fullmatch(alias)
        and alias.lower() != "latest"
        and not re.fullmatch(r"[vV]\d+", alias)
    ):
        return alias
    raise UsageError(
        f"Invalid alias {alias!r}",
        fix="Use a letter then letters, digits, '_' or '-' (e.g. champion, challenger); "
        "'latest' and v<N> are reserved by MLflow.",
    )


def as_version(version: int | str) -> int:
    text = str(version).strip().removeprefix("v").removeprefix("V")
    if text.isdigit() and int(text) > 0:
        return int(text)
    raise UsageError(f"Invalid model version {version!r}", fix="Give a version number: 1, 2, 3 ...")


def alias_stack(events: list[dict[str, Any]]) -> list[int]:
    """The holders an alias history implies, oldest first: promotions (and holders set
    outside nbmlops) push, rollbacks pop. ``rollback`` moves the alias to ``stack[-2]``."""
    stack: list[int] = []
    for e in events:
        action = e.get("action")
        if action == "base":
            stack = [int(v) for v in e.get("stack", [])]
        elif action in ("promote", "external") and e.get("version") is not None:
            v = int(e["version"])
            if not stack or stack[-1] != v:
                stack.append(v)
        elif action == "rollback" and stack:
            stack.pop()
    return stack


def _compact(events: list[dict[str, Any]]) -> str:
    """Serialise a history within MLflow's tag limit: the oldest events fold into a ``base``
    event holding the stack they implied (the audit log keeps every event)."""
    text = json.dumps(events, separators=(",", ":"))
    while len(text) > _HISTORY_LIMIT and len(events) > 2:
        cut = max(1, len(events) // 4)
        base = {"action": "base", "stack": alias_stack(events[:cut])[-200:], "ts": time.time()}
        events = [base, *events[cut:]]
        text = json.dumps(events, separators=(",", ":"))
    return text


def _is_not_found(err: BaseException) -> bool:
    code = getattr(err, "error_code", "")
    return code in ("RESOURCE_DOES_NOT_EXIST", "NOT_FOUND") or "not found" in str(err).lower()


def _quiet_downloads() -> contextlib.AbstractContextManager[None]:
    from nbmlops.core.tracking.store import quiet_artifact_downloads

    return quiet_artifact_downloads()


# --- the registry --------------------------------------------------------------------------


class ModelRegistry:
    """Register, promote, approve, roll back and describe models of one project.

    The user is ``settings.resolved_user`` (NBMLOPS_USER / JUPYTERHUB_USER / OS user); every
    method checks that user's role on the model first.
    """

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

    def _ensure_store(self) -> None:
        from nbmlops.core.tracking.store import reachable

        uri = self.settings.resolved_tracking_uri
        if not reachable(uri):
            raise StoreError(
                "The MLflow tracking server does not answer; nothing was changed",
                where=uri,
                fix="Start the server (or fix tracking_uri in nbmlops.yaml) and try again.",
            )

    @contextlib.contextmanager
    def _store(self, doing: str) -> Iterator[None]:
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
    def _lock(self, name: str) -> Iterator[None]:
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

    def _rule(self, name: str) -> tuple[str | None, ModelRule | None]:
        found = matching_rule(self.settings.registry, name)
        return (None, None) if found is None else found

    def _require(self, name: str, role: str, action: str) -> None:
        check_role(self.settings.registry, self.user, name, role, action)

    def _graph(self) -> LineageGraph:
        from nbmlops.core.data.store import DataStore
        from nbmlops.core.lineage.graph import LineageGraph
        from nbmlops.core.lineage.store import LineageStore

        return LineageGraph(
            LineageStore(self.settings.home_dir / "lineage.db"),
            DataStore(self.settings.resolved_data_url),
        )

    def _registered(self, name: str) -> Any:
        try:
            return self.client.get_registered_model(name)
        except Exception as err:
            if not _is_not_found(err):
                raise
        names = [m.name for m in self.client.search_registered_models(max_results=50)]
        raise ModelNotFound(
            f"No registered model {name!r}",
            where=self.settings.resolved_tracking_uri,
            fix=f"Registered models: {', '.join(sorted(names)) or 'none yet'}. "
            "Register one with %register VARIABLE NAME.",
        )

    def _version(self, name: str, version: int) -> Any:
        self._registered(name)
        try:
            return self.client.get_model_version(name, str(version))
        except Exception as err:
            if not _is_not_found(err):
                raise
        have = sorted(int(v.version) for v in self._all_versions(name))
        raise ModelNotFound(
            f"Model {name!r} has no version {version}",
            where=self.settings.resolved_tracking_uri,
            fix=f"Versions: {', '.join(map(str, have)) or 'none'}.",
        )

    def _all_versions(self, name: str) -> list[Any]:
        return list(self.client.search_model_versions(f"name = '{name}'", max_results=10000))

    def _holder(self, name: str, alias: str) -> int | None:
        aliases = self._registered(name).aliases or {}
        value = aliases.get(alias)
        return int(value) if value is not None else None

    def _history_raw(self, name: str, alias: str) -> str | None:
        tags = self._registered(name).tags or {}
        return tags.get(HISTORY_TAG + alias)

    def _history_events(self, name: str, alias: str) -> list[dict[str, Any]]:
        raw = self._history_raw(name, alias)
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

    def _download(self, uri: str, dst: str) -> Path:
        import mlflow.artifacts

        with _quiet_downloads():
            local = mlflow.artifacts.download_artifacts(
                artifact_uri=uri, dst_path=dst, tracking_uri=self.settings.resolved_tracking_uri
            )
        return Path(local)

    # -- resolving what to register ---------------------------------------------------------
    def _resolve_source(self, source: str) -> tuple[Any, str | None]:
        """(LoggedModel, lineage node or None) for a notebook variable, ``runs:/ID/NAME``,
        ``models:/m-...`` or a logged model id ``m-...``."""
        graph = self._graph()
        if not isinstance(source, str) or not source.strip():
            raise UsageError("Say what to register", fix=_SOURCE_FIX)
        source = source.strip()
        logged = None
        if source.startswith("runs:/"):
            run_id, _, mname = source.removeprefix("runs:/").partition("/")
            if not _RUN_ID_RE.fullmatch(run_id) or not re.fullmatch(r"[A-Za-z0-9_.-]+", mname):
                raise UsageError(f"Invalid model URI {source!r}", fix=_SOURCE_FIX)
            try:
                run = self.client.get_run(run_id)
            except Exception as err:
                if not _is_not_found(err):
                    raise
                raise ModelNotFound(f"No run {run_id}", fix=_SOURCE_FIX) from None
            found = self.client.search_logged_models(
                experiment_ids=[run.info.experiment_id],
                filter_string=f"source_run_id = '{run_id}' AND name = '{mname}'",
            )
            ready = [m for m in found if str(m.status).rsplit(".", 1)[-1] == "READY"]
            if not ready:
                raise ModelNotFound(
                    f"Run {run_id} has no logged model named {mname!r}",
                    fix="Check the run's Logged models tab in the MLflow UI, or give the "
                    "model id (m-...).",
                )
            logged = max(ready, key=lambda m: m.creation_timestamp or 0)
        elif source.startswith(("m-", "models:/m-")):
            model_id = source.removeprefix("models:/")
            if not _MODEL_ID_RE.fullmatch(model_id):
                raise UsageError(f"Invalid logged model id {model_id!r}", fix=_SOURCE_FIX)
            try:
                logged = self.client.get_logged_model(model_id)
            except Exception as err:
                if not _is_not_found(err):
                    raise
                raise ModelNotFound(f"No logged model {model_id}", fix=_SOURCE_FIX) from None
        elif source.isidentifier():
            node = graph.latest_model(source)
            found_id = graph.graph.nodes[node].get("model_id") if node else None
            if node is None or not found_id:
                why = (
                    "no tracked cell has bound a model to it"
                    if node is None
                    else "its model was not logged to MLflow"
                )
                raise ModelNotFound(
                    f"Cannot register variable {source!r}: {why} (only runs already "
                    "shipped to MLflow appear in the lineage)",
                    fix="Fit the model in a %%track cell (or nbmlops.track block) first, or "
                    "give runs:/RUN_ID/NAME or a logged model id m-....",
                )
            logged = self.client.get_logged_model(found_id)
            return logged, node
        else:
            raise UsageError(f"Cannot register {source!r}", fix=_SOURCE_FIX)
        node = None
        try:
            node = graph.resolve(logged.model_id)
        except NbmlopsError:
            node = None  # logged outside a tracked cell: no lineage
        return logged, node

    def _training_data(
        self, graph: LineageGraph, node: str | None
    ) -> tuple[list[str], list[str], list[str]]:
        """(data versions, digests) of the data a model node was trained on: ``trained_on``
        edges and the inputs of the run that produced it; plus every committed data version
        further upstream."""
        if node is None:
            return [], [], []
        import networkx as nx

        g = graph.graph
        direct: list[str] = []
        for src, _dst, data in g.in_edges(node, data=True):
            if data.get("kind") == "trained_on":
                direct.append(src)
            elif data.get("kind") == "produced":
                for s, _d, dd in g.in_edges(src, data=True):
                    if dd.get("kind") == "input" and g.nodes[s].get("kind") == "data":
                        direct.append(s)
        direct = list(dict.fromkeys(direct))
        versions = [v for n in direct for v in g.nodes[n].get("versions") or []]
        digests = [str(g.nodes[n].get("digest")) for n in direct if g.nodes[n].get("digest")]
        upstream = [
            v
            for n in sorted(nx.ancestors(g, node))
            if g.nodes[n].get("kind") == "data"
            for v in g.nodes[n].get("versions") or []
        ]
        return list(dict.fromkeys(versions)), digests, list(dict.fromkeys(upstream))

    def _load_frame(self, ref: str) -> Any:
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

    def _holdout_xy(self, ref: str, target: str) -> tuple[Any, Any]:
        frame = self._load_frame(ref)
        columns = list(getattr(frame, "columns", []))
        if target not in columns:
            raise UsageError(
                f"Target column {target!r} is not in {ref}",
                fix=f"Columns of {ref}: {', '.join(map(str, columns)) or 'none (not a frame)'}.",
            )
        return frame.drop(columns=[target]), frame[target]

    # -- register -------------------------------------------------------------------------
    def register(
        self,
        source: str,
        name: str,
        *,
        holdout: str | None = None,
        target: str | None = None,
        intended_use: str | None = None,
        limitations: str | None = None,
        description: str | None = None,
    ) -> RegisteredVersion:
        """Register a logged model as a new version of ``name``.

        ``source``: a notebook variable a tracked cell bound a model to (its latest logged
        model in the lineage), ``runs:/RUN_ID/NAME``, or a logged model id ``m-...``.
        The model folder is checked (structure: refused when unsafe, before anything is
        registered or imported) and scanned; the version is tagged with its run, data
        versions, metrics, git commit, files digest and scan verdict; a model card is logged.
        ``holdout``/``target``: a data version with its target column for the card's
        permutation importance (else the logged input example, indicative only).
        """
        name = check_model_name(name)
        self._require(name, "developer", "register a version")
        if (holdout is None) != (target is None):
            raise UsageError(
                "holdout and target go together",
                fix="Pass both --holdout NAME@k and --target COLUMN, or neither.",
            )
        self._ensure_store()
        user = self.user
        with self._store(f"register a version of {name}"):
            holdout_xy = self._holdout_xy(holdout, target) if holdout and target else None
            logged, node = self._resolve_source(source)
            status = str(logged.status).rsplit(".", 1)[-1]
            if status != "READY":
                raise UsageError(
                    f"Logged model {logged.model_id} is {status}, not READY",
                    fix="Only a completely logged model can be registered.",
                )
            run_id = logged.source_run_id
            if not run_id:
                raise UsageError(
                    f"Logged model {logged.model_id} has no source run to keep its model card "
                    "and scan report in",
                    fix="Log the model within a run (a %%track cell does) and register that.",
                )
            run = self.client.get_run(run_id)
            graph = self._graph()
            data_versions, digests, upstream = self._training_data(graph, node)
            with tempfile.TemporaryDirectory(prefix="nbmlops-register-") as tmp:
                local = self._download(logged.artifact_location, tmp)
                # Structure first: a model leaving its folder or naming an undeclared loader
                # is refused here, before it is registered and before anything is imported.
                inspect_model_dir(local, self.settings.trusted_loader_modules)
                digest = files_digest(local)
                report = scan_model_dir(
                    local, self.settings.registry.scan, self.settings.trusted_loader_modules
                )
                card = self._new_card(name, logged, run, user, description)
                card.data_versions, card.data_digests = data_versions, digests
                card.upstream_data_versions = upstream
                card.intended_use = (intended_use or "").strip()
                card.limitations = (limitations or "").strip()
                card.scan_status, card.scan_summary = report.status, report.summary()
                images = self._card_images(card, local, report, graph, node, holdout, holdout_xy)
            tags = {
                "nbmlops.run_id": run_id or "",
                "nbmlops.model_id": logged.model_id,
                "nbmlops.registered_by": user,
                "nbmlops.files_digest": digest,
                "nbmlops.data_versions": ", ".join(data_versions),
                "nbmlops.data_digests": ", ".join(digests),
                "nbmlops.upstream_data_versions": ", ".join(upstream),
                "nbmlops.metrics": json.dumps(card.metrics, sort_keys=True),
                "nbmlops.git_commit": card.git_commit or "",
                "nbmlops.scan": report.status,
                "nbmlops.scan.summary": "; ".join(report.summary())[:4000],
            }
            created_model, mv = self._create_version(name, logged, run_id, tags, description)
            version = int(mv.version)
            card.version = version
            try:
                card_uri = self._write_card(card, images, report, run_id)
                card_tags = self._card_tags(card, card_uri)
                for key, value in card_tags.items():
                    self.client.set_model_version_tag(name, str(version), key, value)
                tags.update(card_tags)
                self.audit.append(
                    "model.register",
                    f"models:/{name}/{version}",
                    user=user,
                    details={
                        "source": source,
                        "run_id": run_id,
                        "model_id": logged.model_id,
                        "files_digest": digest,
                        "data_versions": data_versions,
                        "scan": report.status,
                        "card_complete": card.complete,
                    },
                )
            except BaseException:
                self._undo_version(name, version, created_model)
                raise
        return RegisteredVersion(
            name=name,
            version=version,
            run_id=run_id or "",
            model_id=logged.model_id,
            source=logged.artifact_location,
            files_digest=digest,
            scan=report,
            card=card,
            card_uri=card_uri,
            data_versions=data_versions,
            tags=tags,
        )

    def _create_version(
        self, name: str, logged: Any, run_id: str | None, tags: dict[str, str], description: Any
    ) -> tuple[bool, Any]:
        from mlflow.exceptions import MlflowException

        created = False
        try:
            self.client.create_registered_model(name)
            created = True
        except MlflowException as err:
            if err.error_code not in ("RESOURCE_ALREADY_EXISTS", "ALREADY_EXISTS"):
                raise
        try:
            # source = the logged model's artifact location (not models:/m-...: MLflow's SQL
            # registry resolves that through the *global* tracking URI, not this client's).
            mv = self.client.create_model_version(
                name,
                source=logged.artifact_location,
                run_id=run_id,
                tags=tags,
                description=description,
                await_creation_for=0,
                model_id=logged.model_id,
            )
        except BaseException:
            if created:
                with contextlib.suppress(Exception):
                    self.client.delete_registered_model(name)
            raise
        return created, mv

    def _undo_version(self, name: str, version: int, created_model: bool) -> None:
        with contextlib.suppress(Exception):
            self.client.delete_model_version(name, str(version))
        if created_model:
            with contextlib.suppress(Exception):
                if not self._all_versions(name):
                    self.client.delete_registered_model(name)

    # -- the card -------------------------------------------------------------------------
    def _new_card(
        self, name: str, logged: Any, run: Any, user: str, description: str | None
    ) -> ModelCard:
        data = run.data if run is not None else None
        tags = logged.tags or {}
        return ModelCard(
            name=name,
            version=0,
            created=time.time(),
            registered_by=user,
            model_id=logged.model_id,
            run_id=logged.source_run_id,
            source=logged.artifact_location,
            model_class=tags.get("nbmlops.class") or None,
            git_commit=(data.tags.get("mlflow.source.git.commit") if data else None) or None,
            description=(description or "").strip(),
            metrics=dict(data.metrics) if data else {},
            params=dict(data.params) if data else {},
        )

    def _card_images(
        self,
        card: ModelCard,
        local: Path,
        report: ScanReport,
        graph: LineageGraph,
        node: str | None,
        holdout: str | None,
        holdout_xy: tuple[Any, Any] | None,
    ) -> dict[str, bytes]:
        """Lineage drawing and permutation importance (fills the card's fields)."""
        images: dict[str, bytes] = {}
        if node is not None:
            images["lineage"] = figure_png(fit_labels(graph.draw(graph.view(node))))
        else:
            card.lineage_note = (
                "The model was not logged by a tracked cell, so its training data is unknown."
            )
        try:
            from mlflow.models import Model

            card.inputs = list(Model.load(str(local)).get_input_schema().input_names())
        except Exception:
            card.inputs = []
        if not report.loadable:  # nothing in the folder is unpickled unless the scan passed
            card.importance_note = (
                "Not computed: the security scan flagged the model, so it was not loaded."
                if report.flagged
                else "Not computed: the security scan could not check every model file, so "
                "the model was not loaded."
            )
            return images
        import mlflow.pyfunc

        model = mlflow.pyfunc.load_model(str(local))
        if holdout_xy is not None:
            X, y = holdout_xy
            card.importance, card.importance_metric = permutation_importances(model.predict, X, y)
            card.importance_basis = f"holdout {holdout} ({len(X)} rows, true target)"
        else:
            try:
                example = Model.load(str(local)).load_input_example(str(local))
            except Exception:
                example = None
            if example is None or not hasattr(example, "columns") or len(example) == 0:
                card.importance_note = (
                    "Not computed: no holdout data version was given and the model has no "
                    "logged input example (register with --holdout NAME@k --target COL)."
                )
                return images
            try:
                y = model.predict(example)
                card.importance, card.importance_metric = permutation_importances(
                    model.predict, example, y
                )
                card.importance_basis = f"logged input example ({len(example)} rows)"
                card.importance_note = INDICATIVE_NOTE.format(rows=len(example))
            except Exception as err:
                card.importance_note = f"Not computed on the input example: {err}"
                return images
        images["importance"] = figure_png(importance_figure(card))
        return images

    def _card_dir(self, card: ModelCard) -> str:
        return f"{CARD_DIR}/{card.name}/v{card.version}"

    def _write_card(
        self,
        card: ModelCard,
        images: dict[str, bytes],
        report: ScanReport | None,
        run_id: str | None,
    ) -> str:
        """Log card.json/md/html, the images and scan.json to the run; return the card URI."""
        if not run_id:
            raise UsageError(
                f"{card.name} v{card.version} has no source run to keep its card in",
                fix="Register a model logged within a run.",
            )
        folder = self._card_dir(card)
        with tempfile.TemporaryDirectory(prefix="nbmlops-card-") as tmp:
            out = Path(tmp)
            names = {k: f"{k}.png" for k in images}
            for key, png in images.items():
                (out / names[key]).write_bytes(png)
            (out / "card.json").write_text(card.to_json(), encoding="utf-8")
            (out / "card.md").write_text(render_markdown(card, names), encoding="utf-8")
            (out / "card.html").write_text(render_html(card, images), encoding="utf-8")
            if report is not None:
                (out / "scan.json").write_text(
                    json.dumps(report.to_dict(), indent=2, default=str), encoding="utf-8"
                )
            self.client.log_artifacts(run_id, str(out), artifact_path=folder)
        return f"runs:/{run_id}/{folder}"

    @staticmethod
    def _card_tags(card: ModelCard, card_uri: str) -> dict[str, str]:
        return {
            "nbmlops.card": card_uri,
            "nbmlops.card.intended_use": card.intended_use[:4000],
            "nbmlops.card.limitations": card.limitations[:4000],
            "nbmlops.card.complete": str(card.complete).lower(),
        }

    def _read_card(self, mv: Any) -> tuple[ModelCard, dict[str, bytes]]:
        uri = (mv.tags or {}).get("nbmlops.card")
        if not uri:
            raise ModelNotFound(
                f"{mv.name} v{mv.version} has no model card",
                fix="Only versions registered with nbmlops have one; register the model "
                "with %register to get one.",
            )
        with tempfile.TemporaryDirectory(prefix="nbmlops-card-") as tmp:
            local = self._download(uri, tmp)
            card = ModelCard.from_json((local / "card.json").read_text(encoding="utf-8"))
            images = {
                p.stem: p.read_bytes()
                for p in local.glob("*.png")
                if p.stem in ("lineage", "importance")
            }
        return card, images

    def card(
        self,
        name: str,
        version: int | str,
        *,
        intended_use: str | None = None,
        limitations: str | None = None,
        description: str | None = None,
    ) -> ModelCard:
        """The version's model card; with field values, edit and re-render it first
        (developer role; audited as ``model.card.edit``)."""
        name = check_model_name(name)
        version = as_version(version)
        edits = {
            k: v.strip()
            for k, v in (
                ("intended_use", intended_use),
                ("limitations", limitations),
                ("description", description),
            )
            if v is not None
        }
        if not edits:
            self._require(name, "viewer", "read the card")
            with self._store(f"read the card of {name} v{version}"):
                return self._read_card(self._version(name, version))[0]
        self._require(name, "developer", f"edit the card of version {version}")
        self._ensure_store()
        with self._store(f"edit the card of {name} v{version}"), self._lock(name):
            mv = self._version(name, version)
            card, images = self._read_card(mv)
            before = {k: getattr(card, k) for k in edits}
            for key, value in edits.items():
                setattr(card, key, value)
            card.edits.append({"ts": time.time(), "user": self.user, "fields": sorted(edits)})
            old_tags = dict(mv.tags or {})
            card_uri = self._write_card(card, images, None, mv.run_id)
            new_tags = self._card_tags(card, card_uri)
            try:
                for key, value in new_tags.items():
                    self.client.set_model_version_tag(name, str(version), key, value)
                self.audit.append(
                    "model.card.edit",
                    f"models:/{name}/{version}",
                    user=self.user,
                    details={
                        "fields": sorted(edits),
                        "before": before,
                        "after": edits,
                        "complete": card.complete,
                    },
                )
            except BaseException:
                for key in new_tags:
                    with contextlib.suppress(Exception):
                        if key in old_tags:
                            self.client.set_model_version_tag(
                                name, str(version), key, old_tags[key]
                            )
                raise
        return card

    def card_html(self, name: str, version: int | str) -> str:
        """The version's card as one self-contained HTML page."""
        name = check_model_name(name)
        version = as_version(version)
        self._require(name, "viewer", "read the card")
        with self._store(f"read the card of {name} v{version}"):
            card, images = self._read_card(self._version(name, version))
        return render_html(card, images)

    # -- loading versions safely (gates) ----------------------------------------------------
    def _load_version_model(self, name: str, version: int) -> Any:
        """A version's model as a pyfunc, loaded only after its structure check, its files
        digest check (when one was recorded) and a scan of the very files loaded: a verdict
        tag is not trusted for that, since whoever can write versions can write tags."""
        mv = self.client.get_model_version(name, str(version))
        tags = mv.tags or {}
        if tags.get("nbmlops.scan") == "flagged":
            raise UnsafeModelError(
                f"{name} v{version} was flagged by the security scan, so it is not loaded "
                f"({tags.get('nbmlops.scan.summary', '')})",
                fix="Register a clean model.",
            )
        import mlflow.pyfunc

        source = str(mv.source)
        if source.startswith("models:/"):
            source = str(self.client.get_model_version_download_uri(name, str(version)))
        with tempfile.TemporaryDirectory(prefix="nbmlops-load-") as tmp:
            local = self._download(source, tmp)
            inspect_model_dir(local, self.settings.trusted_loader_modules)
            verify_files(local, tags.get("nbmlops.files_digest"))
            report = scan_model_dir(
                local,
                self.settings.registry.scan,
                self.settings.trusted_loader_modules,
                audit=False,
            )
            if not report.loadable:
                raise UnsafeModelError(
                    f"{name} v{version} is refused by the security scan, so it is not loaded: "
                    + "; ".join(report.summary()),
                    fix="Register a model whose files pass the scan.",
                )
            return mlflow.pyfunc.load_model(str(local))

    def _context(self, name: str, mv: Any, alias: str, holder: int | None) -> GateContext:
        version = int(mv.version)
        tags = dict(mv.tags or {})
        metrics: dict[str, float] = {}
        if mv.run_id:
            metrics = dict(self.client.get_run(mv.run_id).data.metrics)
        frames: dict[tuple[str, str], tuple[Any, Any]] = {}
        scores: dict[tuple[int, str, str, str], tuple[float, int]] = {}

        def evaluate(v: int, ref: str, target: str, metric: str) -> tuple[float, int]:
            key = (v, ref, target, metric)
            if key not in scores:
                if (ref, target) not in frames:
                    frames[(ref, target)] = self._holdout_xy(ref, target)
                X, y = frames[(ref, target)]
                model = self._load_version_model(name, v)
                scores[key] = (score(metric, y, model.predict(X)), len(X))
            return scores[key]

        def validate(data_ref: str, against: str) -> Any:
            from nbmlops.core.data.schema import infer_schema
            from nbmlops.core.data.validate import validate_frame

            reference = self._load_frame(against)
            schema = infer_schema(reference, range_margin=0.1)  # as nbmlops.data.validate
            return validate_frame(self._load_frame(data_ref), reference=reference, schema=schema)

        registry = self.settings.registry
        _key, rule = self._rule(name)
        approvers: list[str] = []
        if rule is not None and rule.roles is not None:
            members = set(rule.roles.approver) | set(rule.roles.admin)
            approvers = ["everyone"] if "*" in members else sorted(members)
        else:
            approvers = ["everyone (no roles configured)"]
        return GateContext(
            model=name,
            version=version,
            alias=alias,
            holder=holder,
            run_metrics=metrics,
            tags=tags,
            approvals=self._approvals(tags),
            is_approver=lambda u: "approver" in roles_of(registry, u, name),
            approvers=approvers,
            evaluate=evaluate,
            validate=validate,
        )

    @staticmethod
    def _approvals(tags: dict[str, str]) -> list[dict[str, Any]]:
        try:
            value = json.loads(tags.get("nbmlops.approvals", "[]"))
        except ValueError:
            return []
        return [a for a in value if isinstance(a, dict) and "user" in a]

    def _gate_specs(self, name: str, alias: str) -> tuple[str | None, list[Any]]:
        key, rule = self._rule(name)
        if rule is None:
            return None, []
        return key, list(rule.gates.get(alias, rule.gates.get("*", [])))

    def check_gates(
        self, name: str, version: int | str, alias: str = "champion"
    ) -> list[GateResult]:
        """Every gate's result for moving ``alias`` to ``version``, changing nothing."""
        name, alias, version = check_model_name(name), check_alias(alias), as_version(version)
        self._require(name, "viewer", "check the gates")
        with self._store(f"check the gates of {name} v{version}"):
            mv = self._version(name, version)
            holder = self._holder(name, alias)
            _key, specs = self._gate_specs(name, alias)
            return run_gates(build_gates(specs), self._context(name, mv, alias, holder))

    # -- aliases --------------------------------------------------------------------------
    def promote(
        self,
        name: str,
        version: int | str,
        alias: str = "champion",
        *,
        override: str | None = None,
    ) -> PromotionResult:
        """Move ``alias`` to ``version`` if the user's role allows it and every gate configured
        for that alias passes; else raise (RoleDenied, GateRefused listing every failed gate,
        RegistryBusy, ConcurrentChange, StoreError) having changed nothing. ``override``
        (admins only) is the reason to promote despite failed gates; it is audited with them."""
        name, alias, version = check_model_name(name), check_alias(alias), as_version(version)
        needed = alias_role(self.settings.registry, name, alias)
        self._require(name, needed, f"move @{alias} (promote version {version})")
        if override is not None:
            if not override.strip():
                raise UsageError(
                    "An override needs a reason", fix='Pass --override "why this is needed".'
                )
            self._require(name, "admin", f"override the gates of @{alias}")
        self._ensure_store()
        user = self.user
        target = f"models:/{name}@{alias}"
        with self._store(f"promote {name} v{version} to @{alias}"):
            mv = self._version(name, version)
            before = self._holder(name, alias)
            if before == version:
                return PromotionResult(name, alias, before, version, "unchanged", user)
            rule_key, specs = self._gate_specs(name, alias)
            results = run_gates(build_gates(specs), self._context(name, mv, alias, before))
            failed = [r for r in results if not r.passed]
            gate_log = [r.to_dict() for r in results]
            if failed and override is None:
                self.audit.append(
                    "model.promote.refused",
                    target,
                    user=user,
                    details={"version": version, "holder": before, "gates": gate_log},
                )
                lines = "\n".join(f"  - {r.gate}: {r.reason}" for r in failed)
                raise GateRefused(
                    f"Promotion of {name} v{version} to @{alias} refused: {len(failed)} of "
                    f"{len(results)} gates failed:\n{lines}\nNothing was changed",
                    results,
                    where=f"nbmlops.yaml registry.models[{rule_key!r}].gates.{alias}",
                    fix="Fix what each failed gate names and promote again"
                    + (
                        "; an admin may promote anyway with --override 'reason'."
                        if needed != "admin"
                        else "."
                    ),
                )
            event: dict[str, Any] = {
                "action": "promote",
                "version": version,
                "previous": before,
                "user": user,
                "ts": time.time(),
            }
            if override is not None:
                event["override"] = override
            details: dict[str, Any] = {
                "alias": alias,
                "before": before,
                "after": version,
                "gates": gate_log,
            }
            if override is not None:
                details["override"] = override
                details["failed_gates"] = [r.gate for r in failed]
            with self._lock(name):
                now = self._holder(name, alias)
                if now != before:
                    raise ConcurrentChange(
                        f"@{alias} of {name} moved from "
                        f"{'nobody' if before is None else f'v{before}'} to "
                        f"{'nobody' if now is None else f'v{now}'} while this promotion of "
                        f"v{version} was being decided; nothing was changed",
                        where=target,
                        fix="Look at the new holder (%history) and promote again if you still "
                        "want to: the gates will then be checked against it.",
                    )
                action = "model.promote.override" if override is not None else "model.promote"
                self._move(name, alias, before, version, event, action, details)
        return PromotionResult(name, alias, before, version, "promote", user, results, override)

    def set_alias(
        self, name: str, alias: str, version: int | str, *, override: str | None = None
    ) -> PromotionResult:
        """Point ``alias`` at ``version``: the same roles and gates as :meth:`promote`."""
        return self.promote(name, version, alias, override=override)

    def rollback(self, name: str, alias: str = "champion") -> PromotionResult:
        """Move ``alias`` back to the version that held it before its current holder (gates
        are not re-run: that version passed them when it was promoted)."""
        name, alias = check_model_name(name), check_alias(alias)
        needed = alias_role(self.settings.registry, name, alias)
        self._require(name, needed, f"roll back @{alias}")
        self._ensure_store()
        user = self.user
        target = f"models:/{name}@{alias}"
        with self._store(f"roll back {name}@{alias}"), self._lock(name):
            holder = self._holder(name, alias)
            stack = alias_stack(self._history_events(name, alias))
            if holder is None:
                raise UsageError(
                    f"@{alias} of {name} has no holder: nothing to roll back",
                    where=target,
                )
            if not stack or stack[-1] != holder:
                known = f"v{stack[-1]}" if stack else "nothing"
                raise UsageError(
                    f"@{alias} of {name} is held by v{holder}, but its nbmlops history ends at "
                    f"{known} (the alias was moved outside nbmlops); nothing was changed",
                    where=target,
                    fix=f"Promote the version you want explicitly: %promote {name} VERSION "
                    f"--alias {alias}.",
                )
            if len(stack) < 2:
                raise UsageError(
                    f"v{holder} is the first holder of @{alias} of {name} in its history: there "
                    "is no earlier holder to roll back to; nothing was changed",
                    where=target,
                    fix=f"Promote another version instead: %promote {name} VERSION --alias {alias}.",
                )
            previous = stack[-2]
            self._version(name, previous)  # still exists (a deleted one cannot come back)
            event = {
                "action": "rollback",
                "version": previous,
                "previous": holder,
                "user": user,
                "ts": time.time(),
            }
            details = {"alias": alias, "before": holder, "after": previous}
            self._move(name, alias, holder, previous, event, "model.rollback", details)
        return PromotionResult(name, alias, holder, previous, "rollback", user)

    def _move(
        self,
        name: str,
        alias: str,
        before: int | None,
        after: int,
        event: dict[str, Any],
        action: str,
        details: dict[str, Any],
    ) -> None:
        """Inside the lock: alias, history tag, audit entry; on any failure undo what was
        written and raise, so a failed move changes nothing."""
        key = HISTORY_TAG + alias
        raw_before = self._history_raw(name, alias)
        events = self._history_events(name, alias)
        stack = alias_stack(events)
        if before is not None and (not stack or stack[-1] != before):
            # moved outside nbmlops (MLflow UI, another tool): record it so rollback returns there
            events.append({"action": "external", "version": before, "user": "?", "ts": event["ts"]})
        events.append(event)
        done: list[str] = []
        try:
            self.client.set_registered_model_alias(name, alias, str(after))
            done.append("alias")
            self.client.set_registered_model_tag(name, key, _compact(events))
            done.append("history")
            self.audit.append(action, f"models:/{name}@{alias}", user=self.user, details=details)
        except BaseException as err:
            problems = []
            if "history" in done:
                try:
                    if raw_before is None:
                        self.client.delete_registered_model_tag(name, key)
                    else:
                        self.client.set_registered_model_tag(name, key, raw_before)
                except Exception as undo_err:
                    problems.append(f"history tag not restored: {undo_err}")
            if "alias" in done:
                try:
                    if before is None:
                        self.client.delete_registered_model_alias(name, alias)
                    else:
                        self.client.set_registered_model_alias(name, alias, str(before))
                except Exception as undo_err:
                    problems.append(f"alias not restored: {undo_err}")
            if problems:
                raise StoreError(
                    f"Moving {name}@{alias} failed ({type(err).__name__}: {err}) and could not "
                    f"be fully undone: {'; '.join(problems)}",
                    where=self.settings.resolved_tracking_uri,
                    fix=f"Check @{alias} of {name} in MLflow and set it back to "
                    f"{'nothing' if before is None else f'v{before}'}.",
                ) from err
            raise

    # -- approvals ------------------------------------------------------------------------
    def approve(self, name: str, version: int | str, comment: str = "") -> Approval:
        """Record the user's approval of ``version`` (approver role; audited)."""
        name, version = check_model_name(name), as_version(version)
        self._require(name, "approver", f"approve version {version}")
        self._ensure_store()
        user = self.user
        with self._store(f"approve {name} v{version}"), self._lock(name):
            mv = self._version(name, version)
            tags = dict(mv.tags or {})
            approvals = self._approvals(tags)
            mine = next((a for a in approvals if a["user"] == user), None)
            if mine is not None:
                return Approval(name, version, user, mine["ts"], mine.get("comment", ""), False)
            now = time.time()
            entry: dict[str, Any] = {"user": user, "ts": now, "comment": comment}
            approvals.append(entry)
            self.client.set_model_version_tag(
                name, str(version), "nbmlops.approvals", json.dumps(approvals)
            )
            try:
                self.audit.append(
                    "model.approve",
                    f"models:/{name}/{version}",
                    user=user,
                    details={"comment": comment, "approvals": [a["user"] for a in approvals]},
                )
            except BaseException:
                with contextlib.suppress(Exception):
                    if "nbmlops.approvals" in tags:
                        self.client.set_model_version_tag(
                            name, str(version), "nbmlops.approvals", tags["nbmlops.approvals"]
                        )
                    else:
                        self.client.delete_model_version_tag(
                            name, str(version), "nbmlops.approvals"
                        )
                raise
        return Approval(name, version, user, now, comment, True)

    # -- reading --------------------------------------------------------------------------
    def versions(self, name: str) -> list[VersionInfo]:
        """Every version of ``name``, oldest first, with its aliases and nbmlops facts."""
        name = check_model_name(name)
        self._require(name, "viewer", "list the versions")
        with self._store(f"list the versions of {name}"):
            aliases = self._registered(name).aliases or {}
            out = []
            for mv in sorted(self._all_versions(name), key=lambda v: int(v.version)):
                tags = mv.tags or {}
                v = int(mv.version)
                out.append(
                    VersionInfo(
                        name=name,
                        version=v,
                        aliases=sorted(a for a, holder in aliases.items() if int(holder) == v),
                        run_id=mv.run_id,
                        model_id=tags.get("nbmlops.model_id") or getattr(mv, "model_id", None),
                        created=(mv.creation_timestamp or 0) / 1000,
                        registered_by=tags.get("nbmlops.registered_by", "?"),
                        scan=tags.get("nbmlops.scan", "not scanned"),
                        card_complete=tags.get("nbmlops.card.complete") == "true",
                        approvals=[a["user"] for a in self._approvals(tags)],
                        data_versions=[
                            d.strip()
                            for d in tags.get("nbmlops.data_versions", "").split(",")
                            if d.strip()
                        ],
                    )
                )
            return out

    def aliases(self, name: str) -> dict[str, int]:
        """alias -> version of ``name``."""
        name = check_model_name(name)
        self._require(name, "viewer", "list the aliases")
        with self._store(f"list the aliases of {name}"):
            return {a: int(v) for a, v in sorted((self._registered(name).aliases or {}).items())}

    def history(self, name: str, alias: str = "champion") -> list[AliasEvent]:
        """Every recorded move of ``alias`` of ``name``, oldest first."""
        name, alias = check_model_name(name), check_alias(alias)
        self._require(name, "viewer", "read the alias history")
        with self._store(f"read the history of {name}@{alias}"):
            events = self._history_events(name, alias)
        out = []
        for e in events:
            if e.get("action") == "base":
                continue
            out.append(
                AliasEvent(
                    action=str(e.get("action")),
                    version=e.get("version"),
                    previous=e.get("previous"),
                    user=str(e.get("user", "?")),
                    ts=float(e.get("ts", 0.0)),
                    override=e.get("override"),
                )
            )
        return out

    def roles(self, name: str) -> list[str]:
        """The roles the current user holds on ``name`` (every role when unconfigured)."""
        held = roles_of(self.settings.registry, self.user, check_model_name(name))
        return [r for r in ROLE_NAMES if r in held]


_SOURCE_FIX = (
    "Give a notebook variable a %%track cell bound a fitted model to, runs:/RUN_ID/NAME, "
    "or a logged model id m-... ."
)
