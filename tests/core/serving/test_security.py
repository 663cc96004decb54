"""Foreign Host or Origin headers are refused; secrets never reach a log (RELIABILITY 21)."""

from __future__ import annotations

import logging

import pytest

from nbmlops.core.serving.server import bind_loopback
from nbmlops.exceptions import UsageError
from tests.core.serving.conftest import frame, records

SECRET = "s3cr3t-T0KEN-value"


@pytest.fixture
def running(serve, store):
    return serve(f"{store.register()}@champion")


def test_foreign_hosts_and_origins_are_refused(running):
    body = records(frame(1))
    port = running.port
    refused = [
        {"Host": "evil.example"},
        {"Host": f"evil.example:{port}"},
        {"Host": "127.0.0.1:1"},  # the right name, another port
        {"Host": f"127.0.0.1.evil.example:{port}"},
        {"Host": f"localhost:{port}", "Origin": "http://evil.example"},
        {"Host": f"localhost:{port}", "Origin": f"http://127.0.0.1:{port}"},  # cross-origin too
        {"Host": f"localhost:{port}", "Origin": "null"},
    ]
    for headers in refused:
        reply = running.post(body, headers)
        assert reply.status == 403, headers
        assert running.get("/health", headers).status == 403, headers
    allowed = [
        {"Host": f"localhost:{port}"},
        {"Host": f"127.0.0.1:{port}"},
        {"Host": "localhost"},
        {"Host": f"127.0.0.1:{port}", "Origin": f"http://127.0.0.1:{port}"},
    ]
    for headers in allowed:
        assert running.post(body, headers).status == 200, headers
    metrics = running.get("/metrics").body.decode()
    assert 'nbmlops_rejected_requests_total{reason="host"} 8.0' in metrics
    assert 'nbmlops_rejected_requests_total{reason="origin"} 6.0' in metrics


def test_allowed_hosts_can_be_added(serve, store):
    running = serve(f"{store.register()}@champion", allowed_hosts=("model.internal",))
    assert running.post(records(frame(1)), {"Host": f"model.internal:{running.port}"}).status == 200
    assert running.post(records(frame(1)), {"Host": "other.internal"}).status == 403


def test_secrets_never_reach_the_logs(running, caplog):
    caplog.set_level(logging.DEBUG)
    headers = {
        "Authorization": f"Bearer {SECRET}",
        "Cookie": f"session={SECRET}",
        "X-Api-Key": SECRET,
        "Proxy-Authorization": f"Basic {SECRET}",
    }
    client = running.http()
    assert (
        client.request("POST", f"/predict?token={SECRET}", records(frame(1)), headers).status == 200
    )
    assert client.request("POST", f"/predict?token={SECRET}", b"{", headers).status == 400
    assert client.request("POST", "/predict", [{"x": 1}], headers).status == 422
    assert running.post(records(frame(1)), {**headers, "Host": "evil.example"}).status == 403
    assert running.gateway.flush()

    home = running.settings.home_dir
    for path in (home / "predictions").iterdir():
        assert SECRET.encode() not in path.read_bytes(), path
    assert SECRET not in caplog.text
    assert SECRET not in running.get("/metrics").body.decode()
    assert SECRET not in running.get("/health").body.decode()


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "192.168.1.10", "example.com"])
def test_the_gateway_binds_to_loopback_only(host):
    with pytest.raises(UsageError, match="loopback"):
        bind_loopback(host, 0)
