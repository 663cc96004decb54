"""REST handlers of the side panel under ``/nbmlops/api/``: each GET is an authenticated
APIHandler that validates its input, delegates to nbmlops.api and answers JSON; the registry
actions are in :mod:`nbmlops.server.actions`."""

from __future__ import annotations

import logging
import threading
from pathlib import PurePosixPath
from typing import Any

import tornado.web
from jupyter_server.auth.decorator import authorized
from jupyter_server.utils import url_path_join

from nbmlops.exceptions import NbmlopsError
from nbmlops.server.actions import ApproveHandler, PromoteHandler, RollbackHandler
from nbmlops.server.base import (
    API,
    MAX_LIMIT,
    BadInput,
    NbmlopsHandler,
    model_views,
    node_arg,
    notebook_arg,
    project_for,
    registry,
    run_id_arg,
    views,
)

log = logging.getLogger(__name__)


# --- reading ------------------------------------------------------------------------------------
class ExperimentsHandler(NbmlopsHandler):
    @tornado.web.authenticated
    @authorized
    async def get(self) -> None:
        await self.answer(lambda s: {"experiments": views().experiments_view(s)})


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
            lambda s: views().notebook_runs(
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
        await self.answer(
            lambda s: {"run": views().run_view(s, run_id, root=root, artifact_url=url)}
        )


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
            path = views().check_artifact_path(path)
            settings = self.project.settings()
            data = await self.run(views().run_artifact, settings, run_id, path)
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
        await self.answer(lambda s: {"models": model_views().models_view(s)})


class LineageHandler(NbmlopsHandler):
    @tornado.web.authenticated
    @authorized
    async def get(self, node: str) -> None:
        try:
            node = node_arg(node)
        except NbmlopsError as err:
            self.fail(err)
            return
        await self.answer(lambda s: model_views().lineage_view(s, node))


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
        await self.answer(views().journal_view)


def _warm_up() -> None:
    """Import what the first request needs (nbmlops.api, MLflow's client and store) in the
    background, so the panel's first listing does not pay seconds of imports."""
    try:
        views()
        model_views()
        registry()
        import mlflow.store.tracking.sqlalchemy_store  # noqa: F401
    except Exception:  # the request that needs it will report the problem
        log.debug("nbmlops warm-up failed", exc_info=True)


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
    threading.Thread(target=_warm_up, name="nbmlops-warm-up", daemon=True).start()
    serverapp.log.info("nbmlops: side panel API at %s (project %s)", base, project.folder)
