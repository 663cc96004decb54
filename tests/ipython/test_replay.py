"""The notebook that made a model trained interactively, in a real kernel (nbclient): one
kernel session runs cells out of the notebook's order, edits and runs one again, runs an
unrelated cell in between, and deletes a cell it ran; ``nbmlops export-notebook`` and
``%replay`` give back exactly the cells the run depends on, in the order they ran."""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

from tests.conftest import kernel_env, write_notebook

pytestmark = [pytest.mark.kernel]

EXP = "replay"
CELLS = {
    "setup": "%load_ext nbmlops\nimport numpy as np\nimport nbmlops",
    "data": "rng = np.random.default_rng(0)\nX = rng.normal(size=(200, 4))\n"
    "y = (X[:, 0] + X[:, 1] > 0).astype(int)",
    "fit": f"%%track fit -e {EXP}\nfrom sklearn.linear_model import LogisticRegression\n"
    "clf = LogisticRegression(C=C).fit(X_train, y_train)\nacc = clf.score(X_test, y_test)",
    "param": "C = 10.0",
    "unrelated": "summary = X.mean(axis=0)\nones = np.ones(3)",
    "split": "X_train, X_test, y_train, y_test = X[:150], X[150:], y[:150], y[150:]",
    "read": "import pandas as pd\nextra = pd.read_csv('extra.csv')",
    "count": f"%%track count -e {EXP}\nn_extra = len(extra)",
    "usplit": "idx = np.random.permutation(len(X))\nXu, yu = X[idx[:100]], y[idx[:100]]",
    "ufit": f"%%track ufit -e {EXP}\nfrom sklearn.linear_model import LogisticRegression\n"
    "uclf = LogisticRegression().fit(Xu, yu)\nuacc = uclf.score(X, y)",
    "sync": "%track sync",
}
# The order the user ran them in; "param" is edited to C = 0.5 before its second run and
# "split" is deleted from the notebook after it ran.
ORDER = [
    "setup",
    "data",
    "param",
    "unrelated",
    "split",
    "param*",
    "fit",
    "read",
    "count",
    "usplit",
    "ufit",
    "sync",
]


@dataclass
class Session:
    project: Path
    runs: dict[str, str]  # run name -> MLflow run id
    nb: nbformat.NotebookNode
    client: NotebookClient


def cli(folder: Path, *args: str) -> subprocess.CompletedProcess:
    env = kernel_env()
    return subprocess.run(
        [sys.executable, "-m", "nbmlops.cli.main", *args],
        cwd=folder,
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )


@pytest.fixture(scope="module")
def session(tmp_path_factory: pytest.TempPathFactory):
    project = tmp_path_factory.mktemp("replay")
    (project / "extra.csv").write_text("a,b\n1,2\n3,4\n5,6\n")
    path = write_notebook(project / "interactive.ipynb", list(CELLS.values()))
    nb = nbformat.read(str(path), as_version=4)
    index = {name: i for i, name in enumerate(CELLS)}
    client = NotebookClient(
        nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(project)}}
    )
    # nbclient's kernel counts as a batch kernel, which only journals and leaves shipping to
    # a detached shipper after it exits; this session stands for a JupyterLab user's kernel,
    # whose runs are in MLflow as its cells end
    env = {**kernel_env(), "NBMLOPS_SHIP": "wait"}
    with client.setup_kernel(env=env, cwd=str(project)):
        for step in ORDER:
            name = step.rstrip("*")
            if step == "param*":
                nb.cells[index[name]].source = "C = 0.5"
            client.execute_cell(nb.cells[index[name]], index[name])
        nb.cells[index["split"]].source = ""  # deleted: its text is gone from the notebook
        from mlflow import MlflowClient

        store = MlflowClient(f"sqlite:///{project / '.nbmlops' / 'mlflow.db'}")
        exp = store.get_experiment_by_name(EXP)
        assert exp is not None, "no run reached the store"
        runs = {r.info.run_name: r.info.run_id for r in store.search_runs([exp.experiment_id])}
        (project / "extra.csv").unlink()  # read once, never committed, now gone
        yield Session(project, runs, nb, client)


def test_export_notebook_holds_exactly_the_cells_the_model_needs(session: Session):
    run_id = session.runs["fit"]
    done = cli(session.project, "export-notebook", run_id[:8], "--json")
    assert done.returncode == 0, done.stdout + done.stderr
    shown = json.loads(done.stdout)
    assert shown["run_id"] == run_id
    # setup [1], data [2], split [5] (since deleted), C = 0.5 [6], the fit [7]; not the first
    # C = 10.0 [3] nor the unrelated cell [4]
    assert shown["cells"] == [1, 2, 5, 6, 7]
    assert shown["blockers"] == []
    nb = json.loads(Path(shown["notebook"]).read_text())
    assert Path(shown["notebook"]) == (
        session.project / ".nbmlops" / "reproduce" / run_id / "replay.ipynb"
    )
    sources = ["".join(c["source"]) for c in nb["cells"]]
    assert sources == [
        "%load_ext nbmlops",
        "import numpy as np\nimport nbmlops",
        CELLS["data"],
        CELLS["split"],
        "C = 0.5",
        CELLS["fit"],
    ]


def test_a_missing_input_file_is_named_and_replay_shows_the_cells(session: Session):
    done = cli(session.project, "export-notebook", session.runs["count"])
    assert done.returncode == 1, done.stdout + done.stderr
    assert "cannot replay extra.csv" in done.stdout
    assert "no longer exists" in done.stdout

    cell = nbformat.v4.new_code_cell(f"%replay {session.runs['fit'][:10]}")
    session.nb.cells.append(cell)
    session.client.execute_cell(cell, len(session.nb.cells) - 1)
    text = "".join(
        o.get("data", {}).get("text/markdown", "") + o.get("text", "") for o in cell.outputs
    )
    assert f"Replay of run `{session.runs['fit']}`" in text, text
    assert "C = 0.5" in text and "C = 10.0" not in text and "summary" not in text


def test_reproduce_replays_the_slice_in_a_fresh_kernel_with_the_same_model_digest(
    session: Session,
):
    run_id = session.runs["fit"]
    done = cli(session.project, "reproduce", run_id[:8], "--json")
    assert done.returncode == 0, done.stdout + done.stderr
    report = json.loads(done.stdout)
    assert report["run_id"] == run_id and report["ok"], report
    checks = {c["item"]: c for c in report["runs"][0]["checks"]}
    assert checks["model clf"]["match"] and checks["model clf"]["recorded"] != "(none)", checks
    assert checks["metric fit.acc"]["match"], checks
    assert checks["code"]["recorded"] == "cells [1], [2], [5], [6], [7]"


def test_an_unseeded_random_split_is_named_when_the_replay_differs(session: Session):
    done = cli(session.project, "reproduce", session.runs["ufit"])
    assert done.returncode == 1, done.stdout + done.stderr
    text = " ".join(done.stdout.split())
    assert "model uclf" in text
    assert "randomness without a seed" in text and "np.random.permutation(len(X))" in text
