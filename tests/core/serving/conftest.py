"""Real parts for the gateway's tests: an MLflow SQLite registry holding two logged
scikit-learn models (logged once per session with ``mlflow.sklearn.log_model``), registered
versions with their files digest recorded, and gateways served by real uvicorn servers on
127.0.0.1 in background threads, spoken to over real HTTP (``http.client``)."""

from __future__ import annotations

import http.client
import json
import os
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from nbmlops.config import Settings, load_settings
from nbmlops.core.registry.safety import files_digest
from nbmlops.core.serving.app import Gateway, GatewayConfig
from nbmlops.core.serving.loader import preload_model_libraries
from nbmlops.core.serving.server import GatewayServer

preload_model_libraries()  # as `nbmlops serve` does: skops before mlflow (seconds faster)

COLUMNS = [f"f{i}" for i in range(10)]


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def frame(n: int, seed: int = 1) -> pd.DataFrame:
    return pd.DataFrame(np.random.default_rng(seed).normal(size=(n, 10)), columns=COLUMNS)


@dataclass
class ModelStore:
    """A registry on SQLite with two logged models: "a" and "b" predict differently."""

    root: Path
    uri: str
    client: Any
    sources: dict[str, str] = field(default_factory=dict)
    estimators: dict[str, Any] = field(default_factory=dict)
    folders: dict[str, Path] = field(default_factory=dict)  # a clean copy of each model
    digests: dict[str, str] = field(default_factory=dict)
    run_ids: dict[str, str] = field(default_factory=dict)
    model_ids: dict[str, str] = field(default_factory=dict)

    def settings(self, project: Path, **overrides: Any) -> Settings:
        project.mkdir(parents=True, exist_ok=True)
        return load_settings(project, environ={}, **{"tracking_uri": self.uri, **overrides})

    def register(
        self,
        name: str | None = None,
        kinds: tuple[str, ...] = ("a", "b"),
        aliases: dict[str, int] | None = None,
        digest: bool = True,
    ) -> str:
        """A new registered model whose versions 1, 2, ... are the given logged models."""
        name = name or unique("churn")
        self.client.create_registered_model(name)
        for kind in kinds:
            # The storage location, not models:/m-...: MLflow resolves a logged-model source
            # through the process-wide tracking URI, not this client's.
            mv = self.client.create_model_version(
                name, self.sources[kind], run_id=self.run_ids[kind], model_id=self.model_ids[kind]
            )
            if digest:
                self.client.set_model_version_tag(
                    name, mv.version, "nbmlops.files_digest", self.digests[kind]
                )
        for alias, version in (aliases if aliases is not None else {"champion": 1}).items():
            self.client.set_registered_model_alias(name, alias, str(version))
        return name

    def register_folder(self, name: str, folder: Path, digest: str | None = None) -> int:
        """A version made from a model folder on disk (for models changed on purpose)."""
        try:
            self.client.create_registered_model(name)
        except Exception:
            pass
        mv = self.client.create_model_version(name, str(folder))
        if digest is not None:
            self.client.set_model_version_tag(name, mv.version, "nbmlops.files_digest", digest)
        return int(mv.version)

    def copy_of(self, kind: str, dest: Path) -> Path:
        shutil.copytree(self.folders[kind], dest)
        return dest

    def expected(self, kind: str, rows: pd.DataFrame) -> list[Any]:
        return self.estimators[kind].predict(rows).tolist()


_STORES: list[ModelStore] = []  # one per session, also when another folder imports the fixture


