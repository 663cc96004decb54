"""Promote and roll back while clients keep sending: no request fails, every logged row names
the version that answered it (RELIABILITY 16)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import pytest

from nbmlops.core.serving.predlog import read_prediction_log
from tests.core.serving.conftest import frame, records


def wait_until(check: Callable[[], bool], timeout: float, what: str) -> float:
    began = time.monotonic()
    while not check():
        if time.monotonic() - began > timeout:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.01)
    return time.monotonic() - began


@pytest.mark.slow
def test_promote_and_rollback_under_load_fail_no_request(serve, store):
    name = store.register(aliases={"champion": 1})
    running = serve(f"{name}@champion", poll_seconds=0.2)
    rows = frame(3, seed=5)
    body = records(rows)
    expected = {1: store.expected("a", rows), 2: store.expected("b", rows)}
    assert expected[1] != expected[2]

    answered: dict[str, int] = {}  # request id -> version in the response
    failures: list[str] = []
    latest: list[int] = [0]
    stop = threading.Event()

    def client(i: int) -> None:
        http = running.http()
        n = 0
        while not stop.is_set():
            rid = f"c{i}-{n}"
            n += 1
            try:
                reply = http.post(body, {"X-Request-Id": rid})
            except Exception as err:
                failures.append(f"{rid}: {err!r}")
                http = running.http()
                continue
            if reply.status != 200:
                failures.append(f"{rid}: HTTP {reply.status} {reply.body[:200]!r}")
                continue
            answer = reply.json()
            version = answer["version"]
            if answer["predictions"] != expected[version] or reply.headers[
                "x-model-version"
            ] != str(version):
                failures.append(f"{rid}: version {version} answered {answer['predictions']}")
            answered[rid] = version
            latest[0] = version
        http.close()

    threads = [threading.Thread(target=client, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    try:
        wait_until(lambda: len(answered) > 300, 20, "traffic on version 1")
        store.client.set_registered_model_alias(name, "champion", "2")  # promote
        promote = wait_until(lambda: latest[0] == 2, 10, "version 2 to serve")
        n_at_promote = len(answered)
        wait_until(lambda: len(answered) > n_at_promote + 300, 20, "traffic on version 2")
        store.client.set_registered_model_alias(name, "champion", "1")  # roll back
        rollback = wait_until(lambda: latest[0] == 1, 10, "version 1 to serve again")
        n_at_rollback = len(answered)
        wait_until(lambda: len(answered) > n_at_rollback + 300, 20, "traffic after rollback")
    finally:
        stop.set()
        for t in threads:
            t.join(30)

    assert failures == []
    versions = list(answered.values())
    assert versions.count(1) > 300 and versions.count(2) > 250
    assert promote < 5 and rollback < 5, (promote, rollback)

    assert running.gateway.flush()
    log = read_prediction_log(running.settings.home_dir)
    assert len(log) == len(answered)
    logged = dict(zip(log.request_id, log.version, strict=True))
    assert logged == answered  # every row names the version that served it
    assert set(log.status) == {200}

    history = running.get("/health").json()["swaps"]
    assert [(e["old_version"], e["new_version"]) for e in history] == [(1, 2), (2, 1)]
