"""The wheel carries the JupyterLab extension prebuilt (users need no Node.js): built once per
session with ``pip wheel .``, then installed with nothing else into a fresh prefix, where
``jupyter labextension list`` finds it enabled."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
EXT = "share/jupyter/labextensions/nbmlops"


def _env() -> dict[str, str]:
    """jlpm and jupyter-builder (dev extras) are found next to this Python, as `make env`
    installs them; the hook only builds when labextension/prebuilt is missing."""
    bin_dir = str(Path(sys.executable).parent)
    return {**os.environ, "PATH": bin_dir + os.pathsep + os.environ.get("PATH", "")}


@pytest.fixture(scope="session")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    proc = subprocess.run(
        [
            *(sys.executable, "-m", "pip", "wheel", str(ROOT), "--no-deps"),
            *("--no-build-isolation", "--wheel-dir", str(out), "--quiet"),
        ],
        env=_env(),
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    (whl,) = out.glob("nbmlops-*.whl")
    return whl


def test_wheel_holds_the_prebuilt_labextension(wheel: Path):
    with zipfile.ZipFile(wheel) as zf:
        names = zf.namelist()
        data = next(n.split("/data/")[0] + "/data/" for n in names if ".data/data/" in n)
        ext = data + EXT
        package = json.loads(zf.read(f"{ext}/package.json"))
        static = [n for n in names if n.startswith(f"{ext}/static/")]
        install = json.loads(zf.read(f"{ext}/install.json"))
        schema = json.loads(zf.read(f"{ext}/schemas/nbmlops/plugin.json"))
        server = json.loads(zf.read(data + "etc/jupyter/jupyter_server_config.d/nbmlops.json"))
    assert package["name"] == "nbmlops"
    # the server extension behind the panel is enabled by the wheel's own config file
    assert server["ServerApp"]["jpserver_extensions"]["nbmlops.server"] is True
    # the federated build names the entry point it loads from static/
    load = package["jupyterlab"]["_build"]["load"]
    assert f"{ext}/{load}" in names, (load, static)
    assert f"{ext}/static/style.js" in names
    assert any(n.endswith(".js") and "remoteEntry" in n for n in static), static
    assert install["packageName"] == "nbmlops"
    assert schema["properties"]["refreshInterval"]["minimum"] >= 1


def test_wheel_alone_installs_an_enabled_labextension(wheel: Path, tmp_path: Path):
    prefix = tmp_path / "prefix"
    subprocess.run(
        [
            *(sys.executable, "-m", "pip", "install", "--no-deps", "--quiet"),
            # without --ignore-installed pip would first uninstall the nbmlops of this venv
            *("--ignore-installed", "--prefix", str(prefix), str(wheel)),
        ],
        check=True,
        timeout=300,
    )
    share = prefix / "share" / "jupyter"
    assert (share / "labextensions" / "nbmlops" / "package.json").is_file()
    env = {**_env(), "JUPYTER_PATH": str(share)}
    listing = subprocess.run(
        [sys.executable, "-m", "jupyter", "labextension", "list"],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    text = listing.stdout + listing.stderr
    # the listing has one block per folder: the one of our prefix must show nbmlops enabled
    block = text.split(str(share / "labextensions"), 1)
    assert len(block) == 2, text
    mine = block[1].split("\n/", 1)[0]
    assert "nbmlops v" in mine and "enabled" in mine and "OK" in mine, text
