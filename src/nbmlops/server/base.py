"""What every side-panel handler shares: the project (found from the server's root), input
checks that answer 400 with the reason and the fix, errors as JSON with nbmlops's
what/where/fix, and calls into nbmlops.api on a worker thread (MLflow's client blocks)."""

from __future__ import annotations

import asyncio
import json
import logging
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any

from jupyter_server.base.handlers import APIHandler

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

if TYPE_CHECKING:
    from types import ModuleType

    from nbmlops.config import Settings

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
        from nbmlops.config import load_settings

        return load_settings(self.folder)


def project_for(root: str | Path) -> Project:
    """The project of a server rooted at ``root``: NBMLOPS_PROJECT_DIR, else the folder that
    kernels started there use (nbmlops.yaml or .nbmlops at or above it, else ``root``)."""
    import os

    from nbmlops.config import find_project_dir

    base = Path(root).expanduser().resolve()
    chosen = os.environ.get("NBMLOPS_PROJECT_DIR")
    folder = Path(chosen).expanduser().resolve() if chosen else find_project_dir(base)
    return Project(base, folder)


def views() -> ModuleType:
    """nbmlops.api.views, imported on first use: loading the extension stays light (a
    thread started at load imports it ahead of the first request)."""
    from nbmlops.api import views as module

    return module


def model_views() -> ModuleType:
    from nbmlops.api import model_views as module

    return module


def registry() -> ModuleType:
    from nbmlops.api import registry as module

    return module


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
    if not views().RUN_ID.fullmatch(run_id):
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
