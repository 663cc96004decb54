"""What nbmlops and the libraries it drives log never reaches the user's cells, in a real
kernel (nbclient), whether runs ship while the cell waits or in the background."""

from __future__ import annotations

from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

from tests.conftest import kernel_env, write_notebook

pytestmark = [pytest.mark.kernel]

CELLS = [
    "import warnings\nimport numpy as np\nfrom sklearn.preprocessing import StandardScaler\n"
    "X = np.arange(12.0).reshape(6, 2)\nbefore = list(warnings.filters)",
    "%load_ext nbmlops",
    # a fitted estimator without predict: MLflow warns that it logs no python_function flavor
    "%%track scaler -e quiet\nscaler = StandardScaler().fit(X)",
    "%track sync",
    "added = [f for f in warnings.filters if f not in before]\n"
    "removed = [f for f in before if f not in warnings.filters]\n"
    "print('filters changed:', added, removed)",
]


@pytest.mark.parametrize("ship", ["wait", "background"])
def test_library_logs_go_to_the_nbmlops_log_not_into_cells(tmp_path: Path, ship: str):
    project = tmp_path / "project"
    project.mkdir()
    nb = nbformat.read(str(write_notebook(project / "quiet.ipynb", CELLS)), as_version=4)
    env = kernel_env(NBMLOPS_SHIP=ship)
    NotebookClient(
        nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(project)}}
    ).execute(env=env)

    streams = [
        (i, o.name, o.text)
        for i, cell in enumerate(nb.cells)
        for o in cell.outputs
        if o.output_type == "stream"
    ]
    stderr = [s for s in streams if s[1] == "stderr"]
    assert stderr == [], stderr
    assert streams[-1][2] == "filters changed: [] []\n", streams
    summary = "".join(o.get("data", {}).get("text/plain", "") for o in nb.cells[2].outputs)
    assert "FINISHED 'scaler'" in summary and "scaler (StandardScaler" in summary
    log = (project / ".nbmlops" / "nbmlops.log").read_text()
    assert "Model was missing function: predict" in log
