"""The core stays free of Jupyter, and loading the extension stays light."""

import ast
import json
import subprocess
import sys
from pathlib import Path


def modules_after(code: str) -> set[str]:
    out = subprocess.run(
        [sys.executable, "-c", code + "\nimport sys, json; print(json.dumps(sorted(sys.modules)))"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return set(json.loads(out.strip().splitlines()[-1]))


def test_core_and_api_never_import_ipython():
    mods = modules_after(
        "import nbmlops.api, nbmlops.core.tracking.session, nbmlops.core.tracking.shipper, "
        "nbmlops.core.tracking.background, "
        "nbmlops.core.tracking.report, nbmlops.cli.main"
    )
    assert "IPython" not in mods
    assert "ipywidgets" not in mods


def test_importing_nbmlops_pulls_in_no_heavy_library():
    mods = modules_after("import nbmlops, nbmlops.ipython.magics")
    for heavy in ("mlflow", "pandas", "sklearn", "matplotlib", "pyarrow"):
        assert heavy not in mods, heavy


SRC = Path(__file__).resolve().parent.parent / "src" / "nbmlops"


def _imports(path: Path) -> list[tuple[str, str, int]]:
    """(module, name, line) of every import of nbmlops in ``path``."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("nbmlops"):
            found.extend((node.module or "", a.name, node.lineno) for a in node.names)
        elif isinstance(node, ast.Import):
            found.extend(
                (a.name, "", node.lineno) for a in node.names if a.name.startswith("nbmlops")
            )
    return found


def test_no_private_name_is_imported_across_modules():
    """Modules share public pieces; a leading underscore means "this module's own"."""
    crossings = [
        f"{path.relative_to(SRC)}:{line}: from {module} import {name}"
        for path in sorted(SRC.rglob("*.py"))
        for module, name, line in _imports(path)
        if name.startswith("_") and not name.startswith("__")
    ]
    assert crossings == []


ADAPTERS = ("ipython", "widgets", "cli", "server")
# what an adapter may import of nbmlops: the front door, the errors, the settings, and the
# widgets (a magic may display a panel); each door also imports its own package
ALLOWED = (
    "nbmlops.api",
    "nbmlops.exceptions",
    "nbmlops.config",
    "nbmlops.widgets",
    "nbmlops.panels",
)


def test_adapters_call_only_the_front_door():
    """The magics, widgets, CLI and server extension reach the core through nbmlops.api only
    (ruff's banned-api rule says so as well, at lint time)."""
    strays = [
        f"{path.relative_to(SRC)}:{line}: {module}"
        for door in ADAPTERS
        for path in sorted((SRC / door).rglob("*.py"))
        for module, name, line in _imports(path)
        if not module.startswith((f"nbmlops.{door}", *ALLOWED))
        and not (module == "nbmlops" and name in ("api", "__version__"))
    ]
    assert strays == []
