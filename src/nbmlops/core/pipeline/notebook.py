"""Reading notebooks cheaply, their code digest, and their kernel.

The cache check of a pipeline with nothing to run reads every step's notebook, so this reads
the JSON directly: importing nbformat costs about a second here (jsonschema's format checkers).
"""

from __future__ import annotations

import json
import os
from functools import lru_cache
from pathlib import Path
from typing import Any

import xxhash

from nbmlops.exceptions import PipelineError

INJECTED_TAG = "injected-parameters"  # the cell papermill adds; not part of the code digest


def read_json(path: str | Path) -> dict[str, Any]:
    p = Path(path)
    if not p.is_file():
        raise PipelineError(
            f"Notebook {str(path)!r} does not exist" if not p.exists() else f"{path} is a folder",
            where=str(p.resolve().parent),
            fix="Check the path (in a pipeline, paths are relative to the pipeline file).",
        )
    if p.suffix != ".ipynb":
        raise PipelineError(f"{str(path)!r} is not a notebook (a .ipynb file)")
    try:
        nb = json.loads(p.read_bytes())
    except (ValueError, OSError) as err:
        raise PipelineError(
            f"Notebook {str(path)!r} cannot be read: {err}",
            fix="Open and save it in JupyterLab, or restore it from version control.",
        ) from err
    if not isinstance(nb, dict) or not isinstance(nb.get("cells"), list):
        raise PipelineError(f"{str(path)!r} is not a Jupyter notebook (no cells)")
    for cell in nb["cells"]:
        if isinstance(cell.get("source"), list):
            cell["source"] = "".join(cell["source"])
        cell.setdefault("metadata", {})
    return nb


def cell_tags(cell: dict[str, Any]) -> list[str]:
    return list(cell.get("metadata", {}).get("tags") or [])


def code_digest(nb: dict[str, Any]) -> str:
    """xxh3_128 of the code cells' sources (not outputs, not papermill's injected cell)."""
    h = xxhash.xxh3_128()
    for cell in nb["cells"]:
        if cell.get("cell_type") != "code" or INJECTED_TAG in cell_tags(cell):
            continue
        src = cell.get("source", "").encode()
        h.update(len(src).to_bytes(8, "little"))
        h.update(src)
    return h.hexdigest()


def kernel_name_of(nb: dict[str, Any]) -> str:
    spec = nb.get("metadata", {}).get("kernelspec") or {}
    return str(spec.get("name") or "python3")


@lru_cache(maxsize=32)
def kernel_spec(name: str) -> dict[str, Any]:
    """The kernel.json of ``name``; a clear error naming the installed kernels otherwise."""
    from jupyter_core.paths import jupyter_path

    found: dict[str, Path] = {}
    for root in jupyter_path("kernels"):
        try:
            entries = os.listdir(root)
        except OSError:
            continue
        for entry in entries:
            spec = Path(root) / entry / "kernel.json"
            if spec.is_file():
                found.setdefault(entry.lower(), spec)
    path = found.get(name.lower())
    if path is None:
        raise PipelineError(
            f"No Jupyter kernel named {name!r} is installed; installed: "
            f"{', '.join(sorted(found)) or '(none)'}",
            fix="Install it (e.g. `python -m ipykernel install --user --name NAME`) or pass "
            "--kernel with an installed one.",
        )
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise PipelineError(f"Kernel spec {path} cannot be read: {err}") from err
