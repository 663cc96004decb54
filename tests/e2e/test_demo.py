"""`make demo`'s job end to end: the quick-start notebook, run twice by papermill."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import Lane

pytestmark = [pytest.mark.kernel, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]


def test_demo_tracks_both_parameterised_runs(project: Path):
    shutil.copytree(REPO / "notebooks", project / "notebooks", ignore=shutil.ignore_patterns("out"))
    proc = subprocess.run(
        [sys.executable, "-m", "nbmlops.demo"],
        cwd=project,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "open the MLflow UI" in proc.stdout
    lane = Lane("sqlite", project, {}, f"sqlite:///{project / '.nbmlops' / 'mlflow.db'}")
    runs = lane.runs("quickstart")
    assert sorted((r.info.run_name, r.info.status) for r in runs) == [
        ("train-forest", "FINISHED"),
        ("train-forest", "FINISHED"),
        ("train-logreg", "FINISHED"),
        ("train-logreg", "FINISHED"),
    ]
    assert sorted(
        r.data.params.get("C", "-") for r in runs if r.info.run_name == "train-logreg"
    ) == ["0.1", "1.0"]
    client = lane.client()
    exp = client.get_experiment_by_name("quickstart").experiment_id
    models = client.search_logged_models([exp])
    assert sorted((m.name, str(m.status).rsplit(".", 1)[-1]) for m in models) == [
        ("forest", "READY"),
        ("forest", "READY"),
        ("model", "READY"),
        ("model", "READY"),
    ]
    forest_run = next(r for r in runs if r.info.run_name == "train-forest")
    curve = client.get_metric_history(forest_run.info.run_id, "test_accuracy")
    assert len(curve) == len(range(10, int(forest_run.data.params["n_trees"]) + 1, 10))
    assert (project / "notebooks" / "out" / "quickstart-C0.1.ipynb").exists()
    # Then the example pipeline: cold, then every step cached.
    assert "ran: load, features, train, evaluate" in proc.stdout.replace("\n", " ")
    assert "ran: nothing (every step cached)" in proc.stdout
    pipeline_runs = lane.runs("breast-cancer-pipeline")
    kinds = sorted(r.data.tags.get("nbmlops.kind", "cell") for r in pipeline_runs)
    assert kinds == ["cell", "cell", "notebook", "notebook", "notebook", "notebook", "pipeline"]
