"""The serving gateway: routed, hot-swappable MLflow model versions behind Starlette.

``app`` (the gateway and its routes), ``router`` (weighted, sticky routes, alias following,
start-up from the cache), ``loader`` (fetch, safety checks, loading), ``registry`` (MLflow's
registry, asked from a helper process), ``cache`` (checked copies and the registry's last
answers), ``schema`` (request bodies against the signature), ``predlog`` (the prediction
log), ``metrics`` (Prometheus), ``shadow`` (mirrored traffic), ``server`` (uvicorn on
loopback) and ``export`` (KServe and Docker). Names are imported lazily: ``import
nbmlops.core.serving`` pulls in nothing heavy.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "Gateway": "app",
    "GatewayConfig": "app",
    "create_app": "app",
    "GatewayServer": "server",
    "ModelRef": "loader",
    "ModelLoader": "loader",
    "RegistryWorker": "registry",
    "ServingCache": "cache",
    "ModelRouter": "router",
    "PredictionLog": "predlog",
    "read_prediction_log": "predlog",
    "export_deployment": "export",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
