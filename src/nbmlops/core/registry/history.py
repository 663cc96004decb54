"""Reading the registry: a model's versions, its aliases, an alias's history, the user's
roles."""

from __future__ import annotations

from typing import TYPE_CHECKING

from nbmlops.config import ROLE_NAMES
from nbmlops.core.registry.context import approvals_of
from nbmlops.core.registry.names import check_alias, check_model_name
from nbmlops.core.registry.records import AliasEvent, VersionInfo
from nbmlops.core.registry.roles import roles_of

if TYPE_CHECKING:
    from nbmlops.core.registry.context import RegistryContext

__all__ = ["aliases", "history", "metrics_tag", "roles", "versions"]


def metrics_tag(raw: str | None) -> dict[str, float]:
    """The ``nbmlops.metrics`` tag (JSON written at registration); {} when absent or unreadable."""
    import json

    try:
        found = json.loads(raw) if raw else {}
    except ValueError:
        return {}
    if not isinstance(found, dict):
        return {}
    return {
        str(k): float(v)
        for k, v in found.items()
        if isinstance(v, int | float) and not isinstance(v, bool)
    }


def versions(ctx: RegistryContext, name: str) -> list[VersionInfo]:
    """Every version of ``name``, oldest first, with its aliases and nbmlops facts."""
    name = check_model_name(name)
    ctx.require(name, "viewer", "list the versions")
    with ctx.store(f"list the versions of {name}"):
        aliases = ctx.registered(name).aliases or {}
        out = []
        for mv in sorted(ctx.all_versions(name), key=lambda v: int(v.version)):
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
                    approvals=[a["user"] for a in approvals_of(tags)],
                    data_versions=[
                        d.strip()
                        for d in tags.get("nbmlops.data_versions", "").split(",")
                        if d.strip()
                    ],
                    metrics=metrics_tag(tags.get("nbmlops.metrics")),
                )
            )
        return out


def aliases(ctx: RegistryContext, name: str) -> dict[str, int]:
    """alias -> version of ``name``."""
    name = check_model_name(name)
    ctx.require(name, "viewer", "list the aliases")
    with ctx.store(f"list the aliases of {name}"):
        return {a: int(v) for a, v in sorted((ctx.registered(name).aliases or {}).items())}


def history(ctx: RegistryContext, name: str, alias: str = "champion") -> list[AliasEvent]:
    """Every recorded move of ``alias`` of ``name``, oldest first."""
    name, alias = check_model_name(name), check_alias(alias)
    ctx.require(name, "viewer", "read the alias history")
    with ctx.store(f"read the history of {name}@{alias}"):
        events = ctx.history_events(name, alias)
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


def roles(ctx: RegistryContext, name: str) -> list[str]:
    """The roles the current user holds on ``name`` (every role when unconfigured)."""
    held = roles_of(ctx.settings.registry, ctx.user, check_model_name(name))
    return [r for r in ROLE_NAMES if r in held]
