"""The side panel's registry actions: POST promote, rollback and approve. The core's roles
and gates decide; a refusal is 409 with every reason; moving a protected alias or rolling back
needs ``"confirm": true``, as the registry panel's confirm bar does."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import tornado.web
from jupyter_server.auth.decorator import authorized

from nbmlops.exceptions import (
    ConfigError,
    DatasetNotFoundError,
    ModelNotFound,
    NbmlopsError,
    RegistryBusy,
    StoreError,
    UsageError,
)
from nbmlops.server.base import BadInput, NbmlopsHandler, refusal, registry

if TYPE_CHECKING:
    from nbmlops.config import Settings


class ActionHandler(NbmlopsHandler):
    """POSTs that move aliases or approve: the core's roles and gates decide; a refusal is
    409 with every reason; moving a protected alias or rolling back needs ``confirm``."""

    async def act(self, name: str, decide: Callable[[Settings], dict[str, Any]]) -> None:
        try:
            settings = self.project.settings()
            result = await self.run(decide, settings)
        except (BadInput, ModelNotFound, DatasetNotFoundError, ConfigError) as err:
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
        return registry().check_model_name(name)
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
            version = _checked(lambda: registry().as_version(body["version"]))
            alias = _checked(lambda: registry().check_alias(body.get("alias") or "champion"))
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
            reg = registry().model_registry(settings)
            if registry().alias_role(settings.registry, name, alias) != "developer" and not confirm:
                holder = reg.aliases(name).get(alias)
                now = f"held by v{holder}" if holder is not None else "unset"
                raise NeedsConfirmation(
                    f"Moving {name}@{alias} ({now}) to v{version} changes production",
                    fix='Send the same request with "confirm": true once the user confirmed.',
                )
            done = reg.promote(name, version, alias, override=reason if override else None)
            return _promotion(done)

        await self.act(name, decide)


class RollbackHandler(ActionHandler):
    @tornado.web.authenticated
    @authorized
    async def post(self, name: str) -> None:
        try:
            name = _model(name)
            body = self.body({"alias": str, "confirm": bool})
            alias = _checked(lambda: registry().check_alias(body.get("alias") or "champion"))
        except NbmlopsError as err:
            self.fail(err)
            return
        confirm = bool(body.get("confirm"))

        def decide(settings: Settings) -> dict[str, Any]:
            api = registry()
            reg = api.model_registry(settings)
            needed = api.alias_role(settings.registry, name, alias)
            api.check_role(settings.registry, reg.user, name, needed, f"roll back @{alias}")
            if not confirm:
                holder = reg.aliases(name).get(alias)
                raise NeedsConfirmation(
                    f"Rolling back {name}@{alias} (held by "
                    f"{'nobody' if holder is None else f'v{holder}'}) to the version that "
                    "held it before changes what is served",
                    fix='Send the same request with "confirm": true once the user confirmed.',
                )
            return _promotion(reg.rollback(name, alias))

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
            version = _checked(lambda: registry().as_version(body["version"]))
            comment = body.get("reason") or ""
            if len(comment) > 2000:
                raise BadInput("'reason' is longer than 2000 characters", fix="Shorten it.")
        except NbmlopsError as err:
            self.fail(err)
            return

        def decide(settings: Settings) -> dict[str, Any]:
            a = registry().model_registry(settings).approve(name, version, comment)
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
