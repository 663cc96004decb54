"""A restart serves the cache's checked copy at once, then the registry has its say: an alias
moved while the gateway was down is followed, a version flagged meanwhile is withdrawn, and a
registry that cannot be reached does not stop a restart (its copy was checked)."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from nbmlops.core.serving.cache import ServingCache
from nbmlops.core.serving.registry import ModelRef, RegistryWorker, ResolvedVersion
from tests.core.serving.conftest import frame, records


def wait_until(check: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.05)


def restart(serve, main: str, project: Path, **config):
    """Serve once (filling the cache), stop, and return a function that serves again."""
    first = serve(main, project=project, **config)
    assert first.gateway.router.confirmed  # a start without a cache asks the registry
    first.server.stop()
    return lambda: serve(main, project=project, **config)


def test_a_restart_serves_the_cached_version_and_the_registry_confirms_it(serve, store, tmp_path):
    name = store.register(aliases={"champion": 2})
    again = restart(serve, f"{name}@champion", tmp_path / "p")
    copy = next((tmp_path / "p" / ".nbmlops" / "serving-cache").glob("churn-*/2"))
    inode = copy.stat().st_ino

    running = again()

    assert running.model().path == copy and copy.stat().st_ino == inode  # not fetched again
    rows = frame(4)
    answer = running.post(records(rows)).json()
    assert answer["version"] == 2 and answer["predictions"] == store.expected("b", rows)
    wait_until(lambda: running.get("/health").json()["confirmed"], 30, "the registry")
    health = running.get("/health").json()
    assert health["versions"] == [2] and health["swaps"] == [] and health["last_error"] is None


def test_a_restart_does_not_need_the_registry(serve, store, tmp_path):
    name = store.register(aliases={"champion": 1})
    db = tmp_path / "own.db"  # a registry of its own: a copy of the session's
    src, dst = sqlite3.connect(store.root / "mlflow.db"), sqlite3.connect(db)
    src.backup(dst)
    src.close()
    dst.close()
    uri = f"sqlite:///{db}"
    again = restart(serve, f"{name}@champion", tmp_path / "p", tracking_uri=uri, poll_seconds=0.2)
    db.write_bytes(b"this is not a database " * 100)  # the registry cannot be read any more
    RegistryWorker.shared(uri).close()

    running = again()

    rows = frame(3)
    assert running.post(records(rows)).json()["predictions"] == store.expected("a", rows)
    wait_until(lambda: running.gateway.router.poll_errors > 0, 60, "a failed look-up")
    health = running.get("/health").json()
    assert health["status"] == "ok" and not health["confirmed"]
    assert health["versions"] == [1] and "resolving" in health["last_error"]
    assert running.post(records(rows)).status == 200  # still serving


def test_an_alias_moved_while_the_gateway_was_down_is_followed(serve, store, tmp_path):
    name = store.register(aliases={"champion": 1})
    again = restart(serve, f"{name}@champion", tmp_path / "p")
    store.client.set_registered_model_alias(name, "champion", "2")  # while it is down

    running = again()  # poll_seconds=0: confirming the cache's answer happens anyway

    wait_until(lambda: running.model().version == 2, 30, "version 2 to serve")
    rows = frame(5)
    answer = running.post(records(rows)).json()
    assert answer["version"] == 2 and answer["predictions"] == store.expected("b", rows)
    health = running.get("/health").json()
    assert health["confirmed"] and health["versions"] == [2]
    assert [(e["old_version"], e["new_version"]) for e in health["swaps"]] == [(1, 2)]
    cache = running.gateway.loader.cache
    assert cache.read_alias(name, "champion") == 2  # the next start serves 2 at once


def test_a_version_flagged_while_the_gateway_was_down_is_withdrawn(serve, store, tmp_path):
    name = store.register(aliases={"champion": 1})
    again = restart(serve, f"{name}@champion", tmp_path / "p", poll_seconds=0.2)
    store.client.set_model_version_tag(name, "1", "nbmlops.scan", "flagged")

    running = again()

    wait_until(lambda: running.get("/health").json()["status"] == "refused", 30, "withdrawal")
    assert "flagged" in running.get("/health").json()["error"]
    refused = running.post(records(frame(1)))
    assert refused.status == 503 and "flagged" in refused.json()["error"]

    store.client.set_registered_model_alias(name, "champion", "2")  # a version that passes
    wait_until(lambda: running.get("/health").json()["status"] == "ok", 60, "version 2")
    rows = frame(2)
    assert running.post(records(rows)).json()["predictions"] == store.expected("b", rows)


def test_a_fixed_version_is_served_from_the_cache_too(serve, store, tmp_path):
    name = store.register(aliases={})
    again = restart(serve, f"{name}@2", tmp_path / "p")

    running = again()

    rows = frame(2)
    assert running.post(records(rows)).json()["predictions"] == store.expected("b", rows)
    wait_until(lambda: running.gateway.router.confirmed, 30, "the registry")


def test_cache_records_belong_to_one_registry(tmp_path):
    one = ServingCache(tmp_path, "sqlite:///one.db")
    other = ServingCache(tmp_path, "http://tracking:5000")
    resolved = ResolvedVersion("churn", 3, {"nbmlops.files_digest": "abc"}, "file:///x", "r1")
    one.version_dir("churn", 3).mkdir(parents=True)
    one.write_version(resolved)
    one.remember(ModelRef("churn", alias="champion"), resolved)

    assert one.lookup(ModelRef.parse("churn@champion")) == resolved
    assert one.lookup(ModelRef.parse("churn@3")) == resolved
    assert other.lookup(ModelRef.parse("churn@champion")) is None
    assert other.lookup(ModelRef.parse("churn@3")) is None
    (tmp_path / "churn" / "@champion.json").write_text("{not json")
    assert one.lookup(ModelRef.parse("churn@champion")) is None


@pytest.mark.parametrize("which", ["champion", "7"])
def test_the_registry_helper_names_what_is_missing(store, which):
    name = store.register(aliases={"champion": 1, "challenger": 2})
    worker = RegistryWorker.shared(store.uri)
    from nbmlops.core.serving.errors import ModelNotFoundError

    with pytest.raises(ModelNotFoundError) as err:
        worker.resolve(ModelRef.parse(f"{name}@{'gold' if which == 'champion' else which}"))
    assert "Versions: 1, 2" in str(err.value) and "@challenger -> 2" in str(err.value)
    assert worker.resolve(ModelRef.parse(f"{name}@challenger")).version == 2


def test_a_gateway_can_ask_the_registry_in_its_own_process(serve, store, tmp_path):
    name = store.register(aliases={"champion": 1})
    again = restart(serve, f"{name}@champion", tmp_path / "p", registry_process=False)
    store.client.set_registered_model_alias(name, "champion", "2")

    running = again()

    assert running.gateway.registry_worker is None
    wait_until(lambda: running.model().version == 2, 30, "version 2 to serve")
    rows = frame(2)
    assert running.post(records(rows)).json()["predictions"] == store.expected("b", rows)


def test_a_registry_helper_that_cannot_start_says_why(store, tmp_path, monkeypatch):
    broken = tmp_path / "site" / "mlflow"
    broken.mkdir(parents=True)
    (broken / "__init__.py").write_text("raise ImportError('this mlflow is broken on purpose')\n")
    monkeypatch.setenv("PYTHONPATH", str(broken.parent))
    worker = RegistryWorker(store.uri)  # not the shared one: a helper of its own
    from nbmlops.core.serving.errors import ServingError

    try:
        with pytest.raises(ServingError, match="broken on purpose"):
            worker.resolve(ModelRef.parse("anything@champion"))
        assert worker.started == 2  # tried once more with a new helper
    finally:
        worker.close()


def test_an_idle_registry_helper_exits_and_the_next_question_starts_another(store):
    name = store.register(aliases={"champion": 2})
    worker = RegistryWorker(store.uri, idle_exit=0.5)
    try:
        assert worker.resolve(ModelRef.parse(f"{name}@champion")).version == 2
        wait_until(lambda: not worker.running, 30, "the idle helper to exit")
        assert worker.resolve(ModelRef.parse(f"{name}@champion")).version == 2
        assert worker.started == 2
    finally:
        worker.close()
