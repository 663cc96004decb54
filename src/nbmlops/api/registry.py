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

__all__ = [
    "AliasEvent",
    "Approval",
    "ModelRegistry",
    "PromotionResult",
    "RegisteredVersion",
    "VersionInfo",
    "alias_role",
    "as_version",
    "check_alias",
    "check_model_name",
    "check_role",
    "model_registry",
]


def model_registry(settings: Settings | None = None) -> ModelRegistry:
    """The project's model registry (the tracking store's), acting as the configured user."""
    return ModelRegistry(settings or project_settings())
