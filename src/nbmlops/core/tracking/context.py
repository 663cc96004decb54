"""Where a run came from: notebook path and cell, git state, Python and package versions."""

from __future__ import annotations

import functools
import json
import os
import platform
import subprocess
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nbmlops.core.tracking.redact import Redactor

_MAX_NOTEBOOKS_SCANNED = 50


@dataclass
class CellOrigin:
    """The notebook (or script) a tracked block lives in, and where in it."""

    source_name: str | None = None  # notebook or script path
    source_type: str = "NOTEBOOK"
    cell_id: str | None = None
    cell_index: int | None = None
    execution_count: int | None = None

    @property
    def experiment_default(self) -> str:
        return Path(self.source_name).stem if self.source_name else "Default"


def notebook_from_environment(user_ns: dict[str, Any] | None = None) -> str | None:
    """The notebook path the kernel was told about, if any.

    NBMLOPS_NOTEBOOK (set by nbmlops's runners), ``__session__`` (ipykernel sets it from
    JupyterLab's JPY_SESSION_NAME) and VS Code's ``__vsc_ipynb_file__``.
    """
    candidates = [os.environ.get("NBMLOPS_NOTEBOOK")]
    if user_ns is not None:
        candidates += [user_ns.get("__vsc_ipynb_file__"), user_ns.get("__session__")]
    candidates.append(os.environ.get("JPY_SESSION_NAME"))
    for cand in candidates:
        if isinstance(cand, str) and cand.endswith(".ipynb"):
            return str(Path(cand).resolve()) if Path(cand).exists() else cand
    return notebook_from_parent_process()


def notebook_from_parent_process() -> str | None:
    """The input notebook of a batch runner (papermill, jupyter execute/nbconvert) that started
    this kernel: the first ``.ipynb`` argument of the parent process, resolved in its folder.

    Papermill tells the kernel nothing about the notebook it runs; its command line does.
    """
    try:
        import psutil

        parent = psutil.Process(os.getppid())
        args = parent.cmdline()
        cwd = Path(parent.cwd())
    except Exception:
        return None
    if not any(
        ("papermill" in a or "jupyter" in a or "nbconvert" in a or "nbclient" in a)
        for a in args[:3]
    ):
        return None
    for arg in args[1:]:
        if arg.endswith(".ipynb") and not arg.startswith("-"):
            path = Path(arg) if Path(arg).is_absolute() else cwd / arg
            if path.exists():
                return str(path.resolve())
    return None


def locate_cell(
    source: str, notebook: str | None, folder: Path | None = None
) -> tuple[str | None, int | None]:
    """Find the notebook and code-cell index holding ``source``.

    Papermill tells the kernel nothing about the notebook it runs, so when no path is known we
    look for the cell's exact source among the notebooks in the working folder.
    """
    paths: list[Path]
    if notebook:
        paths = [Path(notebook)]
    else:
        folder = folder or Path.cwd()
        paths = sorted(folder.glob("*.ipynb"))[:_MAX_NOTEBOOKS_SCANNED]
    wanted = source.strip()
    found: list[tuple[str, int]] = []
    for path in paths:
        for index, cell_source in _code_cells(str(path), _mtime(path)):
            if cell_source.strip() == wanted:
                found.append((str(path.resolve()), index))
                break
    if len(found) == 1:
        return found[0]
    return notebook, None  # not found, or the same cell in several notebooks: do not guess


def _mtime(path: Path) -> float:
    try:
        return path.stat().st_mtime
    except OSError:
        return 0.0


@functools.lru_cache(maxsize=64)
def _code_cells(path: str, mtime: float) -> tuple[tuple[int, str], ...]:
    try:
        with open(path, encoding="utf-8") as fh:
            nb = json.load(fh)
    except (OSError, ValueError):
        return ()
    out = []
    for index, cell in enumerate(nb.get("cells", [])):
        if cell.get("cell_type") == "code":
            src = cell.get("source", "")
            out.append((index, "".join(src) if isinstance(src, list) else src))
    return tuple(out)


def git_state(folder: Path) -> dict[str, str]:
    """Commit, dirty flag and branch of the repository holding ``folder``; {} outside git."""

    def git(*args: str) -> str:
        return subprocess.run(
            ["git", *args],
            cwd=folder,
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout.strip()

    try:
        commit = git("rev-parse", "HEAD")
    except (OSError, subprocess.SubprocessError):
        return {}
    tags = {"mlflow.source.git.commit": commit}
    try:
        tags["nbmlops.git.dirty"] = str(
            bool(git("status", "--porcelain", "--untracked-files=no"))
        ).lower()
        tags["mlflow.source.git.branch"] = git("rev-parse", "--abbrev-ref", "HEAD")
        remote = git("config", "--get", "remote.origin.url")
        if remote:  # https://user:TOKEN@host/repo.git must not be recorded
            tags["mlflow.source.git.repoURL"] = Redactor().text(remote)
    except (OSError, subprocess.SubprocessError):
        pass
    return tags


def imported_top_level_modules() -> list[str]:
    """Top-level names of the modules imported so far (cheap: no metadata lookups)."""
    return sorted(
        {name.partition(".")[0] for name in list(sys.modules) if not name.startswith("_")}
    )


@functools.lru_cache(maxsize=1)
def _module_to_distributions() -> Mapping[str, list[str]]:
    from importlib.metadata import packages_distributions

    return packages_distributions()


@functools.lru_cache(maxsize=1)
def _platform() -> str:
    """``platform.platform()`` reads the interpreter's binary for its libc version each time."""
    return platform.platform()


@functools.lru_cache(maxsize=1024)
def _installed_version(dist: str) -> str | None:
    """Each lookup scans the environment's metadata folders: a shipper reporting every tracked
    cell's environment asks for the same few distributions again and again."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(dist)
    except PackageNotFoundError:
        return None


def environment_report(modules: list[str]) -> dict[str, Any]:
    """Python, platform and the installed version of each imported top-level package."""
    mapping = _module_to_distributions()
    packages: dict[str, str] = {}
    for mod in modules:
        for dist in mapping.get(mod, []):
            if dist in packages:
                continue
            found = _installed_version(dist)
            if found is not None:
                packages[dist] = found
    return {
        "python": platform.python_version(),
        "implementation": platform.python_implementation(),
        "platform": _platform(),
        "executable": sys.executable,
        "packages": dict(sorted(packages.items(), key=lambda kv: kv[0].lower())),
    }
