"""Serving registered models: the gateway (A/B, canary and shadow routing, hot swap when an
alias moves, a prediction log) and deployment export (KServe manifests, a Docker folder).

Names load on first use: ``nbmlops serve`` binds its port, starts the registry helper and
imports the model libraries before it imports the web stack, and this module keeps that order
(each name below imports only the core module that holds it).
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from nbmlops.exceptions import UsageError

if TYPE_CHECKING:
    from nbmlops.core.serving.app import Gateway, GatewayConfig
    from nbmlops.core.serving.export import ExportResult, export_deployment
    from nbmlops.core.serving.loader import (
        parse_weighted,
        preload_model_libraries,
        start_registry_helper,
    )
    from nbmlops.core.serving.registry import ModelRef
    from nbmlops.core.serving.server import GatewayServer, bind_loopback

__all__ = [
    "CANARY_ALIAS",
    "ExportResult",
    "Gateway",
    "GatewayConfig",
    "GatewayServer",
    "ModelRef",
    "bind_loopback",
    "export_deployment",
    "kserve_canary",
    "parse_weighted",
    "preload_model_libraries",
    "start_registry_helper",
]

CANARY_ALIAS = "challenger"
MAX_CANARY_PERCENT = 50  # past half the traffic it is a rollout, not a canary: promote instead

_HOMES = {
    "Gateway": "nbmlops.core.serving.app",
    "GatewayConfig": "nbmlops.core.serving.app",
    "ExportResult": "nbmlops.core.serving.export",
    "export_deployment": "nbmlops.core.serving.export",
    "parse_weighted": "nbmlops.core.serving.loader",
    "preload_model_libraries": "nbmlops.core.serving.loader",
    "start_registry_helper": "nbmlops.core.serving.loader",
    "ModelRef": "nbmlops.core.serving.registry",
    "GatewayServer": "nbmlops.core.serving.server",
    "bind_loopback": "nbmlops.core.serving.server",
}


_NEEDS_SERVE = {"Gateway", "GatewayConfig", "GatewayServer"}  # the web stack (nbmlops[serve])


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module 'nbmlops.api.serving' has no attribute {name!r}")
    if name in _NEEDS_SERVE:
        from nbmlops.core.extras import require_extra

        require_extra("serve")
    return getattr(importlib.import_module(home), name)


def kserve_canary(name: str, alias: str, aliases: Mapping[str, int], percent: int) -> str | None:
    """The ``--canary`` spec for deploying ``name@alias`` with ``percent`` % of the traffic to
    ``@challenger`` (None for 0 %). The canary must be set and differ from what is deployed."""
    if not isinstance(percent, int) or isinstance(percent, bool):
        raise UsageError(f"A canary share is a whole percent, got {percent!r}")
    if percent == 0:
        return None
    if not 0 < percent <= MAX_CANARY_PERCENT:
        raise UsageError(
            f"A canary share must be 1 to {MAX_CANARY_PERCENT} %, got {percent}",
            fix="Pick a smaller share, or promote @challenger to take all the traffic.",
        )
    if alias == CANARY_ALIAS or CANARY_ALIAS not in aliases:
        raise UsageError(
            f"A {percent}% canary needs @{CANARY_ALIAS} set and a different alias to deploy",
            fix=f"Promote a version to @{CANARY_ALIAS}, or set the share to 0.",
        )
    if aliases.get(alias) == aliases[CANARY_ALIAS]:
        raise UsageError(
            f"@{CANARY_ALIAS} and @{alias} of {name} are the same version "
            f"(v{aliases[alias]}): a canary of it would change nothing",
            fix=f"Promote the new version to @{CANARY_ALIAS} first.",
        )
    return f"{name}@{CANARY_ALIAS}:{percent}"
