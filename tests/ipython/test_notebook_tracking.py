"""`%%track` in real notebooks, executed by papermill in real kernels, checked in the store.

Each test runs against the embedded SQLite store and (server lane) an `mlflow server` on
PostgreSQL.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import (
    Lane,
    outputs_text,
    run_papermill,
    run_papermill_parallel,
    unique,
    write_notebook,
)

pytestmark = [pytest.mark.kernel]

SETUP = """\
%load_ext nbmlops
import nbmlops
import numpy as np, pandas as pd
import matplotlib
matplotlib.use("Agg")
import matplotlib.pyplot as plt
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import accuracy_score
rng = np.random.default_rng(seed)
X = pd.DataFrame(rng.normal(size=(300, 4)), columns=["f0", "f1", "f2", "f3"])
y = (X.f0 + 0.5 * X.f1 > 0).astype(int)
if change_row >= 0:
    X.iloc[change_row, 2] += 1e-6
X_train, X_test, y_train, y_test = X[:200], X[200:], y[:200], y[200:]
"""

TRAIN = """\
%%track train-logreg
C = 0.5
model = LogisticRegression(C=C, max_iter=max_iter).fit(X_train, y_train)
acc = accuracy_score(y_test, model.predict(X_test))
for step in range(5):
    nbmlops.log_metric("loss", 1.0 / (step + 1), step=step)