@pytest.fixture(scope="session")
def store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ModelStore]:
    if _STORES:
        yield _STORES[0]
        return
    import mlflow
    import mlflow.sklearn
    from mlflow import MlflowClient
    from sklearn.linear_model import LogisticRegression

    root = tmp_path_factory.mktemp("registry")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    client = MlflowClient(uri)
    exp = client.create_experiment("serving", artifact_location=(root / "artifacts").as_uri())
    ms = ModelStore(root, uri, client)
    X = frame(400, seed=0)
    labels = {"a": (X.f0 + X.f1 > 0), "b": (X.f2 - X.f3 > 0)}
    # log_model needs the fluent API; set_tracking_uri also sets MLFLOW_TRACKING_URI in the
    # environment, so both are put back as they were for the tests that follow.
    from mlflow.tracking._tracking_service.utils import _use_tracking_uri

    env_before = os.environ.get("MLFLOW_TRACKING_URI")
    with _use_tracking_uri(uri):
        for kind, y in labels.items():
            est = LogisticRegression().fit(X, y.astype(int))
            with mlflow.start_run(experiment_id=exp):
                info = mlflow.sklearn.log_model(
                    est, name="model", input_example=X.head(3), pip_requirements=["scikit-learn"]
                )
            logged = client.get_logged_model(info.model_id)
            ms.sources[kind] = logged.artifact_location
            ms.run_ids[kind] = info.run_id
            ms.model_ids[kind] = info.model_id
            ms.estimators[kind] = est
            # Like the registry: the digest of the files as downloaded from the model's location.
            folder = root / "clean" / kind
            folder.parent.mkdir(exist_ok=True)
            with tempfile.TemporaryDirectory() as tmp:
                local = mlflow.artifacts.download_artifacts(
                    artifact_uri=logged.artifact_location, dst_path=tmp, tracking_uri=uri
                )
                shutil.copytree(local, folder)
            ms.folders[kind] = folder
            ms.digests[kind] = files_digest(folder)
    if env_before is not None:
        os.environ["MLFLOW_TRACKING_URI"] = env_before
    _STORES.append(ms)
    yield ms


def _reply(resp: http.client.HTTPResponse) -> Reply:
    return Reply(resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read())


@dataclass
class Reply:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


class HttpClient:
    """A persistent HTTP/1.1 connection (keep-alive), as a real client would hold."""

    def __init__(self, port: int, host: str = "127.0.0.1", timeout: float = 30.0):
        self.conn = http.client.HTTPConnection(host, port, timeout=timeout)

    def request(
        self, method: str, path: str, body: Any = None, headers: dict[str, str] | None = None
    ) -> Reply:
        data = body if body is None or isinstance(body, bytes) else json.dumps(body).encode()
        hdrs = {"Content-Type": "application/json", **(headers or {})}
        self.conn.request(method, path, body=data, headers=hdrs)
        return _reply(self.conn.getresponse())

    def post(
        self, body: Any, headers: dict[str, str] | None = None, path: str = "/predict"
    ) -> Reply:
        return self.request("POST", path, body, headers)

    def get(self, path: str, headers: dict[str, str] | None = None) -> Reply:
        return self.request("GET", path, None, headers)

    def close(self) -> None:
        self.conn.close()


@dataclass
class Running:
    gateway: Gateway
    server: GatewayServer
    settings: Settings

    @property
    def port(self) -> int:
        return self.server.port

    @property
    def url(self) -> str:
        return self.server.url

    def http(self) -> HttpClient:
        return HttpClient(self.port)

    def post(self, body: Any, headers: dict[str, str] | None = None) -> Reply:
        client = self.http()
        try:
            return client.post(body, headers)
        finally:
            client.close()

    def get(self, path: str, headers: dict[str, str] | None = None) -> Reply:
        client = self.http()
        try:
            return client.get(path, headers)
        finally:
            client.close()

    def model(self, route: int = 0) -> Any:
        return self.gateway.router.table.routes[route].model


@pytest.fixture
def serve(store: ModelStore, tmp_path: Path) -> Iterator[Any]:
    """Start a gateway: ``serve("NAME@champion", canaries=[...], shadows=[...], **config)``
    (``project=`` and ``tracking_uri=`` choose the project folder and the registry)."""
    servers: list[GatewayServer] = []

    def start(
        main: str,
        canaries: list[str] | tuple[str, ...] = (),
        shadows: list[str] | tuple[str, ...] = (),
        project: Path | None = None,
        tracking_uri: str | None = None,
        **config: Any,
    ) -> Running:
        config.setdefault("poll_seconds", 0)
        overrides = {"tracking_uri": tracking_uri} if tracking_uri else {}
        settings = store.settings(project or tmp_path / "project", **overrides)
        gateway = Gateway(settings, main, list(canaries), list(shadows), GatewayConfig(**config))
        gateway.start()
        try:
            server = GatewayServer(gateway, port=0).start()
        except BaseException:
            gateway.close()
            raise
        servers.append(server)
        return Running(gateway, server, settings)

    yield start
    for server in servers:
        server.stop()


def records(rows: pd.DataFrame) -> list[dict[str, float]]:
    return rows.to_dict(orient="records")
