"""POST /predict over real HTTP: the model's own answers, and bad input refused before it."""

from __future__ import annotations

import json

import pytest

from tests.core.serving.conftest import COLUMNS, frame, records


@pytest.fixture
def churn(store):
    return store.register()


@pytest.fixture
def spy(request):
    """Counts calls of the served model's predict function."""

    def install(running):
        model = running.model()
        calls = []
        inner = model.predict

        def counting(rows):
            calls.append(rows.n_rows)
            return inner(rows)

        model.predict = counting
        return calls

    return install


def test_predictions_equal_the_models_own(serve, store, churn):
    running = serve(f"{churn}@champion")
    rows = frame(25, seed=7)

    reply = running.post(records(rows))

    assert reply.status == 200
    answer = reply.json()
    assert answer["predictions"] == store.expected("a", rows)
    assert answer["model"] == churn and answer["version"] == 1
    assert reply.headers["x-model-version"] == "1"
    assert reply.headers["x-request-id"] == answer["request_id"]
    assert running.model().flavor == "sklearn"
    assert running.model().describe()["input"] == "array"  # same answers, checked at load


@pytest.mark.parametrize(
    "body",
    [
        lambda rows: {"records": records(rows)},
        lambda rows: {"dataframe_records": records(rows)},
        lambda rows: {"dataframe_split": json.loads(rows.to_json(orient="split", index=False))},
        lambda rows: {
            "dataframe_split": {
                "columns": COLUMNS[::-1],
                "data": rows[COLUMNS[::-1]].values.tolist(),
            }
        },
    ],
    ids=["records", "dataframe_records", "split", "split-reordered"],
)
def test_every_body_format_gives_the_same_answer(serve, store, churn, body):
    running = serve(f"{churn}@champion")
    rows = frame(12, seed=3)
    reply = running.post(body(rows))
    assert reply.status == 200, reply.body
    assert reply.json()["predictions"] == store.expected("a", rows)


def test_pyfunc_path_gives_the_same_answer(serve, store, churn):
    running = serve(f"{churn}@champion", direct=False)
    rows = frame(9, seed=5)
    reply = running.post(records(rows))
    assert running.model().flavor == "pyfunc"
    assert reply.json()["predictions"] == store.expected("a", rows)


def test_a_client_request_id_is_kept(serve, churn):
    running = serve(f"{churn}@champion")
    row = records(frame(1))
    assert running.post(row, {"X-Request-Id": "order-42.a"}).json()["request_id"] == "order-42.a"
    # an unsafe id is replaced, never echoed or logged
    reply = running.post(row, {"X-Request-Id": "bad id\u00e9<script>"})
    assert reply.json()["request_id"] != "bad id\u00e9<script>"


def _row(**change):
    row = {c: 0.5 for c in COLUMNS}
    row.update(change)
    return row


BAD = {
    "malformed JSON": (b'[{"f0": 1.0,', 400, None),
    "empty body": (b"", 400, None),
    "not UTF-8": (b'[{"f0": "\xff\xfe"}]', 400, None),
    "unknown field": (json.dumps([_row(f99=1.0)]).encode(), 422, "f99"),
    "missing field": (json.dumps([{c: 1.0 for c in COLUMNS[1:]}]).encode(), 422, "f0"),
    "wrong type": (json.dumps([_row(f3="abc")]).encode(), 422, "f3"),
    "boolean for a number": (json.dumps([_row(f4=True)]).encode(), 422, "f4"),
    "null": (json.dumps([_row(f5=None)]).encode(), 422, "f5"),
    "NaN": (json.dumps([_row(f6=float("nan"))]).encode(), 422, "f6"),
    "Infinity": (json.dumps([_row(f7=float("inf"))]).encode(), 422, "f7"),
    "a list for a number": (json.dumps([_row(f8=[1, 2])]).encode(), 422, "f8"),
    "extra field in split": (
        json.dumps(
            {"dataframe_split": {"columns": [*COLUMNS, "zz"], "data": [[1.0] * 11]}}
        ).encode(),
        422,
        "zz",
    ),
    "short split row": (
        json.dumps({"dataframe_split": {"columns": COLUMNS, "data": [[1.0] * 9]}}).encode(),
        422,
        None,
    ),
    "no rows": (b"[]", 422, None),
    "a scalar": (b"42", 422, None),
    "a row that is not an object": (b"[[1, 2, 3]]", 422, None),
    "unknown format": (json.dumps({"inputs": [_row()]}).encode(), 422, "inputs"),
    "two formats": (json.dumps({"records": [_row()], "x": 1}).encode(), 422, None),
    "deep nesting": (b"[" * 100_000 + b"]" * 100_000, 400, None),
}


def test_bad_input_is_refused_naming_the_field_and_the_model_is_never_called(serve, churn, spy):
    running = serve(f"{churn}@champion")
    calls = spy(running)
    client = running.http()
    for label, (body, status, field) in BAD.items():
        reply = client.post(body)
        assert reply.status == status, (label, reply.status, reply.body)
        answer = reply.json()
        assert answer["error"], label
        if field is not None:
            assert field in answer["fields"], (label, answer)
            assert repr(field) in answer["error"], (label, answer["error"])
    assert calls == []
    # and a good request on the same connection still works
    assert client.post([_row()]).status == 200
    assert calls == [1]
    metrics = running.get("/metrics").body.decode()
    assert 'nbmlops_request_errors_total{model="' in metrics and 'reason="invalid_input"' in metrics
    assert 'status="500"' not in metrics


def test_health_names_the_versions_served(serve, churn):
    running = serve(f"{churn}@champion")
    reply = running.get("/health")
    assert reply.status == 200
    health = reply.json()
    assert health["status"] == "ok" and health["versions"] == [1]
    (route,) = health["routes"]
    assert route["route"] == "main" and route["spec"] == f"{churn}@champion"
    assert route["digest_verified"] is True and route["columns"] == COLUMNS


def test_metrics_count_requests_per_version_and_route(serve, churn):
    running = serve(f"{churn}@champion")
    for _ in range(3):
        assert running.post([_row()]).status == 200
    running.post(b"{")
    text = running.get("/metrics").body.decode()
    labels = f'model="{churn}",route="main",status="200",version="1"'
    assert f"nbmlops_requests_total{{{labels}}} 3.0" in text
    assert (
        f'nbmlops_request_latency_seconds_count{{model="{churn}",route="main",version="1"}} 4.0'
        in text
    )
    assert 'nbmlops_predlog_rows_total{outcome="dropped"} 0.0' in text
    assert (
        f'nbmlops_served_model{{model="{churn}",route="main",spec="{churn}@champion",version="1"}} 1.0'
        in text
    )
