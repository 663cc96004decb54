"""The side panel's REST API (nbmlops.server) on a real jupyter_server, over a real project:
cells tracked through nbmlops.api.tracking into the SQLite store, real registered models,
real gates and roles from nbmlops.yaml."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

import numpy as np
import pytest
import yaml
from tornado.httpclient import HTTPClientError

from nbmlops.api.registry import model_registry
from nbmlops.api.tracking import CellOrigin, get_tracker, reset_tracker
from nbmlops.config import load_settings

ROLES = {"viewer": ["*"], "developer": ["ana"], "approver": ["carol"], "admin": ["dave"]}
CONFIG = {
    "registry": {
        "scan": {"pip_audit": "off"},
        "models": {
            # no rule for free-*: open roles, no gates
            "gated*": {
                "roles": ROLES,
                "gates": {"champion": [{"metric": {"name": "acc", "min": 1.5}}]},
            },
        },
    }
}

TRAIN = """\
import matplotlib.pyplot as plt
from sklearn.linear_model import LogisticRegression
import nbmlops
C = 0.5
model = LogisticRegression(C=C).fit(X, y)
for step in range(3):
    nbmlops.log_metric("loss", 1.0 / (step + 1), step=step)
acc = model.score(X, y)
fig = plt.figure("curve")
plt.plot([1, 2, 3])
"""


@dataclass
class Store:
    root: Path  # the server's root and the project folder
    runs: dict[str, str] = field(default_factory=dict)  # run name -> MLflow run id


def track_cell(notebook: Path, source: str, ns: dict[str, Any], cell_id: str, count: int) -> str:
    """Track ``source`` as the %%track magic does for a cell of ``notebook``; its run key."""
    tracker = get_tracker()
    origin = CellOrigin(
        source_name=str(notebook), cell_id=cell_id, cell_index=count - 1, execution_count=count
    )
    run = tracker.begin(source, ns, origin=origin, name=f"{notebook.stem}-{count}")
    error = None
    try:
        # the magic executes the cell's code the same way, in the user's namespace
        exec(compile(source, f"<cell {cell_id}>", "exec"), ns)  # noqa: S102
    except BaseException as err:
        error = err
    tracker.end(run, ns, error)
    return run.key


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Store]:
    import matplotlib

    matplotlib.use("Agg")
    root = tmp_path_factory.mktemp("serverext") / "project"
    root.mkdir()
    (root / "nbmlops.yaml").write_text(yaml.safe_dump(CONFIG))
    (root / "sub").mkdir()
    saved = {k: os.environ.pop(k) for k in list(os.environ) if k.startswith("NBMLOPS_")}
    cwd = Path.cwd()
    os.chdir(root)
    reset_tracker()
    try:
        get_tracker(load_settings(root))
        rng = np.random.default_rng(0)
        X = rng.normal(size=(200, 3))
        y = (X[:, 0] > 0).astype(int)
        train = root / "train.ipynb"
        track_cell(train, TRAIN, {"X": X, "y": y}, "cell-train", 1)
        track_cell(train, "C = 2\nacc = sum([0.25])\n", {}, "cell-two", 2)
        track_cell(root / "sub" / "other.ipynb", "depth = 3\nacc = sum([0.75])\n", {}, "c-o", 1)
        # a second logged model: registering the same one twice is refused (it is version 1)
        track_cell(root / "retrain.ipynb", TRAIN, {"X": X, "y": y}, "cell-retrain", 1)
        assert get_tracker().flush(180), get_tracker().shipper.stats.last_error
        client = _client(root)
        ids = [e.experiment_id for e in client.search_experiments()]
        runs = {r.info.run_name: r.info.run_id for r in client.search_runs(ids)}
        registry = model_registry(load_settings(root, user="dave"))
        registry.register("runs:/{}/model".format(runs["train-1"]), "free-model")
        registry.register("runs:/{}/model".format(runs["retrain-1"]), "free-model")
        registry.register("runs:/{}/model".format(runs["train-1"]), "gated-model")
    finally:
        reset_tracker()
        os.chdir(cwd)
        os.environ.update(saved)
    yield Store(root, runs)


def _client(root: Path):
    from mlflow import MlflowClient

    return MlflowClient(load_settings(root).resolved_tracking_uri)


@pytest.fixture
def jp_root_dir(store: Store) -> Path:
    """The server serves the project folder."""
    return store.root


@pytest.fixture
def jp_server_config() -> dict[str, Any]:
    return {"ServerApp": {"jpserver_extensions": {"nbmlops.server": True}}}


async def get_json(jp_fetch, *path: str, **params: str) -> dict[str, Any]:
    response = await jp_fetch("nbmlops", "api", *path, params=params or None)
    assert response.code == 200
    return json.loads(response.body)


async def failure(jp_fetch, *path: str, method: str = "GET", body: Any = None, **params: str):
    """(status, JSON body) of a request that must fail."""
    kwargs: dict[str, Any] = {"method": method, "params": params or None}
    if method == "POST":
        kwargs["body"] = json.dumps(body) if not isinstance(body, str) else body
    with pytest.raises(HTTPClientError) as err:
        await jp_fetch("nbmlops", "api", *path, **kwargs)
    return err.value.code, json.loads(err.value.response.body)


async def post(jp_fetch, name: str, action: str, body: Any) -> tuple[int, dict[str, Any]]:
    try:
        response = await jp_fetch(
            "nbmlops", "api", "models", name, action, method="POST", body=json.dumps(body)
        )
    except HTTPClientError as err:
        return err.code, json.loads(err.response.body)
    return response.code, json.loads(response.body)


# --- reading -----------------------------------------------------------------------------------
async def test_a_notebooks_runs_come_from_the_store_newest_first(jp_fetch, store: Store):
    data = await get_json(jp_fetch, "runs", notebook="train.ipynb")
    assert data["total"] == 2
    names = [r["name"] for r in data["runs"]]
    assert names == ["train-2", "train-1"]
    first = data["runs"][1]
    assert first["run_id"] == store.runs["train-1"]
    assert first["status"] == "FINISHED"
    assert first["notebook"] == "train.ipynb"
    assert first["cell"] == "cell-train" and first["execution_count"] == 1
    assert first["params"]["C"] == "0.5"
    assert 0.5 < first["metrics"]["acc"] <= 1.0
    assert first["duration_s"] >= 0 and first["start_time"] <= first["end_time"]
    assert first["experiment"] == "train"

    other = await get_json(jp_fetch, "runs", notebook="sub/other.ipynb")
    assert [r["name"] for r in other["runs"]] == ["other-1"]
    assert other["runs"][0]["notebook"] == "sub/other.ipynb"
    # the panel's filter and limit
    hit = await get_json(jp_fetch, "runs", notebook="train.ipynb", filter="acc<0.3")
    assert [r["name"] for r in hit["runs"]] == ["train-2"] and hit["total"] == 1
    one = await get_json(jp_fetch, "runs", notebook="train.ipynb", limit="1")
    assert len(one["runs"]) == 1 and one["total"] == 2
    every = await get_json(jp_fetch, "runs", experiment="other")
    assert [r["name"] for r in every["runs"]] == ["other-1"]
    exps = await get_json(jp_fetch, "experiments")
    assert {e["name"]: e["runs"] for e in exps["experiments"]} == {
        "train": 2,
        "other": 1,
        "retrain": 1,
        "Default": 0,
    }


async def test_one_run_in_full_with_its_history_models_data_figures_and_code(
    jp_fetch, http_server_client, jp_auth_header, jp_base_url, store: Store
):
    run_id = store.runs["train-1"]
    run = (await get_json(jp_fetch, "runs", run_id))["run"]
    assert run["run_id"] == run_id and run["name"] == "train-1"
    assert [p[:2] for p in run["metrics_history"]["loss"]] == [[0, 1.0], [1, 0.5], [2, 1 / 3]]
    assert {d["name"] for d in run["data_inputs"]} >= {"X", "y"}
    assert all(len(d["digest"]) >= 8 for d in run["data_inputs"])
    model = next(m for m in run["models"] if m["name"] == "model")
    assert {(r["name"], r["version"]) for r in model["registered"]} == {
        ("free-model", 1),
        ("gated-model", 1),
    }
    assert "LogisticRegression(C=C)" in run["code"]
    assert [f["name"] for f in run["figures"]] == ["curve.png"]
    url = run["figures"][0]["url"]
    assert url == f"{jp_base_url}nbmlops/api/runs/{run_id}/artifacts/figures/curve.png"
    png = await http_server_client.fetch(url, headers=jp_auth_header)
    assert png.headers["Content-Type"] == "image/png" and png.body.startswith(b"\x89PNG")


async def test_models_versions_aliases_lineage_journal_and_alerts(jp_fetch, store: Store):
    models = {m["name"]: m for m in (await get_json(jp_fetch, "models"))["models"]}
    assert set(models) == {"free-model", "gated-model"}
    free = models["free-model"]
    assert [v["version"] for v in free["versions"]] == [2, 1]
    v1 = free["versions"][1]
    assert v1["run_id"] == store.runs["train-1"] and v1["status"] == "READY"
    assert v1["metrics"]["acc"] > 0.5 and v1["created"] > 0
    assert models["gated-model"]["protected_aliases"] == ["champion"]

    lineage = await get_json(jp_fetch, "lineage", store.runs["train-1"][:8])
    kinds = {n["kind"] for n in lineage["nodes"]}
    assert {"data", "run", "model"} <= kinds
    layer = {n["kind"]: n["layer"] for n in lineage["nodes"]}
    assert layer["data"] < layer["run"] < layer["model"]
    ids = {n["id"] for n in lineage["nodes"]}
    assert all(e["source"] in ids and e["target"] in ids for e in lineage["edges"])
    by_uri = await get_json(jp_fetch, "lineage", "models:/free-model/2")
    registered = [n for n in by_uri["nodes"] if n["kind"] == "registered"]
    assert [n["label"] for n in registered] == ["free-model v2"]
    assert registered[0]["layer"] == max(n["layer"] for n in by_uri["nodes"])

    journal = await get_json(jp_fetch, "journal")
    assert journal["store"].startswith("sqlite:///") and journal["store"].endswith("mlflow.db")
    assert journal["pending"] == 0 and journal["quarantined"] == 0
    assert journal["oldest_pending_s"] is None
    alerts = await get_json(jp_fetch, "alerts")
    assert alerts["alerts"] == [] and alerts["monitoring"] == "not configured"


# --- refusals ----------------------------------------------------------------------------------
async def test_no_token_no_data(http_server_client, jp_base_url, store: Store):
    for path in ("runs?notebook=train.ipynb", "models", "journal", f"runs/{store.runs['train-1']}"):
        with pytest.raises(HTTPClientError) as err:
            await http_server_client.fetch(f"{jp_base_url}nbmlops/api/{path}")
        assert err.value.code == 403, path
    with pytest.raises(HTTPClientError) as err:
        await http_server_client.fetch(
            f"{jp_base_url}nbmlops/api/models/free-model/promote",
            method="POST",
            body=json.dumps({"version": 1, "confirm": True}),
        )
    assert err.value.code == 403


async def test_bad_input_is_400_with_the_reason_and_the_fix(jp_fetch, store: Store):
    cases = [
        (("runs",), {"notebook": "../outside.ipynb"}, "inside the server's root"),
        (("runs",), {"notebook": "/etc/passwd"}, "inside the server's root"),
        (("runs",), {"notebook": "train.ipynb", "limit": "0"}, "limit"),
        (("runs",), {"notebook": "train.ipynb", "limit": "ten"}, "limit"),
        (("runs",), {"experiment": "nope"}, "Unknown experiment"),
        (("runs", "not-a-run-id"), {}, "Invalid run id"),
        (("lineage", "a b"), {}, "Invalid lineage node"),
    ]
    for path, params, text in cases:
        code, body = await failure(jp_fetch, *path, **params)
        assert code == 400, (path, params, body)
        assert text in body["error"] and body["fix"], body
    code, body = await failure(jp_fetch, "runs", "0" * 32)
    assert code == 404 and "No run" in body["error"]
    for body_sent, text in [
        ("not json", "not JSON"),
        ([1], "JSON object"),
        ({"version": "x", "confirm": True}, "Invalid model version"),
        ({"version": True}, "must be int or str"),
        ({"version": 1, "alias": "latest"}, "Invalid alias"),
        ({"version": 1, "confirm": "yes"}, "must be bool"),
        ({"version": 1, "colour": "red"}, "Unknown field 'colour'"),
        ({"alias": "champion"}, "'version' is missing"),
        ({"version": 1, "reason": "because"}, "'override' is not set"),
    ]:
        code, body = await failure(
            jp_fetch, "models", "free-model", "promote", method="POST", body=body_sent
        )
        assert code == 400 and text in body["error"], (body_sent, body)
    code, body = await failure(
        jp_fetch, "models", "bad..name", "promote", method="POST", body={"version": 1}
    )
    assert code == 400 and "Invalid model name" in body["error"]
    code, body = await failure(
        jp_fetch, "models", "no-such-model", "promote", method="POST", body={"version": 1}
    )
    assert code == 404 and body["fix"]


async def test_path_traversal_is_refused(
    jp_fetch, http_server_client, jp_auth_header, jp_base_url, store
):
    run_id = store.runs["train-1"]
    base = jp_base_url.rstrip("/")
    raw = [
        f"{base}/nbmlops/api/runs/{run_id}/artifacts/../../etc/passwd",
        f"{base}/nbmlops/api/runs/{run_id}/artifacts/figures/../../../../etc/passwd",
        f"{base}/nbmlops/api/runs/{run_id}/artifacts/" + quote("../../etc/passwd", safe=""),
        f"{base}/nbmlops/api/runs/{run_id}/artifacts/" + quote("/etc/passwd", safe=""),
        f"{base}/nbmlops/api/lineage/../../x",
        f"{base}/nbmlops/api/lineage/" + quote("../../x", safe=""),
        f"{base}/nbmlops/api/lineage/" + quote("models:/../../x/1", safe=""),
    ]
    for url in raw:
        with pytest.raises(HTTPClientError) as err:
            await http_server_client.fetch(url, headers=jp_auth_header)
        body = err.value.response.body
        assert err.value.code == 400, (url, body)
        assert b"root:" not in body, url
        assert json.loads(body)["fix"], url
    code, body = await failure(jp_fetch, "runs", run_id, "artifacts", "figures", "missing.png")
    assert code == 404 and "curve.png" in body["fix"]


# --- registry actions --------------------------------------------------------------------------
async def test_promote_obeys_confirmation_roles_and_gates(jp_fetch, store, monkeypatch):
    # champion is protected: it moves only once confirmed
    code, body = await post(jp_fetch, "free-model", "promote", {"version": 1})
    assert code == 409 and body["refused"] and body["confirm_required"]
    assert "changes production" in body["reasons"][0]
    code, body = await post(jp_fetch, "free-model", "promote", {"version": 1, "confirm": True})
    assert code == 200 and body["result"]["after"] == 1 and body["result"]["changed"]
    code, body = await post(jp_fetch, "free-model", "promote", {"version": 2, "confirm": True})
    assert code == 200 and body["result"]["before"] == 1 and body["result"]["after"] == 2
    models = {m["name"]: m for m in (await get_json(jp_fetch, "models"))["models"]}
    assert models["free-model"]["aliases"] == {"champion": 2}
    # rollback: confirmed, back to v1
    code, body = await post(jp_fetch, "free-model", "rollback", {"alias": "champion"})
    assert code == 409 and body["confirm_required"]
    code, body = await post(jp_fetch, "free-model", "rollback", {"confirm": True})
    assert code == 200 and body["result"]["action"] == "rollback" and body["result"]["after"] == 1

    # roles: a developer may not move champion of a gated model
    monkeypatch.setenv("NBMLOPS_USER", "ana")
    code, body = await post(jp_fetch, "gated-model", "promote", {"version": 1, "confirm": True})
    assert code == 409 and body["kind"] == "RoleDenied"
    assert "needs the approver role" in body["reasons"][0] and body["fix"]
    code, body = await post(jp_fetch, "gated-model", "approve", {"version": 1})
    assert code == 409 and body["kind"] == "RoleDenied"
    # gates: an approver passes the role, the metric gate refuses, every gate is listed
    monkeypatch.setenv("NBMLOPS_USER", "carol")
    code, body = await post(jp_fetch, "gated-model", "promote", {"version": 1, "confirm": True})
    assert code == 409 and body["refused"] and body["kind"] == "GateRefused"
    assert len(body["reasons"]) == 1 and body["reasons"][0].startswith("metric acc")
    assert [g["passed"] for g in body["gates"]] == [False]
    # an override is an admin's
    code, body = await post(
        jp_fetch,
        "gated-model",
        "promote",
        {"version": 1, "confirm": True, "override": True, "reason": "hotfix"},
    )
    assert code == 409 and body["kind"] == "RoleDenied" and "admin" in body["reasons"][0]
    code, body = await post(jp_fetch, "gated-model", "approve", {"version": 1, "reason": "ok"})
    assert code == 200 and body["result"]["new"] and body["result"]["user"] == "carol"
    models = {m["name"]: m for m in (await get_json(jp_fetch, "models"))["models"]}
    assert models["gated-model"]["aliases"] == {}
    assert models["gated-model"]["versions"][0]["approvals"] == ["carol"]
    assert models["gated-model"]["roles"] == ["viewer", "developer", "approver"]


async def test_cookie_logins_need_the_xsrf_token_to_post(
    jp_serverapp, http_server_client, jp_base_url, store: Store
):
    token = jp_serverapp.identity_provider.token
    login = await http_server_client.fetch(
        f"/?token={token}", follow_redirects=False, raise_error=False
    )
    cookies = login.headers.get_list("Set-Cookie")
    jar = "; ".join(c.split(";", 1)[0] for c in cookies)
    assert "username-" in jar
    # the cookie alone reads
    listed = await http_server_client.fetch(
        f"{jp_base_url}nbmlops/api/models", headers={"Cookie": jar}
    )
    assert listed.code == 200
    # but cannot post without the XSRF token
    url = f"{jp_base_url}nbmlops/api/models/free-model/approve"
    with pytest.raises(HTTPClientError) as err:
        await http_server_client.fetch(
            url, method="POST", body=json.dumps({"version": 1}), headers={"Cookie": jar}
        )
    assert err.value.code == 403
    xsrf = next(c.split(";", 1)[0].split("=", 1)[1] for c in cookies if c.startswith("_xsrf="))
    done = await http_server_client.fetch(
        url,
        method="POST",
        body=json.dumps({"version": 1}),
        headers={"Cookie": f"{jar}; _xsrf={xsrf}", "X-XSRFToken": xsrf},
    )
    assert done.code == 200


def test_the_database_read_lists_what_search_runs_lists(store: Store):
    """A tracking server is read through search_runs, a database store through its tables:
    the panel sees the same runs either way."""
    from nbmlops.api import run_rows, views

    settings = load_settings(store.root)
    client = views.store_client(settings)
    ids = [e.experiment_id for e in client.search_experiments()]
    for source in (str(store.root / "train.ipynb"), None):
        for limit in (1, 10):
            found = run_rows.notebook_rows(client, ids, source, limit)
            assert found is not None
            searched, total, _token = views._searched(client, ids, source, limit)
            assert found[1] == total
            assert [views.run_summary(r, {}, store.root) for r in found[0]] == [
                views.run_summary(r, {}, store.root) for r in searched
            ]
    names = {e.experiment_id: e.name for e in client.search_experiments()}
    counts = run_rows.count_runs(client)
    assert counts is not None
    assert {names[i]: n for i, n in counts.items()} == {"train": 2, "other": 1, "retrain": 1}
