"""The core stays free of Jupyter, and loading the extension stays light."""

import json
import subprocess
import sys


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
        "nbmlops.core.tracking.report, nbmlops.cli.main"
    )
    assert "IPython" not in mods
    assert "ipywidgets" not in mods


def test_importing_nbmlops_pulls_in_no_heavy_library():
    mods = modules_after("import nbmlops, nbmlops.ipython.magics")
    for heavy in ("mlflow", "pandas", "sklearn", "matplotlib", "pyarrow"):
        assert heavy not in mods, heavy
