"""Optional parts: `pip install nbmlops` alone tracks, versions data and shows panels; asking
for an optional part whose packages are missing names the extra to install. A package is made
missing by blocking its import in a fresh interpreter (sys.modules[name] = None), which is what
Python does for a package that is not installed."""

from __future__ import annotations

import subprocess
import sys

import pytest


def run(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize(
    ("blocked", "call", "extra"),
    [
        ("uvicorn", "from nbmlops.api.serving import GatewayServer", "serve"),
        ("starlette", "from nbmlops.api.serving import Gateway", "serve"),
    ],
)
def test_a_missing_extra_is_named(blocked: str, call: str, extra: str):
    out = run(
        f"import sys; sys.modules[{blocked!r}] = None\n"
        "from nbmlops.exceptions import MissingDependencyError\n"
        f"try:\n    {call}\nexcept MissingDependencyError as err:\n    print('ERR', err)\n"
    )
    assert out.returncode == 0, out.stderr
    assert f"pip install 'nbmlops[{extra}]'" in out.stdout
    assert blocked in out.stdout


def test_the_base_install_needs_no_extra():
    """Tracking, data and the panels' data come without papermill, optuna, dask or uvicorn."""
    blocked = ["papermill", "nbclient", "optuna", "distributed", "starlette", "uvicorn"]
    out = run(
        f"import sys\nfor m in {blocked!r}: sys.modules[m] = None\n"
        "import nbmlops.api, nbmlops.api.data, nbmlops.api.lineage, nbmlops.api.experiments\n"
        "import nbmlops.api.registry, nbmlops.api.serving, nbmlops.api.audit\n"
        "from nbmlops.api.serving import kserve_canary\n"
        "print('ok')\n"
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok"
