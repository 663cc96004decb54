"""Lineage of a 3-cell notebook (load -> features -> train) executed in a real kernel."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from nbmlops.core.lineage.graph import LineageGraph
from nbmlops.core.lineage.store import LineageStore
from tests.conftest import outputs_text, run_papermill, write_notebook

pytestmark = [pytest.mark.kernel]

CELLS = [
    "%load_ext nbmlops\nimport numpy as np, pandas as pd\nfrom sklearn.linear_model import LogisticRegression",
    "%%track load\nrng = np.random.default_rng(0)\nraw = pd.DataFrame({'a': rng.normal(size=300), 'b': rng.normal(size=300)})",
    "%%track features\nX = raw.assign(ab=raw.a * raw.b)\ny = (raw.a + raw.b > 0).astype(int)",
    "%%track train\nmodel = LogisticRegression().fit(X, y)\nacc = model.score(X, y)",
    "%data commit raw -m 'the raw sample'",
    "%lineage model",
]


def test_lineage_of_a_three_cell_notebook(project: Path):
    nb = write_notebook(project / "pipeline.ipynb", CELLS)
    run_papermill(nb, project)
    g = LineageGraph(LineageStore(project / ".nbmlops" / "lineage.db"))
    edges = {
        (g.graph.nodes[a]["label"], g.graph.nodes[b]["label"], d["kind"])
        for a, b, d in g.graph.edges(data=True)
    }
    assert {
        ("load", "raw", "output"),
        ("raw", "features", "input"),
        ("features", "X", "output"),
        ("features", "y", "output"),
        ("X", "train", "input"),
        ("y", "train", "input"),
        ("train", "model", "produced"),
        ("X", "model", "trained_on"),
    } <= edges
    shown = outputs_text(nb.with_name("pipeline.out.ipynb"))
    assert "lineage of model model LogisticRegression" in shown
    assert "raw@1" in shown  # the committed version names the content it holds

    run_id = next(a["run_id"] for _, a in g.graph.nodes(data=True) if a.get("label") == "train")
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "nbmlops.cli.main",
            "lineage",
            f"runs:/{run_id}/model",
            "--png",
            "lineage.png",
        ],
        cwd=project,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert "raw@1" in proc.stdout and "run features (FINISHED" in proc.stdout
    assert (project / "lineage.png").read_bytes()[:4] == b"\x89PNG"
