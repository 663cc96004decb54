"""The jupyter_server extension behind JupyterLab's MLOps side panel: REST handlers under
``/nbmlops/api/`` over the project's stores (the project found from the server's root).

Enabled by ``jupyter-config/jupyter_server_config.d/nbmlops.json``, which the wheel installs;
``jupyter server extension list`` shows it as ``nbmlops.server``.
"""

from __future__ import annotations

from typing import Any

__all__ = ["_jupyter_server_extension_points", "_load_jupyter_server_extension"]


def _jupyter_server_extension_points() -> list[dict[str, Any]]:
    return [{"module": "nbmlops.server"}]


def _load_jupyter_server_extension(serverapp: Any) -> None:
    """Register the handlers on the server's web app."""
    from nbmlops.server.handlers import setup_handlers

    setup_handlers(serverapp)
