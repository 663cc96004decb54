"""REST handlers of the side panel under ``/nbmlops/api/``: each is an authenticated
APIHandler that validates its input (400 with the reason and the fix), calls nbmlops.api in a
worker thread (MLflow's client blocks) and answers JSON. Errors keep nbmlops's what/where/fix.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

import tornado.web
from jupyter_server.auth.decorator import authorized
from jupyter_server.base.handlers import APIHandler
from jupyter_server.utils import url_path_join

from nbmlops.api import views
from nbmlops.api.registry import alias_role, as_version, check_alias, check_model_name
from nbmlops.config import Settings, find_project_dir, load_settings
from nbmlops.exceptions import (
    AccessDenied,
    ConcurrentChange,
    ConfigError,
    DatasetNotFoundError,
    GateRefused,
    ModelNotFound,
    NbmlopsError,
    RegistryBusy,
    StoreError,
    UnsafeModelError,
    UsageError,
)

log = logging.getLogger(__name__)

API = "nbmlops/api"
RESOURCE = "nbmlops"  # what jupyter_server's authorizer is asked about
MAX_LIMIT = 1000


@dataclass(frozen=True)
class Project:
    """Where notebooks are (the server's root) and the nbmlops project they track into."""

    root: Path
    folder: Path

    def settings(self) -> Settings:
        """Read per request, so an edited nbmlops.yaml applies without a restart."""
        return load_settings(self.folder)


def project_for(root: str | Path) -> Project:
    """The project of a server rooted at ``root``: NBMLOPS_PROJECT_DIR, else the folder that
    kernels started there use (nbmlops.yaml or .nbmlops at or above it, else ``root``)."""
    import os

    base = Path(root).expanduser().resolve()
    chosen = os.environ.get("NBMLOPS_PROJECT_DIR")
    folder = Path(chosen).expanduser().resolve() if chosen else find_project_dir(base)
    return Project(base, folder)


class BadInput(UsageError):
    """A request's parameter or body is invalid (400)."""


# --- errors as JSON -----------------------------------------------------------------------------
def error_body(err: BaseException) -> dict[str, Any]:
    if isinstance(err, NbmlopsError):
        return {"error": err.what, "where": err.where, "fix": err.fix, "kind": type(err).__name__}
    return {"error": f"{type(err).__name__}: {err}", "where": None, "fix": None, "kind": "error"}


def status_of(err: NbmlopsError) -> int:
    if isinstance(err, (ModelNotFound, DatasetNotFoundError)):
        return 404
    if isinstance(err, AccessDenied):  # RoleDenied too
        return 403
    if isinstance(err, (GateRefused, ConcurrentChange, RegistryBusy, UnsafeModelError)):
        return 409
    if isinstance(err, (StoreError, ConfigError)):
        return 503
    return 400


def refusal(err: NbmlopsError, *, confirm_required: bool = False) -> dict[str, Any]:
    """A registry action the core refused: every reason, every gate's verdict."""
    gates = [g.to_dict() for g in err.results] if isinstance(err, GateRefused) else []
    if isinstance(err, GateRefused):
        reasons = [f"{g.gate}: {g.reason}" for g in err.failed]
    else:
        reasons = [err.what]
    return {
        "refused": True,
        "confirm_required": confirm_required,
        "reasons": reasons,
        "gates": gates,
        **error_body(err),
    }


class NbmlopsHandler(APIHandler):
    """Shared plumbing: the project, JSON replies, errors with what/where/fix."""

    auth_resource = RESOURCE

    @property
    def project(self) -> Project:
        return self.settings["nbmlops_project"]

    def reply(self, status: int, body: dict[str, Any]) -> None:
        self.set_status(status)
        self.set_header("Content-Type", "application/json; charset=utf-8")
        self.finish(json.dumps(body, default=str))

    def fail(self, err: BaseException) -> None:
        if isinstance(err, NbmlopsError):
            self.reply(status_of(err), error_body(err))
        else:
            log.exception("nbmlops: %s %s failed", self.request.method, self.request.path)
            self.reply(500, error_body(err))

    async def run(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """``fn`` in a worker thread: MLflow's client blocks, the server must not."""
        return await asyncio.to_thread(fn, *args, **kwargs)

    async def answer(self, fn: Callable[[Settings], dict[str, Any]]) -> None:
        """Reply ``fn(settings)`` as JSON, or the error it raised."""
        try:
            settings = self.project.settings()
            body = await self.run(fn, settings)
        except Exception as err:
            self.fail(err)
            return
        self.reply(200, body)

    # --- input ----------------------------------------------------------------------------------
    def text_arg(self, name: str, limit: int = 1000) -> str | None:
        value = self.get_query_argument(name, None)
        if value is None:
            return None
        if len(value) > limit or any(ord(ch) < 32 for ch in value):
            raise BadInput(
                f"Query parameter {name!r} is invalid: at most {limit} printable characters",
                fix=f"Send a shorter {name}.",
            )
        return value

    def body(self, allowed: dict[str, type | tuple[type, ...]]) -> dict[str, Any]:
        """The JSON object of a POST, with only ``allowed`` keys of the given types."""
        try:
            data = json.loads(self.request.body or b"{}")
        except ValueError as err:
            raise BadInput(
                f"The request body is not JSON ({err})",
                fix='Send a JSON object, e.g. {"version": 2, "alias": "champion"}.',
            ) from None
        if not isinstance(data, dict):
            raise BadInput(
                f"The request body must be a JSON object, not {type(data).__name__}",
                fix='Send a JSON object, e.g. {"version": 2, "alias": "champion"}.',
            )
        unknown = sorted(set(data) - set(allowed))
        if unknown:
            raise BadInput(
                f"Unknown field {', '.join(map(repr, unknown))} in the request body",
                fix=f"Send only {', '.join(allowed)}.",
            )
        for key, kind in allowed.items():
            value = data.get(key)
            if value is None:
                continue
            if isinstance(value, bool) and kind is not bool:
                kind_ok = False
            else:
                kind_ok = isinstance(value, kind)
            if not kind_ok:
                names = (
                    kind.__name__
                    if isinstance(kind, type)
                    else " or ".join(k.__name__ for k in kind)
                )
                raise BadInput(
                    f"Field {key!r} must be {names}, got {type(value).__name__} {value!r}",
                    fix=f"Send {key!r} as a JSON {names}.",
                )
        return data


def run_id_arg(run_id: str) -> str:
    if not views.RUN_ID.fullmatch(run_id):
        raise BadInput(
            f"Invalid run id {run_id!r}",
            fix="A run id is MLflow's 32 lowercase hex characters (the panel lists them).",
        )
    return run_id


def notebook_arg(project: Project, notebook: str) -> Path:
    """The absolute path kernels record for ``notebook`` (relative to the server's root);
    a path that could leave the root is refused."""
    bad = (
        not notebook.strip()
        or notebook.startswith(("/", "~"))
        or "\\" in notebook
        or re.match(r"^[A-Za-z]:", notebook) is not None
        or any(part == ".." for part in PurePosixPath(notebook).parts)
    )
    path = (project.root / notebook).resolve() if not bad else None
    if path is None or not path.is_relative_to(project.root):
        raise BadInput(
            f"Invalid notebook path {notebook!r}: it must stay inside the server's root",
            fix="Give the notebook's path relative to the folder Jupyter serves, as the file "
            "browser shows it (e.g. experiments/train.ipynb).",
        )
    return path


_NODE = re.compile(
    r"models:/[A-Za-z0-9][A-Za-z0-9._-]{0,127}/[0-9]{1,9}"
    r"|runs:/[0-9a-f]{32}/[A-Za-z0-9_.-]{1,255}"
    r"|(?:data|run|model):[A-Za-z0-9_./-]{1,300}"
    r"|[A-Za-z0-9][A-Za-z0-9_.-]{0,255}(?:@[A-Za-z0-9_-]{1,64})?"
)


def node_arg(node: str) -> str:
    if (
        not _NODE.fullmatch(node)
        or any(p in ("", ".", "..") for p in node.split("/")[1:])
        or (".." in node)
    ):
        raise BadInput(
            f"Invalid lineage node {node!r}",
            fix="Ask for a run id (or its first 6+ characters), NAME@alias, "
            "models:/NAME/VERSION, a data version NAME@k or runs:/RUN_ID/NAME.",
        )
    return node


# --- reading ------------------------------------------------------------------------------------
class ExperimentsHandler(NbmlopsHandler):
    @tornado.web.authenticated
    @authorized
    async def get(self) -> None:
        await self.answer(lambda s: {"experiments": views.experiments_view(s)})


class RunsHandler(NbmlopsHandler):
    @tornado.web.authenticated
    @authorized
    async def get(self) -> None:
        try:
            notebook = self.text_arg("notebook", 4096)
            path = notebook_arg(self.project, notebook) if notebook is not None else None
            experiment = self.text_arg("experiment", 500)
            text = self.text_arg("filter", 1000) or ""
            raw_limit = self.text_arg("limit", 10) or "100"
            if not raw_limit.isdigit() or not 1 <= int(raw_limit) <= MAX_LIMIT:
                raise BadInput(
                    f"Query parameter 'limit' must be a whole number from 1 to {MAX_LIMIT}, "
                    f"got {raw_limit!r}",
                    fix="Send e.g. limit=100.",
                )
        except NbmlopsError as err:
            self.fail(err)
            return
        root = self.project.root
        await self.answer(
            lambda s: views.notebook_runs(
                s,
                path,
                experiment=experiment or None,
                limit=int(raw_limit),
                text=text,
                root=root,
            )
        )


class RunHandler(NbmlopsHandler):
    @tornado.web.authenticated
    @authorized
    async def get(self, run_id: str) -> None:
        try:
            run_id = run_id_arg(run_id)
        except NbmlopsError as err:
            self.fail(err)
            return
        url = url_path_join(self.base_url, API, "runs", run_id, "artifacts") + "/"
        root = self.project.root
        await self.answer(lambda s: {"run": views.run_view(s, run_id, root=root, artifact_url=url)})


_TEXT_TYPES = {".txt", ".py", ".json", ".csv", ".md", ".log", ".yaml", ".yml"}
_IMAGE_TYPES = {
    ".png": "image/png",
    ".jpg": "image/jpeg",
    ".jpeg": "image/jpeg",
    ".gif": "image/gif",
    ".svg": "image/svg+xml",
}


class ArtifactHandler(NbmlopsHandler):
    """One artifact file of a run: images as themselves, text as plain text, anything else
    as a download; never as a page that could run script on Jupyter's origin."""

    @tornado.web.authenticated
    @authorized
    async def get(self, run_id: str, path: str) -> None:
        try:
            run_id = run_id_arg(run_id)
            path = views.check_artifact_path(path)
            settings = self.project.settings()
            data = await self.run(views.run_artifact, settings, run_id, path)
        except Exception as err:
            self.fail(err)
            return
        suffix = PurePosixPath(path).suffix.lower()
        if suffix in _IMAGE_TYPES:
            kind = _IMAGE_TYPES[suffix]
        elif suffix in _TEXT_TYPES:
            kind = "text/plain; charset=utf-8"
        else:
            kind = "application/octet-stream"
            self.set_header(
                "Content-Disposition", f'attachment; filename="{PurePosixPath(path).name}"'
            )
        self.set_header("X-Content-Type-Options", "nosniff")
        self.set_header("Content-Security-Policy", "default-src 'none'; sandbox")
        self.finish(data, set_content_type=kind)


class ModelsHandler(NbmlopsHandler):
    @tornado.web.authenticated
    @authorized
    async def get(self) -> None:
        await self.answer(lambda s: {"models": views.models_view(s)})


class LineageHandler(NbmlopsHandler):
    @tornado.web.authenticated
    @authorized
    async def get(self, node: str) -> None:
        try:
            node = node_arg(node)
        except NbmlopsError as err:
            self.fail(err)
            return
        await self.answer(lambda s: views.lineage_view(s, node))


class AlertsHandler(NbmlopsHandler):
    @tornado.web.authenticated
    @authorized
    async def get(self) -> None:
        # nbmlops has no monitoring yet: say so rather than show an empty "all clear"
        self.reply(
            200,
            {
                "alerts": [],
                "monitoring": "not configured",
                "note": "nbmlops does not monitor deployed models yet; alerts appear here "
                "once it does.",
            },
        )


class JournalHandler(NbmlopsHandler):
    @tornado.web.authenticated
    @authorized
    async def get(self) -> None:
        await self.answer(views.journal_view)


# --- registry actions ---------------------------------------------------------------------------
class ActionHandler(NbmlopsHandler):
    """POSTs that move aliases or approve: the core's roles and gates decide; a refusal is
    409 with every reason; moving a protected alias or rolling back needs ``confirm``."""

    async def act(self, name: str, decide: Callable[[Settings], dict[str, Any]]) -> None:
        try:
            settings = self.project.settings()
            result = await self.run(decide, settings)
        except (BadInput, ModelNotFound, DatasetNotFoundError) as err:
            self.fail(err)
            return
        except NeedsConfirmation as err:
            self.reply(409, refusal(err, confirm_required=True))
            return
        except StoreError as err:
            if isinstance(err, RegistryBusy):
                self.reply(409, refusal(err))
            else:
                self.fail(err)
            return
        except NbmlopsError as err:
            self.reply(409, refusal(err))
            return
        except Exception as err:
            self.fail(err)
            return
        self.reply(200, {"result": result})


class NeedsConfirmation(NbmlopsError):
    """A production-changing action was sent without ``confirm: true``."""


def _model(name: str) -> str:
    try:
        return check_model_name(name)
    except UsageError as err:
        raise BadInput(err.what, fix=err.fix) from None


def _checked(fn: Callable[[], Any]) -> Any:
    """Input checks of the core (names, versions, aliases) answer 400, not a refusal."""
    try:
        return fn()
    except UsageError as err:
        raise BadInput(err.what, where=err.where, fix=err.fix) from None


def _promotion(result: Any) -> dict[str, Any]:
    return {
        "name": result.name,
        "alias": result.alias,
        "before": result.before,
        "after": result.after,
        "action": result.action,
        "changed": result.changed,
        "user": result.user,
        "override": result.override,
        "gates": [g.to_dict() for g in result.gates],
        "summary": result.summary(),
    }


class PromoteHandler(ActionHandler):
    @tornado.web.authenticated
    @authorized
    async def post(self, name: str) -> None:
        try:
            name = _model(name)
            body = self.body(
                {
                    "version": (int, str),
                    "alias": str,
                    "confirm": bool,
                    "reason": str,
                    "override": bool,
                }
            )
            if body.get("version") is None:
                raise BadInput("Field 'version' is missing", fix='Send {"version": 2, ...}.')
            version = _checked(lambda: as_version(body["version"]))
            alias = _checked(lambda: check_alias(body.get("alias") or "champion"))
            reason = (body.get("reason") or "").strip()
            override = bool(body.get("override"))
            if override and not reason:
                raise BadInput(
                    "An override needs a reason",
                    fix='Send "reason": "why the failed gates may be ignored" with "override".',
                )
            if reason and not override:
                raise BadInput(
                    "'reason' is the reason to override failed gates, and 'override' is not set",
                    fix='Send "override": true with it (admins only), or leave "reason" out.',
                )
        except NbmlopsError as err:
            self.fail(err)
            return
        confirm = bool(body.get("confirm"))

        def decide(settings: Settings) -> dict[str, Any]:
            from nbmlops.api.registry import model_registry

            registry = model_registry(settings)
            if alias_role(settings.registry, name, alias) != "developer" and not confirm:
                holder = registry.aliases(name).get(alias)
                now = f"held by v{holder}" if holder is not None else "unset"
                raise NeedsConfirmation(
                    f"Moving {name}@{alias} ({now}) to v{version} changes production",
                    fix='Send the same request with "confirm": true once the user confirmed.',
                )
            done = registry.promote(name, version, alias, override=reason if override else None)
            return _promotion(done)

        await self.act(name, decide)


class RollbackHandler(ActionHandler):
    @tornado.web.authenticated
    @authorized
    async def post(self, name: str) -> None:
        try:
            name = _model(name)
            body = self.body({"alias": str, "confirm": bool})
            alias = _checked(lambda: check_alias(body.get("alias") or "champion"))
        except NbmlopsError as err:
            self.fail(err)
            return
        confirm = bool(body.get("confirm"))

        def decide(settings: Settings) -> dict[str, Any]:
            from nbmlops.api.registry import check_role, model_registry

            registry = model_registry(settings)
            needed = alias_role(settings.registry, name, alias)
            check_role(settings.registry, registry.user, name, needed, f"roll back @{alias}")
            if not confirm:
                holder = registry.aliases(name).get(alias)
                raise NeedsConfirmation(
                    f"Rolling back {name}@{alias} (held by "
                    f"{'nobody' if holder is None else f'v{holder}'}) to the version that "
                    "held it before changes what is served",
                    fix='Send the same request with "confirm": true once the user confirmed.',
                )
            return _promotion(registry.rollback(name, alias))

        await self.act(name, decide)


class ApproveHandler(ActionHandler):
    @tornado.web.authenticated
    @authorized
    async def post(self, name: str) -> None:
        try:
            name = _model(name)
            body = self.body({"version": (int, str), "reason": str})
            if body.get("version") is None:
                raise BadInput("Field 'version' is missing", fix='Send {"version": 2, ...}.')
            version = _checked(lambda: as_version(body["version"]))
            comment = body.get("reason") or ""
            if len(comment) > 2000:
                raise BadInput("'reason' is longer than 2000 characters", fix="Shorten it.")
        except NbmlopsError as err:
            self.fail(err)
            return

        def decide(settings: Settings) -> dict[str, Any]:
            from nbmlops.api.registry import model_registry

            a = model_registry(settings).approve(name, version, comment)
            return {
                "name": a.name,
                "version": a.version,
                "user": a.user,
                "ts": a.ts,
                "comment": a.comment,
                "new": a.new,
                "summary": f"{a.name} v{a.version} approved by {a.user}"
                + ("" if a.new else " (already approved before)"),
            }

        await self.act(name, decide)


def setup_handlers(serverapp: Any) -> None:
    """Add the handlers under ``<base_url>nbmlops/api/`` and find the project."""
    web_app = serverapp.web_app
    root = getattr(serverapp.contents_manager, "root_dir", None) or serverapp.root_dir
    project = project_for(root)
    web_app.settings["nbmlops_project"] = project
    base = url_path_join(web_app.settings["base_url"], API)
    routes: list[tuple[str, type]] = [
        ("experiments", ExperimentsHandler),
        ("runs", RunsHandler),
        (r"runs/([^/]+)", RunHandler),
        (r"runs/([^/]+)/artifacts/(.*)", ArtifactHandler),
        ("models", ModelsHandler),
        (r"models/([^/]+)/promote", PromoteHandler),
        (r"models/([^/]+)/rollback", RollbackHandler),
        (r"models/([^/]+)/approve", ApproveHandler),
        (r"lineage/(.*)", LineageHandler),
        ("alerts", AlertsHandler),
        ("journal", JournalHandler),
    ]
    web_app.add_handlers(".*$", [(url_path_join(base, path), cls) for path, cls in routes])
    serverapp.log.info("nbmlops: side panel API at %s (project %s)", base, project.folder)