plt.plot(model.coef_[0]); plt.title("coefficients")
acc"""

AFTER = """\
np.save("pred.npy", model.predict(X_test))
X_test.to_parquet("X_test.parquet")
"""

PARAMS = "seed = 0\nchange_row = -1\nmax_iter = 500\n"


def git(cwd: Path, *args: str) -> str:
    return subprocess.run(
        ["git", *args], cwd=cwd, check=True, capture_output=True, text=True
    ).stdout.strip()


def the_run(lane: Lane, experiment: str, name: str):
    runs = [r for r in lane.runs(experiment) if r.info.run_name == name]
    assert len(runs) == 1, f"expected one run {name!r} in {experiment!r}, found {len(runs)}"
    return runs[0]


def test_a_tracked_cell_becomes_a_complete_mlflow_run(lane: Lane):
    project = lane.project
    git(project, "init", "-q")
    git(
        project,
        "-c",
        "user.email=t@e",
        "-c",
        "user.name=t",
        "commit",
        "-q",
        "--allow-empty",
        "-m",
        "init",
    )
    name = unique("train")
    nb = write_notebook(project / f"{name}.ipynb", [SETUP, TRAIN, AFTER], parameters=PARAMS)
    run_papermill(nb, project, env=lane.env)

    run = the_run(lane, name, "train-logreg")
    client = lane.client()
    rid = run.info.run_id
    assert run.info.status == "FINISHED"
    # params: literal in the cell, and a papermill parameter the cell reads
    assert run.data.params["C"] == "0.5"
    assert run.data.params["max_iter"] == "500"
    # metrics: computed in the cell, and logged with steps
    shown = outputs_text(nb.with_name(f"{name}.out.ipynb"))
    assert f"{run.data.metrics['acc']:.6g}" in shown
    losses = client.get_metric_history(rid, "loss")
    assert sorted((m.step, m.value) for m in losses) == [(s, 1.0 / (s + 1)) for s in range(5)]
    # the model loads through pyfunc and predicts what the notebook's own model predicted
    import mlflow.pyfunc
    import pandas as pd

    mlflow.set_tracking_uri(lane.uri)
    loaded = mlflow.pyfunc.load_model(f"runs:/{rid}/model")
    X_test = pd.read_parquet(project / "X_test.parquet")
    np.testing.assert_array_equal(loaded.predict(X_test), np.load(project / "pred.npy"))
    assert [c.name for c in loaded.metadata.signature.inputs.inputs] == ["f0", "f1", "f2", "f3"]
    # data: every frame the cell read, by full-content digest, X_train as training data
    inputs = {d.dataset.name: d for d in run.inputs.dataset_inputs}
    assert set(inputs) == {"X_train", "y_train", "X_test", "y_test"}
    assert len(inputs["X_train"].dataset.digest) == 32
    assert {t.key: t.value for t in inputs["X_train"].tags}["mlflow.data.context"] == "training"
    assert json.loads(inputs["X_train"].dataset.profile)["shape"] == [200, 4]
    # figure, code, environment
    arts = (
        {a.path for a in client.list_artifacts(rid)}
        | {a.path for a in client.list_artifacts(rid, "figures")}
        | {a.path for a in client.list_artifacts(rid, "code")}
    )
    assert {"figures/coefficients.png", "code/cell.py", "environment.json"} <= arts
    local = Path(client.download_artifacts(rid, "figures/coefficients.png", str(project / "dl")))
    assert local.read_bytes()[:4] == b"\x89PNG"
    code = Path(client.download_artifacts(rid, "code/cell.py", str(project / "dl"))).read_text()
    assert "LogisticRegression(C=C, max_iter=max_iter)" in code
    env = json.loads(
        Path(client.download_artifacts(rid, "environment.json", str(project / "dl"))).read_text()
    )
    import sklearn

    assert env["packages"]["scikit-learn"] == sklearn.__version__
    assert env["python"].startswith(f"{sys.version_info.major}.{sys.version_info.minor}")
    # context tags
    tags = run.data.tags
    assert tags["mlflow.source.type"] == "NOTEBOOK"
    assert tags["mlflow.source.name"].endswith(f"{name}.ipynb")
    assert tags["nbmlops.cell.index"] == "2"
    assert tags["mlflow.source.git.commit"] == git(project, "rev-parse", "HEAD")
    assert tags["nbmlops.git.dirty"] in ("true", "false")
    assert tags["mlflow.user"]
    assert float(tags["nbmlops.duration_s"]) > 0
    assert run.info.end_time >= run.info.start_time


def test_the_data_digest_is_full_content(lane: Lane):
    """One value changed in the middle of X changes X_train's digest; same data, same digest."""
    project = lane.project
    digests = []
    for i, change_row in enumerate([-1, 150, -1]):
        name = unique(f"digest{i}")
        nb = write_notebook(project / f"{name}.ipynb", [SETUP, TRAIN], parameters=PARAMS)
        run_papermill(nb, project, parameters={"change_row": change_row}, env=lane.env)
        run = the_run(lane, name, "train-logreg")
        digests.append({d.dataset.name: d.dataset.digest for d in run.inputs.dataset_inputs})
    assert digests[0]["X_train"] != digests[1]["X_train"]
    assert digests[0]["X_test"] == digests[1]["X_test"]  # row 150 is in the training part
    assert digests[0] == digests[2]


def test_an_exception_fails_the_run_and_reaches_the_user(lane: Lane):
    project = lane.project
    name = unique("fails")
    cell = "%%track will-fail\nC = 2.0\npartial = C * 0.75\nboom = 1 / 0"
    nb = write_notebook(project / f"{name}.ipynb", [SETUP, cell, "after = 1"], parameters=PARAMS)
    proc = run_papermill(nb, project, env=lane.env, check=False)
    assert proc.returncode != 0
    out = nb.with_name(f"{name}.out.ipynb")
    assert "ZeroDivisionError: division by zero" in outputs_text(out)

    run = the_run(lane, name, "will-fail")
    assert run.info.status == "FAILED"
    assert run.data.params["C"] == "2.0"
    assert run.data.metrics["partial"] == 1.5
    assert run.data.tags["nbmlops.error"] == "ZeroDivisionError: division by zero"
    tb = Path(
        lane.client().download_artifacts(run.info.run_id, "traceback.txt", str(project / "dl"))
    )
    assert "ZeroDivisionError" in tb.read_text()


