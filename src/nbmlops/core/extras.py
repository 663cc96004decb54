"""Optional parts of nbmlops and the packages each needs. ``pip install nbmlops`` gives
tracking, data versions, lineage, the registry and the panels; the rest comes with an extra,
and asking for it without one is a clear error naming the extra to install."""

from __future__ import annotations

import importlib.util

from nbmlops.exceptions import MissingDependencyError

# extra -> (what it enables, the modules it installs); keep in step with pyproject.toml
EXTRAS: dict[str, tuple[str, tuple[str, ...]]] = {
    "pipelines": ("notebooks as pipeline steps", ("papermill", "nbclient")),
    "sweep": ("hyperparameter sweeps", ("optuna",)),
    "dask": ("pipelines on a Dask cluster", ("distributed",)),
    "serve": ("the serving gateway", ("starlette", "uvicorn", "prometheus_client")),
    "monitor": ("mergeable profiles of live traffic", ("datasketches",)),
    "charts": ("interactive charts in the panels", ("plotly", "anywidget")),
}


def missing_modules(extra: str) -> list[str]:
    """The modules of ``extra`` that cannot be imported here."""
    return [m for m in EXTRAS[extra][1] if importlib.util.find_spec(m) is None]


def require_extra(*extras: str) -> None:
    """Raise :class:`MissingDependencyError` naming the extra when one of its packages is
    missing; checked before anything of it is imported."""
    for extra in extras:
        missing = missing_modules(extra)
        if missing:
            what = EXTRAS[extra][0]
            raise MissingDependencyError(
                f"The {extra!r} extra of nbmlops ({what}) is not installed: "
                f"{', '.join(missing)} cannot be imported",
                fix=f"Install it: pip install 'nbmlops[{extra}]'.",
            )
