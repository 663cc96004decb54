"""The example pipeline that ships in notebooks/pipeline, end to end: a cold run records every
step under the pipeline run (and the %%track runs under their steps), a second run with nothing
changed runs nothing, and a changed parameter reruns only that step and what depends on it."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import Lane

pytestmark = [pytest.mark.kernel, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]
EXPERIMENT = "breast-cancer-pipeline"
STEPS = ["load", "features", "train", "evaluate"]
OUTPUTS = ["raw.csv", "train.csv", "holdout.csv", "model.joblib", "metrics.json"]


def run(yaml_path: Path):
    from nbmlops.core.pipeline.runner import run_pipeline
    from nbmlops.core.tracking.session import get_tracker

    report = run_pipeline(yaml_path, jobs=2)
    # run_pipeline returns before its runs reach MLflow; the tracker ships them behind it.
    assert get_tracker().flush(180), "the runs did not reach MLflow"
    return report


def step_runs(runs: list[Any]) -> dict[str, list[Any]]:
    out: dict[str, list[Any]] = {}
    for r in runs:
        if "nbmlops.step" in r.data.tags:
            out.setdefault(r.data.tags["nbmlops.step"], []).append(r)
    return out


def test_example_pipeline_cold_cached_and_one_parameter_changed(project: Path):
    folder = project / "pipeline"
    shutil.copytree(
        REPO / "notebooks" / "pipeline", folder, ignore=shutil.ignore_patterns("out", ".*")
    )
    yaml_path = folder / "pipeline.yaml"
    lane = Lane("sqlite", project, {}, f"sqlite:///{project / '.nbmlops' / 'mlflow.db'}")
    client = lane.client()

    # --- cold: every step runs, in order, and is recorded under the pipeline run ------------
    report = run(yaml_path)
    assert report.ok, report.table()
    assert {n: s.status for n, s in report.steps.items()} == dict.fromkeys(STEPS, "ran")
    for name in OUTPUTS:
        assert (folder / "out" / name).is_file(), name
    metrics = json.loads((folder / "out" / "metrics.json").read_text())
    assert set(metrics) == {"accuracy", "roc_auc", "f1", "rows"}
    assert metrics["accuracy"] > 0.85 and metrics["roc_auc"] > 0.9
    assert metrics["rows"] == 143  # a quarter of the 569 rows, stratified

    runs = lane.runs(EXPERIMENT)
    pipeline_runs = [r for r in runs if r.data.tags.get("nbmlops.kind") == "pipeline"]
    assert len(pipeline_runs) == 1
    pipe = pipeline_runs[0]
    assert pipe.info.status == "FINISHED"
    assert pipe.info.run_name == "breast-cancer"
    assert pipe.data.tags["nbmlops.run_key"] == report.run_key
    assert pipe.data.metrics["steps_ran"] == 4

    steps = step_runs(runs)
    assert sorted(steps) == sorted(STEPS)
    for name, found in steps.items():
        assert len(found) == 1, name
        (step,) = found
        assert step.info.status == "FINISHED", name
        assert step.info.run_name == name
        assert step.data.tags["mlflow.parentRunId"] == pipe.info.run_id, name
        assert step.data.tags["nbmlops.run_key"] == report.steps[name].run_key
    features_run = steps["features"][0]
    assert features_run.data.params["n_features"] == "10"
    assert features_run.data.params["raw_csv"] == str(folder / "out" / "raw.csv")

    # The train notebook's %%track cell: a child of the train step, with the model.
    train_run = steps["train"][0]
    fits = [r for r in runs if r.info.run_name == "fit-logreg"]
    assert len(fits) == 1
    fit = fits[0]
    assert fit.info.status == "FINISHED"
    assert fit.data.tags.get("mlflow.parentRunId") == train_run.info.run_id, (
        "the %%track run is not a child of its step run"
    )
    assert fit.data.params["C"] == "1.0" and fit.data.params["max_iter"] == "500"
    assert 0.85 < fit.data.metrics["cv_accuracy"] <= 1.0
    models = client.search_logged_models(
        [pipe.info.experiment_id], filter_string=f"source_run_id = '{fit.info.run_id}'"
    )
    assert [(m.name, str(m.status).rsplit(".", 1)[-1]) for m in models] == [("model", "READY")]
    # ... and the evaluate notebook's, a child of the evaluate step, with the holdout metrics.
    (holdout,) = [r for r in runs if r.info.run_name == "holdout-metrics"]
    assert holdout.data.tags.get("mlflow.parentRunId") == steps["evaluate"][0].info.run_id
    assert holdout.data.metrics["accuracy"] == pytest.approx(metrics["accuracy"])

    # --- nothing changed: every step is cached and nothing new reaches MLflow ---------------
    before = {r.info.run_id for r in lane.runs(EXPERIMENT)}
    report = run(yaml_path)
    assert report.ok, report.table()
    assert {n: s.status for n, s in report.steps.items()} == dict.fromkeys(STEPS, "cached")
    assert report.ran() == []
    assert {r.info.run_id for r in lane.runs(EXPERIMENT)} == before

    # --- one parameter of the features step changed: it and its downstream steps run -------
    text = yaml_path.read_text()
    assert text.count("n_features: 10") == 1
    yaml_path.write_text(text.replace("n_features: 10", "n_features: 8"))
    report = run(yaml_path)
    assert report.ok, report.table()
    assert {n: s.status for n, s in report.steps.items()} == {
        "load": "cached",
        "features": "ran",
        "train": "ran",
        "evaluate": "ran",
    }
    header = (folder / "out" / "train.csv").read_text().splitlines()[0]
    assert len(header.split(",")) == 8 + 2  # 8 measurements, the derived ratio, the target

    runs = lane.runs(EXPERIMENT)
    new = [r for r in runs if r.info.run_id not in before]
    pipe2 = [r for r in new if r.data.tags.get("nbmlops.kind") == "pipeline"]
    assert len(pipe2) == 1
    new_steps = step_runs(new)
    assert sorted(new_steps) == ["evaluate", "features", "train"]
    for name, found in new_steps.items():
        assert len(found) == 1, name
        assert found[0].data.tags["mlflow.parentRunId"] == pipe2[0].info.run_id, name
    assert new_steps["features"][0].data.params["n_features"] == "8"
    assert sorted(r.info.run_name for r in new if "nbmlops.step" not in r.data.tags) == [
        "breast-cancer",
        "fit-logreg",
        "holdout-metrics",
    ]