def test_a_kernel_killed_mid_cell_is_marked_failed_by_the_next_start(lane: Lane):
    project = lane.project
    name = unique("killed")
    cell = "%%track doomed\nimport os, signal, time\nlr = 0.1\nos.kill(os.getpid(), signal.SIGKILL)\ntime.sleep(30)"
    nb = write_notebook(project / f"{name}.ipynb", [SETUP, cell], parameters=PARAMS)
    proc = run_papermill(nb, project, env=lane.env, check=False)
    assert proc.returncode != 0 and "Kernel died" in proc.stderr + outputs_text(
        nb.with_name(f"{name}.out.ipynb")
    )

    sync = subprocess.run(
        [sys.executable, "-m", "nbmlops.cli.main", "sync"],
        cwd=project,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert sync.returncode == 0, sync.stderr
    assert "closed as killed" in sync.stdout
    run = the_run(lane, name, "doomed")
    assert run.info.status == "FAILED"
    assert run.data.tags["nbmlops.failure"] == "killed"
    assert "ended while the run was open" in run.data.tags["nbmlops.status_reason"]
    assert run.info.end_time is not None and run.info.end_time >= run.info.start_time


def test_four_parallel_papermill_runs_into_one_new_sqlite_store(project: Path):
    """Parallel first starts on a store that does not exist yet: one schema, every run whole."""
    name = unique("parallel")
    cells = [SETUP] + [
        f"%%track part{k}\nfor i in range(200):\n    nbmlops.log_metric('m{k}', i * seed, step=i)\nscore = float(seed)"
        for k in range(3)
    ]
    nb = write_notebook(project / f"{name}.ipynb", cells, parameters=PARAMS)
    results = run_papermill_parallel(nb, project, [{"seed": seed} for seed in range(1, 5)])
    for code, err in results:
        assert code == 0, err[-3000:]
        assert "database is locked" not in err

    lane = Lane("sqlite", project, {}, f"sqlite:///{project / '.nbmlops' / 'mlflow.db'}")
    runs = lane.runs(name)
    assert len(runs) == 12
    assert {r.info.status for r in runs} == {"FINISHED"}
    client = lane.client()
    for r in runs:
        k = r.info.run_name[-1]
        history = client.get_metric_history(r.info.run_id, f"m{k}")
        seed = int(r.data.metrics["score"])
        assert sorted((m.step, m.value) for m in history) == [
            (i, float(i * seed)) for i in range(200)
        ]
    assert sorted(int(r.data.metrics["score"]) for r in runs) == sorted(list(range(1, 5)) * 3)


@pytest.mark.slow
@pytest.mark.parametrize("kernels", [8, 32])
def test_many_kernels_start_together_on_a_new_sqlite_store(project: Path, kernels: int):
    """8 and 32 papermill runs start at once on a store that does not exist yet, each
    logging hundreds of metrics: every run present and FINISHED with exact counts, and no
    lock or migration error reaches anyone."""
    name = unique(f"swarm{kernels}")
    cell = (
        "%%track swarm\nfor i in range(300):\n    nbmlops.log_metric('m', i + seed, step=i)\n"
        "last = float(seed)"
    )
    nb = write_notebook(
        project / f"{name}.ipynb",
        ["%load_ext nbmlops\nimport nbmlops", cell],
        parameters="seed = 0\n",
    )
    results = run_papermill_parallel(nb, project, [{"seed": seed} for seed in range(kernels)])
    errors = [
        err[-2000:]
        for code, err in results
        if code != 0 or "database is locked" in err or "already exists" in err
    ]
    assert not errors, errors[0]
    lane = Lane("sqlite", project, {}, f"sqlite:///{project / '.nbmlops' / 'mlflow.db'}")
    runs = lane.runs(name)
    assert len(runs) == kernels
    assert {r.info.status for r in runs} == {"FINISHED"}
    assert sorted(int(r.data.metrics["last"]) for r in runs) == list(range(kernels))
    client = lane.client()
    for r in runs:
        seed = int(r.data.metrics["last"])
        hist = client.get_metric_history(r.info.run_id, "m")
        assert sorted((m.step, m.value) for m in hist) == [(i, float(i + seed)) for i in range(300)]
