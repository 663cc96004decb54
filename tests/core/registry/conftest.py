"""A project with real data versions and real tracked models, trained once per session:

* ``train@1`` / ``holdout@1``: frames with columns a, b, c and a binary ``label``;
* ``good``: LogisticRegression on a, b, c (accurate);
* ``weak``: the same, seeing only column a (less accurate);
* ``dummy``: DummyClassifier, always the majority class (poor).

Every test registers under its own model names, so tests share the models but not the
registry state. Tests build settings with ``zoo.settings(user=..., registry=...)``; the
requirements audit is off unless a test asks for it (it needs the network)."""

from __future__ import annotations

import os
import pickle
import shutil
import subprocess
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import yaml
from sklearn.compose import ColumnTransformer
from sklearn.dummy import DummyClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline

import nbmlops
from nbmlops.config import Settings, load_settings
from nbmlops.core.registry.models import ModelRegistry
from nbmlops.core.tracking.session import get_tracker, reset_tracker

FEATURES = ["a", "b", "c"]


def labelled_frame(n: int, seed: int, shift: float = 0.0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    df = pd.DataFrame({c: rng.normal(loc=shift, size=n) for c in FEATURES})
    df["label"] = ((df.a + 0.5 * df.b + 0.3 * rng.normal(size=n)) > 0).astype(int)
    return df


def _train_models() -> None:
    train = labelled_frame(400, seed=1)
    holdout = labelled_frame(300, seed=2)
    nbmlops.data.commit(train, "train", "training frame")
    nbmlops.data.commit(holdout, "holdout", "never trained on")
    with nbmlops.track("good", experiment="zoo"):
        X = train[FEATURES]
        y = train["label"]
        C = 1.0
        good = LogisticRegression(C=C).fit(X, y)
        acc = good.score(X, y)
    with nbmlops.track("weak", experiment="zoo"):
        X = train[FEATURES]
        y = train["label"]
        only_a = ColumnTransformer([("a", "passthrough", ["a"])])
        weak = make_pipeline(only_a, LogisticRegression()).fit(X, y)
        acc = weak.score(X, y)
    with nbmlops.track("dummy", experiment="zoo"):
        X = train[FEATURES]
        y = train["label"]
        dummy = DummyClassifier(strategy="most_frequent").fit(X, y)
        acc = dummy.score(X, y)
    assert acc < 0.7
    assert get_tracker().flush(180), get_tracker().shipper.stats.last_error


@dataclass
class Zoo:
    project: Path
    model_ids: dict[str, str] = field(default_factory=dict)
    run_ids: dict[str, str] = field(default_factory=dict)
    experiment_id: str = ""
    git_commit: str = ""

    def settings(self, user: str = "ana", registry: dict[str, Any] | None = None) -> Settings:
        reg = {"scan": {"pip_audit": "off"}, **(registry or {})}
        return load_settings(self.project, environ={}, user=user, registry=reg)

    def registry(self, user: str = "ana", registry: dict[str, Any] | None = None) -> ModelRegistry:
        return ModelRegistry(self.settings(user, registry))

    def client(self):
        from mlflow import MlflowClient

        return MlflowClient(self.settings().resolved_tracking_uri)

    def audit_entries(self):
        from nbmlops.core.audit import AuditLog

        return AuditLog(self.settings().audit_path).entries()

    def model_dir(self, variable: str, dest: Path) -> Path:
        """A copy of a logged model's folder."""
        import mlflow.artifacts

        logged = self.client().get_logged_model(self.model_ids[variable])
        local = mlflow.artifacts.download_artifacts(
            artifact_uri=logged.artifact_location,
            dst_path=str(dest),
            tracking_uri=self.settings().resolved_tracking_uri,
        )
        return Path(local)

    def log_folder(self, folder: Path, name: str, run_of: str = "good") -> str:
        """Log a (crafted) model folder as a new READY logged model of ``run_of``'s run."""
        client = self.client()
        logged = client.create_logged_model(
            self.experiment_id, name=name, source_run_id=self.run_ids[run_of]
        )
        client.log_model_artifacts(logged.model_id, str(folder))
        client.finalize_logged_model(logged.model_id, "READY")
        return logged.model_id


@pytest.fixture(scope="session")
def zoo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Zoo]:
    folder = tmp_path_factory.mktemp("registry") / "project"
    folder.mkdir()
    git = ["git", "-C", str(folder), "-c", "user.name=t", "-c", "user.email=t@example.org"]
    subprocess.run([*git, "init", "-q"], check=True)
    subprocess.run([*git, "commit", "-q", "--allow-empty", "-m", "start"], check=True)
    with pytest.MonkeyPatch.context() as mp:
        for var in list(os.environ):
            if var.startswith("NBMLOPS_") or var == "MLFLOW_TRACKING_URI":
                mp.delenv(var)
        mp.chdir(folder)
        reset_tracker()
        try:
            _train_models()
        finally:
            reset_tracker()
    z = Zoo(folder)
    z.git_commit = subprocess.run(
        [*git, "rev-parse", "HEAD"], capture_output=True, text=True, check=True
    ).stdout.strip()
    from nbmlops.core.lineage.graph import LineageGraph
    from nbmlops.core.lineage.store import LineageStore

    graph = LineageGraph(LineageStore(folder / ".nbmlops" / "lineage.db"))
    for var in ("good", "weak", "dummy"):
        node = graph.latest_model(var)
        assert node is not None, var
        z.model_ids[var] = graph.graph.nodes[node]["model_id"]
        z.run_ids[var] = graph.graph.nodes[node]["run_id"]
    z.experiment_id = z.client().get_experiment_by_name("zoo").experiment_id
    yield z


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:6]}"


class RunsCode:
    """Unpickling this runs a shell command: what a malicious model file does."""

    def __init__(self, command: str):
        self.command = command

    def __reduce__(self):
        return (os.system, (self.command,))


def malicious_copy(zoo: Zoo, dest: Path, marker: Path) -> Path:
    """A copy of ``good``'s folder whose model file is a pickle that would run
    ``touch marker`` when loaded (MLmodel points the sklearn flavour at it)."""
    folder = zoo.model_dir("good", dest)
    (folder / "model.pkl").write_bytes(pickle.dumps(RunsCode(f"touch {marker}")))
    (folder / "model.skops").unlink()
    spec = yaml.safe_load((folder / "MLmodel").read_text())
    spec["flavors"]["sklearn"].update(pickled_model="model.pkl", serialization_format="pickle")
    spec["flavors"]["python_function"]["model_path"] = "model.pkl"
    (folder / "MLmodel").write_text(yaml.safe_dump(spec))
    return folder


def copy_tree(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst
