"""A tracked cell behaves as the same cell untracked, in a real kernel (nbclient): its prompt
number, its traceback, top-level ``await``, and what it shows. One notebook runs once for the
module; each test reads what it needs from it and from the store."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nbformat
import pytest
from nbclient import NotebookClient

from tests.conftest import kernel_env, write_notebook

pytestmark = [pytest.mark.kernel]

EXP = "fidelity"

CELLS = {
    "setup": "%load_ext nbmlops\nimport nbmlops",  # In [1]
    "unnamed": f"%%track -e {EXP}\nalpha = 0.5",  # In [2]
    "plain_fail": "C = 2.0\nboom = C / 0",  # In [3]
    "tracked_fail": f"%%track failing -e {EXP}\nC = 2.0\nboom = C / 0",  # In [4]
    "awaits": f"%%track awaits -e {EXP}\nimport asyncio\nawait asyncio.sleep(0)\nz = 3",
    "after_await": "print('z is', z)",
    "figures": (
        f"%%track figures -e {EXP}\nimport matplotlib.pyplot as plt\n"
        "from IPython.display import display\n"
        "plt.plot([1, 2]); plt.title('shown')\nplt.show()\n"
        "fig, ax = plt.subplots(); ax.set_title('kept')\ndisplay(fig)"
    ),
    "own_class": (
        f"%%track custom -e {EXP}\nimport numpy as np\n"
        "from sklearn.base import BaseEstimator, ClassifierMixin\n"
        "class Majority(ClassifierMixin, BaseEstimator):\n"
        "    def fit(self, X, y):\n"
        "        self.label_ = int(np.bincount(y).argmax())\n"
        "        self.n_features_in_ = X.shape[1]\n"
        "        return self\n"
        "    def predict(self, X):\n"
        "        return np.full(len(X), self.label_)\n"
        "Xm = np.arange(12.0).reshape(6, 2)\n"
        "majority = Majority().fit(Xm, np.array([0, 1, 1, 1, 0, 1]))"
    ),
    "sync": "%track sync",
}


@dataclass
class Executed:
    project: Path
    cells: dict[str, Any]  # name -> executed cell

    def runs(self) -> dict[str, Any]:
        from mlflow import MlflowClient

        client = MlflowClient(f"sqlite:///{self.project / '.nbmlops' / 'mlflow.db'}")
        exp = client.get_experiment_by_name(EXP)
        assert exp is not None, "no run reached the store"
        return {r.info.run_name: r for r in client.search_runs([exp.experiment_id])}


@pytest.fixture(scope="module")
def executed(tmp_path_factory: pytest.TempPathFactory) -> Executed:
    project = tmp_path_factory.mktemp("fidelity")
    path = write_notebook(project / "fidelity.ipynb", list(CELLS.values()))
    nb = nbformat.read(str(path), as_version=4)
    client = NotebookClient(
        nb,
        timeout=600,
        kernel_name="python3",
        allow_errors=True,
        resources={"metadata": {"path": str(project)}},
    )
    client.execute(env=kernel_env())
    return Executed(project, dict(zip(CELLS, nb.cells, strict=True)))


def _errors(cell: Any) -> list[dict[str, Any]]:
    return [o for o in cell.outputs if o.output_type == "error"]


def _stream(cell: Any, name: str) -> str:
    return "".join(o.text for o in cell.outputs if o.output_type == "stream" and o.name == name)


def test_the_prompt_number_names_and_tags_the_run(executed: Executed):
    assert executed.cells["unnamed"].execution_count == 2
    runs = executed.runs()
    assert "cell-2" in runs, sorted(runs)
    assert runs["cell-2"].data.tags["nbmlops.cell.execution_count"] == "2"
    assert runs["failing"].data.tags["nbmlops.cell.execution_count"] == "4"


def test_a_failing_tracked_cell_reads_as_the_untracked_cell(executed: Executed):
    [plain] = _errors(executed.cells["plain_fail"])
    [tracked] = _errors(executed.cells["tracked_fail"])
    assert executed.cells["plain_fail"].execution_count == 3
    plain_tb = [line.replace("In[3]", "In[4]") for line in plain.traceback]
    assert tracked.traceback == plain_tb
    text = re.sub(r"\x1b\[[0-9;]*m", "", "\n".join(tracked.traceback))
    assert "Cell In[4], line 2" in text and "nbmlops" not in text
    assert executed.runs()["failing"].info.status == "FAILED"


def test_top_level_await_runs_in_a_tracked_cell(executed: Executed):
    assert _errors(executed.cells["awaits"]) == []
    assert _stream(executed.cells["after_await"], "stdout") == "z is 3\n"
    run = executed.runs()["awaits"]
    assert run.info.status == "FINISHED"
    assert run.data.params == {"z": "3"}


def test_figures_shown_with_plt_show_are_captured_once(executed: Executed):
    """The kernel's inline backend closes a figure on plt.show(); one displayed and left open
    is displayed again (and closed) by the backend at the end of the cell."""
    from mlflow import MlflowClient

    run = executed.runs()["figures"]
    client = MlflowClient(f"sqlite:///{executed.project / '.nbmlops' / 'mlflow.db'}")
    figures = sorted(a.path for a in client.list_artifacts(run.info.run_id, "figures"))
    assert figures == ["figures/kept.png", "figures/shown.png"]
    shown = Path(
        client.download_artifacts(
            run.info.run_id, "figures/shown.png", str(executed.project / "dl")
        )
    )
    assert shown.read_bytes()[:4] == b"\x89PNG"
    images = [o for o in executed.cells["figures"].outputs if "image/png" in o.get("data", {})]
    assert len(images) >= 2  # what the user sees is unchanged
    assert not any(
        "x-nbmlops" in key for o in executed.cells["figures"].outputs for key in o.get("data", {})
    )


def test_a_model_of_a_notebook_class_loads_in_a_fresh_process_and_the_scan_refuses_it(
    executed: Executed,
):
    """What the summary says is true: the model loads in a fresh process that never saw the
    notebook, and the registry's scan refuses the code it carries."""
    import subprocess
    import sys

    from mlflow import MlflowClient

    from nbmlops.core.registry.scan import scan_model_dir

    summary = "".join(
        o.get("data", {}).get("text/plain", "") for o in executed.cells["own_class"].outputs
    )
    assert "uses Majority, defined in this notebook" in summary
    assert "loads in a fresh Python process" in summary
    assert "move Majority into a module" in summary
    run = executed.runs()["custom"]
    assert run.info.status == "FINISHED"
    uri = f"sqlite:///{executed.project / '.nbmlops' / 'mlflow.db'}"
    script = (
        "import mlflow, numpy as np\n"
        f"mlflow.set_tracking_uri({uri!r})\n"
        f"m = mlflow.pyfunc.load_model('runs:/{run.info.run_id}/majority')\n"
        "print(m.predict(np.zeros((3, 2))).tolist())"
    )
    loaded = subprocess.run(
        [sys.executable, "-c", script],
        cwd=executed.project,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true"},
    )
    assert loaded.returncode == 0, loaded.stderr[-3000:]
    assert loaded.stdout.strip().splitlines()[-1] == "[1, 1, 1]"
    client = MlflowClient(uri)
    [model] = client.search_logged_models(
        [run.info.experiment_id], filter_string="name = 'majority'"
    )
    import mlflow

    mlflow.set_tracking_uri(uri)
    folder = mlflow.artifacts.download_artifacts(
        f"models:/{model.model_id}", dst_path=str(executed.project / "dl-model")
    )
    report = scan_model_dir(folder, audit=False)
    assert report.status == "flagged"
