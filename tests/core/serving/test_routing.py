"""Weighted canary routing with sticky keys, and shadow traffic that is logged, not returned."""

from __future__ import annotations

import math

import pytest

from nbmlops.core.serving.loader import ModelRef, parse_weighted
from nbmlops.core.serving.predlog import read_prediction_log
from nbmlops.core.serving.router import Route, RouteTable, sticky_position
from tests.core.serving.conftest import frame, records


def binomial_bounds(n: int, p: float, z: float = 4.0) -> tuple[float, float]:
    """A z-sigma interval for the observed share of n Bernoulli(p) draws."""
    sd = math.sqrt(p * (1 - p) / n)
    return p - z * sd, p + z * sd


def test_specs_parse():
    assert ModelRef.parse("churn@champion") == ModelRef("churn", alias="champion")
    assert ModelRef.parse("churn@3") == ModelRef("churn", version=3)
    assert ModelRef.parse("models:/churn/3") == ModelRef("churn", version=3)
    assert ModelRef.parse("churn") == ModelRef("churn", alias="champion")
    assert parse_weighted("churn@challenger:10") == (ModelRef("churn", alias="challenger"), 10.0)
    for bad in ("@x", "churn@", "churn@../x", "a/b@1"):
        with pytest.raises(ValueError):
            ModelRef.parse(bad)
    for bad in ("churn@challenger", "churn@challenger:x", "churn@challenger:100"):
        with pytest.raises(ValueError):
            parse_weighted(bad)


def test_sticky_positions_split_10000_keys_by_weight():
    main, canary = object(), object()
    table = RouteTable(
        (
            Route("main", ModelRef("m", "a"), 90.0, main),
            Route("canary", ModelRef("m", "b"), 10.0, canary),
        )  # type: ignore[arg-type]
    )
    keys = [f"user-{i}" for i in range(10_000)]
    share = sum(table.pick(k).model is canary for k in keys) / len(keys)
    low, high = binomial_bounds(len(keys), 0.10)
    assert low <= share <= high
    assert all(table.pick(k) is table.pick(k) for k in keys[:500])
    assert sticky_position("user-1") == sticky_position("user-1") != sticky_position("user-2")


@pytest.mark.slow
def test_a_90_10_canary_over_2000_requests(serve, store):
    name = store.register(aliases={"champion": 1, "challenger": 2})
    running = serve(f"{name}@champion", canaries=[f"{name}@challenger:10"])
    client = running.http()
    row = records(frame(1, seed=11))
    expected = {
        1: store.expected("a", frame(1, seed=11)),
        2: store.expected("b", frame(1, seed=11)),
    }

    served = []
    for _ in range(2000):
        reply = client.post(row)
        assert reply.status == 200
        answer = reply.json()
        assert answer["predictions"] == expected[answer["version"]]
        assert reply.headers["x-model-route"] == ("main" if answer["version"] == 1 else "canary")
        served.append(answer["version"])
    share = served.count(2) / len(served)
    low, high = binomial_bounds(len(served), 0.10)
    assert low <= share <= high, share

    # sticky: the same key always meets the same version
    by_key = {}
    for i in range(150):
        for _ in range(3):
            version = client.post(row, {"X-Request-Key": f"customer-{i}"}).json()["version"]
            by_key.setdefault(i, set()).add(version)
    assert all(len(v) == 1 for v in by_key.values())
    assert {2} in by_key.values() and {1} in by_key.values()

    health = running.get("/health").json()
    assert [(r["route"], r["version"], r["percent"]) for r in health["routes"]] == [
        ("main", 1, 90.0),
        ("canary", 2, 10.0),
    ]


def test_shadow_predictions_are_logged_not_returned(serve, store, tmp_path):
    name = store.register()
    running = serve(f"{name}@champion", shadows=[f"{name}@2"])
    rows = frame(4, seed=21)
    ids = []
    for i in range(5):
        reply = running.post(records(rows), {"X-Request-Id": f"req-{i}"})
        answer = reply.json()
        assert answer["version"] == 1 and answer["predictions"] == store.expected("a", rows)
        assert "shadow" not in reply.body.decode()
        ids.append(answer["request_id"])
    assert running.gateway.flush()

    log = read_prediction_log(running.settings.home_dir)
    shadow = log[log.route == "shadow"]
    main = log[log.route == "main"]
    assert sorted(shadow.request_id) == sorted(main.request_id) == sorted(ids)
    assert set(shadow.version) == {2} and set(main.version) == {1}
    assert all(out == store.expected("b", rows) for out in shadow.outputs)
    assert all(inp == records(rows) for inp in shadow.inputs)
    metrics = running.get("/metrics").body.decode()
    assert 'nbmlops_shadow_requests_total{outcome="scored"} 5.0' in metrics


def test_a_failing_shadow_never_breaks_the_response(serve, store):
    name = store.register()
    running = serve(f"{name}@champion", shadows=[f"{name}@2"])
    shadow_model = running.gateway.router.table.shadows[0].model

    def broken(rows):
        raise RuntimeError("shadow exploded")

    shadow_model.predict = broken
    for _ in range(3):
        assert running.post(records(frame(2))).status == 200
    assert running.gateway.flush()
    log = read_prediction_log(running.settings.home_dir)
    assert list(log[log.route == "shadow"].status) == [500, 500, 500]
    assert list(log[log.route == "main"].status) == [200, 200, 200]
