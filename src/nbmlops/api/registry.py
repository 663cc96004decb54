"""The model registry: register a tracked model (scanned first), its card, gates, promote to an
alias, roll back, approve, versions and alias history. Every action checks the roles in
nbmlops.yaml and lands in the audit log; a refusal changes nothing."""

from __future__ import annotations

from nbmlops.api.tracking import project_settings
from nbmlops.config import Settings
from nbmlops.core.registry.models import ModelRegistry
from nbmlops.core.registry.names import as_version, check_alias, check_model_name
from nbmlops.core.registry.records import (
    AliasEvent,
    Approval,
    PromotionResult,
    RegisteredVersion,
    VersionInfo,
)
from nbmlops.core.registry.roles import alias_role, check_role
from nbmlops.core.registry.sqlite_read import read_history, read_versions

__all__ = [
    "AliasEvent",
    "Approval",
    "ModelRegistry",
    "PromotionResult",
    "RegisteredVersion",
    "VersionInfo",
    "alias_history",
    "alias_role",
    "as_version",
    "check_alias",
    "check_model_name",
    "check_role",
    "model_registry",
    "model_versions",
]


def model_registry(settings: Settings | None = None) -> ModelRegistry:
    """The project's model registry (the tracking store's), acting as the configured user."""
    return ModelRegistry(settings or project_settings())


def model_versions(name: str, settings: Settings | None = None) -> list[VersionInfo]:
    """Every version of ``name``, oldest first (viewer role). A local SQLite store is read
    directly, without importing MLflow; any other store, or a miss, asks MLflow."""
    s = settings or project_settings()
    name = check_model_name(name)
    check_role(s.registry, s.resolved_user, name, "viewer", "list the versions")
    fast = read_versions(s.resolved_tracking_uri, name)
    return fast if fast is not None else model_registry(s).versions(name)


def alias_history(
    name: str, alias: str = "champion", settings: Settings | None = None
) -> list[AliasEvent]:
    """Every recorded move of ``alias`` of ``name``, oldest first (viewer role); read like
    :func:`model_versions`."""
    s = settings or project_settings()
    name, alias = check_model_name(name), check_alias(alias)
    check_role(s.registry, s.resolved_user, name, "viewer", "read the alias history")
    fast = read_history(s.resolved_tracking_uri, name, alias)
    return fast if fast is not None else model_registry(s).history(name, alias)
