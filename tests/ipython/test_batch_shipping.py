"""Batch runs do not pay for MLflow in their cells: under plain papermill (``ship: auto``) a
kernel's tracked cells only journal, never importing MLflow, each summary says the run is on its
way, and a detached shipper puts every run in MLflow once the kernel has exited; ``nbmlops run``
returns with every run already in MLflow."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import outputs_text, run_papermill, unique, write_notebook

pytestmark = [pytest.mark.kernel]

FIT = (
    "%%track fit -e {exp}\n"
    "from sklearn.datasets import load_iris\n"
    "from sklearn.linear_model import LogisticRegression\n"
    "X, y = load_iris(return_X_y=True)\n"
    "clf = LogisticRegression(max_iter=300).fit(X, y)\n"
    "acc = clf.score(X, y)\n"
)
AGAIN = "%%track again -e {exp}\nacc2 = acc / 2\n"
PROBE = "print('MLFLOW IMPORTED IN CELLS:', 'mlflow' in sys.modules)"


def _runs(project: Path, exp: str) -> list:
    from mlflow import MlflowClient

    client = MlflowClient(f"sqlite:///{project / '.nbmlops' / 'mlflow.db'}")
    found = client.get_experiment_by_name(exp)
    return [] if found is None else client.search_runs([found.experiment_id])


def _finished(project: Path, exp: str) -> set[str]:
    return {r.info.run_name for r in _runs(project, exp) if r.info.status == "FINISHED"}


def test_batch_cells_only_journal_and_every_run_reaches_mlflow(project: Path) -> None:
    exp = unique("batch")
    nb = write_notebook(
        project / "nb.ipynb",
        [
            "%load_ext nbmlops\nimport sys",
            FIT.format(exp=exp),
            AGAIN.format(exp=exp),
            PROBE,
            "%track status",
        ],
    )

    # Plain papermill: nothing waits on MLflow in the kernel.
    run_papermill(nb, project)
    text = outputs_text(nb.with_name("nb.out.ipynb"))
    assert "MLFLOW IMPORTED IN CELLS: False" in text
    assert text.count("on its way") >= 2, text
    assert "detached shipper" in text
    assert "batch    runs are on its way" in text  # %track status says so
    deadline = time.monotonic() + 300  # the shipper imports MLflow after the kernel exits
    while _finished(project, exp) != {"fit", "again"} and time.monotonic() < deadline:
        time.sleep(0.5)
    assert _finished(project, exp) == {"fit", "again"}
    fit = next(r for r in _runs(project, exp) if r.info.run_name == "fit")
    assert float(fit.data.metrics["acc"]) > 0.9

    # `nbmlops run`: every run is in MLflow when the command returns.
    exp2 = unique("batchrun")
    nb2 = write_notebook(
        project / "nb2.ipynb",
        ["%load_ext nbmlops\nimport sys", FIT.format(exp=exp2), AGAIN.format(exp=exp2), PROBE],
    )
    nbmlops = Path(sys.executable).with_name("nbmlops")
    proc = subprocess.run(
        [str(nbmlops), "run", str(nb2), "-o", str(project / "nb2.out.ipynb")],
        cwd=project,
        capture_output=True,
        text=True,
        timeout=600,
        env=dict(os.environ),
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "MLFLOW IMPORTED IN CELLS: False" in outputs_text(project / "nb2.out.ipynb")
    assert _finished(project, exp2) == {"fit", "again"}


def test_a_batch_kernel_asked_for_its_runs_ships_them_then(project: Path) -> None:
    """`%track sync` (and a panel about to read runs) in a batch kernel: the runs it journaled
    are in MLflow when the cell returns, and later runs ship as they end."""
    exp = unique("batchsync")
    check = (
        "from mlflow import MlflowClient\n"
        "from nbmlops.config import load_settings\n"
        "c = MlflowClient(load_settings().resolved_tracking_uri)\n"
        "e = c.get_experiment_by_name({exp!r})\n"
        "names = sorted(r.info.run_name for r in c.search_runs([e.experiment_id]) "
        "if r.info.status == 'FINISHED')\n"
        "print('{label}:', names)"
    )
    nb = write_notebook(
        project / "sync.ipynb",
        [
            "%load_ext nbmlops",
            FIT.format(exp=exp),
            "%track sync",
            check.format(exp=exp, label="AFTER SYNC"),
            AGAIN.format(exp=exp),
            "%track sync",
            check.format(exp=exp, label="AFTER SECOND SYNC"),
        ],
    )
    run_papermill(nb, project)
    text = outputs_text(nb.with_name("sync.out.ipynb"))
    assert "AFTER SYNC: ['fit']" in text, text
    assert "AFTER SECOND SYNC: ['again', 'fit']" in text, text
    assert text.count("everything is in MLflow") == 2, text
    assert _finished(project, exp) == {"fit", "again"}  # nothing shipped twice
    assert len(_runs(project, exp)) == 2
