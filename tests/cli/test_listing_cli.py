"""Listing commands as a user pipes them: whole values, ``--json``, ``runs ls``, and the
read-only registry commands answering from the SQLite store without importing MLflow.

One project (two runs, a registered model promoted twice, a dataset) is built once for the
module by a real subprocess, as a user's notebook would have left it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

BUILD = textwrap.dedent(
    """
    import mlflow, numpy as np, pandas as pd
    from sklearn.linear_model import LogisticRegression
    from nbmlops.api import data
    from nbmlops.api.registry import model_registry
    from nbmlops.api.tracking import open_store
    from nbmlops.config import load_settings

    s = load_settings()
    open_store(s)
    mlflow.set_tracking_uri(s.resolved_tracking_uri)
    mlflow.set_experiment("wine")
    X = np.random.default_rng(0).random((30, 3))
    y = (X[:, 0] > 0.5).astype(int)
    uris = []
    for i, acc in enumerate((0.81, 0.93)):
        with mlflow.start_run(run_name=f"train-{i}") as run:
            mlflow.log_param("C", i + 1)
            mlflow.log_metric("acc", acc)
            mlflow.sklearn.log_model(LogisticRegression().fit(X, y), name="model")
            uris.append(f"runs:/{run.info.run_id}/model")
    reg = model_registry(s)
    for uri in uris:
        reg.register(uri, "wine-clf")
    reg.promote("wine-clf", 1)
    reg.promote("wine-clf", 2)
    data.commit(pd.DataFrame({"a": [1, 2]}), "wine", "first")
    data.commit(pd.DataFrame({"a": [1, 3]}), "wine", "second")
    """
)


@pytest.fixture(scope="module")
def shop(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("listing") / "project"
    folder.mkdir()
    proc = subprocess.run(
        [sys.executable, "-c", BUILD], cwd=folder, capture_output=True, text=True, timeout=600
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return folder


def cli(project: Path, *args: str, importtime: bool = False) -> subprocess.CompletedProcess:
    """The real command with stdout a pipe (not a terminal)."""
    flags = ["-X", "importtime"] if importtime else []
    env = {k: v for k, v in os.environ.items() if not k.startswith("NBMLOPS_")}
    return subprocess.run(
        [sys.executable, *flags, "-m", "nbmlops.cli.main", *args],
        cwd=project, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip


def imported_mlflow(stderr: str) -> bool:
    return any(line.split("|")[-1].strip() == "mlflow" for line in stderr.splitlines())


def registry(project: Path):
    from nbmlops.api.registry import model_registry
    from nbmlops.config import load_settings

    return model_registry(load_settings(project))


def test_model_versions_and_history_answer_from_sqlite_without_importing_mlflow(shop: Path):
    proc = cli(shop, "model", "versions", "wine-clf", "--json", importtime=True)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert not imported_mlflow(proc.stderr)
    versions = json.loads(proc.stdout)
    expected = registry(shop).versions("wine-clf")  # what MLflow's client says
    assert [v["version"] for v in versions] == [1, 2]
    assert [v["aliases"] for v in versions] == [[], ["champion"]]
    assert versions == [json.loads(json.dumps(v.__dict__)) for v in expected]

    proc = cli(shop, "model", "history", "wine-clf", "--json", importtime=True)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert not imported_mlflow(proc.stderr)
    history = json.loads(proc.stdout)
    assert [(e["action"], e["version"], e["previous"]) for e in history] == [
        ("promote", 1, None),
        ("promote", 2, 1),
    ]
    assert history == [
        json.loads(json.dumps(e.__dict__)) for e in registry(shop).history("wine-clf")
    ]

    proc = cli(shop, "model", "versions", "wine-clff", "--json")  # a miss: MLflow words it
    assert proc.returncode == 2
    assert "No registered model 'wine-clff'" in proc.stderr and "wine-clf" in proc.stderr


def test_runs_ls_lists_filters_and_refuses_unknown_fields(shop: Path):
    proc = cli(shop, "runs", "ls", "--json", importtime=True)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert not imported_mlflow(proc.stderr)
    doc = json.loads(proc.stdout)
    assert doc["experiment"] == "wine"
    assert [r["name"] for r in doc["runs"]] == ["train-1", "train-0"]  # newest first
    assert [r["metrics.acc"] for r in doc["runs"]] == [0.93, 0.81]
    assert [r["params.C"] for r in doc["runs"]] == ["2", "1"]

    proc = cli(shop, "runs", "ls", "--experiment", "wine", "--filter", "acc>0.9", "--json")
    assert proc.returncode == 0, proc.stderr
    assert [r["name"] for r in json.loads(proc.stdout)["runs"]] == ["train-1"]

    proc = cli(shop, "runs", "ls", "--filter", "accuracy>0.9")
    assert proc.returncode == 2
    assert "Unknown field 'accuracy'" in proc.stderr and "Known fields: C, acc" in proc.stderr

    proc = cli(shop, "runs", "ls")  # a table, piped: run ids whole
    assert proc.returncode == 0, proc.stderr
    run_id = doc["runs"][0]["run_id"]
    assert any(run_id in line and "train-1" in line for line in proc.stdout.splitlines())


def test_piped_tables_print_whole_values(shop: Path):
    proc = cli(shop, "audit", "log")
    assert proc.returncode == 0, proc.stderr
    promoted = [line for line in proc.stdout.splitlines() if "promote" in line]  # | grep promote
    assert len(promoted) == 2, proc.stdout
    assert all("model.promote" in line and "models:/wine-clf@champion" in line for line in promoted)
    assert "…" not in proc.stdout

    proc = cli(shop, "model", "versions", "wine-clf")
    assert proc.returncode == 0, proc.stderr
    for v in registry(shop).versions("wine-clf"):
        assert v.run_id in proc.stdout  # not cut to 12 characters or "ced12…"


def test_every_listing_command_prints_one_json_document(shop: Path):
    for args, check in (
        (("audit", "log", "--json"), lambda d: {e["action"] for e in d} >= {"model.promote"}),
        (("data", "ls", "--json"), lambda d: [v["ref"] for v in d] == ["wine@2"]),
        (
            ("data", "log", "wine", "--json"),
            lambda d: [v["message"] for v in d] == ["first", "second"],
        ),
        (("model", "versions", "wine-clf", "--json"), lambda d: len(d) == 2),
        (("model", "history", "wine-clf", "--json"), lambda d: len(d) == 2),
        (("runs", "ls", "--json"), lambda d: len(d["runs"]) == 2),
    ):
        proc = cli(shop, *args)
        assert proc.returncode == 0, (args, proc.stderr)
        assert check(json.loads(proc.stdout)), (args, proc.stdout)
