"""Versions made straight in MLflow (no scan verdict, no digest) and versions whose tags say
"clean" are scanned before anything in them is imported, at start and at hot swap: a clean
one is served, one that would run code is refused with the reason, and never runs
(RELIABILITY 25, 26)."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import yaml

from nbmlops.core.registry.safety import files_digest
from nbmlops.exceptions import UnsafeModelError
from tests.core.registry.payloads import ISSUE_PAYLOADS, PAYLOADS, Payload
from tests.core.serving.conftest import frame, records, unique
from tests.core.serving.test_model_safety import loads  # noqa: F401  (a fixture)


def evil_folder(store, payload: Payload, dest: Path, marker: Path) -> Path:
    """A copy of model "a" whose sklearn flavour loads a pickle made of ``payload``."""
    folder = store.copy_of("a", dest)
    (folder / "model.pkl").write_bytes(payload.make(marker))
    (folder / "model.skops").unlink()
    spec = yaml.safe_load((folder / "MLmodel").read_text())
    spec["flavors"]["sklearn"].update(pickled_model="model.pkl", serialization_format="pickle")
    spec["flavors"]["sklearn"].pop("skops_trusted_types", None)
    spec["flavors"]["python_function"]["model_path"] = "model.pkl"
    (folder / "MLmodel").write_text(yaml.safe_dump(spec))
    return folder


def untagged(store, folder: Path, name: str | None = None) -> str:
    """A version made with MlflowClient alone (no nbmlops tags), aliased champion."""
    name = name or unique("raw")
    version = store.register_folder(name, folder)  # no digest, no verdict
    store.client.set_registered_model_alias(name, "champion", str(version))
    return name


@pytest.mark.parametrize("payload", PAYLOADS, ids=str)
def test_an_untagged_version_that_would_run_code_is_refused_at_start(
    serve,
    store,
    tmp_path,
    loads,  # noqa: F811
    payload,
):
    marker = tmp_path / "ran"
    name = untagged(store, evil_folder(store, payload, tmp_path / "model", marker))
    with pytest.raises(UnsafeModelError) as err:
        serve(f"{name}@champion")
    message = str(err.value)
    assert "refused by the security scan (it has no scan verdict)" in message
    assert f"imports {payload.offender} (" in message
    assert loads == [] and not marker.exists()


def test_an_untagged_clean_version_is_scanned_once_and_served(serve, store, tmp_path, monkeypatch):
    name = untagged(store, store.copy_of("a", tmp_path / "model"))
    rows = frame(3)
    first = serve(f"{name}@champion", project=tmp_path / "p")
    assert first.post(records(rows)).json()["predictions"] == store.expected("a", rows)
    first.server.stop()
    records_dir = tmp_path / "p" / ".nbmlops" / "serving-cache"
    [scanned] = list(records_dir.rglob("*.scan.json"))
    # a restart from the cache does not scan again (the record names these very files)
    from nbmlops.core.registry import scan

    calls = []
    real = scan.scan_model_dir
    monkeypatch.setattr(scan, "scan_model_dir", lambda *a, **k: calls.append(a) or real(*a, **k))
    again = serve(f"{name}@champion", project=tmp_path / "p")
    assert again.post(records(rows)).json()["predictions"] == store.expected("a", rows)
    assert calls == [] and scanned.is_file()


@pytest.mark.parametrize("payload", ISSUE_PAYLOADS, ids=str)
def test_a_clean_tag_and_a_matching_digest_are_not_reason_to_unpickle(
    serve,
    store,
    tmp_path,
    loads,  # noqa: F811
    payload,
):
    marker = tmp_path / "ran"
    folder = evil_folder(store, payload, tmp_path / "model", marker)
    name = unique("forged")
    version = store.register_folder(name, folder, files_digest(folder))
    store.client.set_model_version_tag(name, str(version), "nbmlops.scan", "clean")
    store.client.set_registered_model_alias(name, "champion", str(version))
    with pytest.raises(UnsafeModelError, match=r"refused by the security scan \(its tag says"):
        serve(f"{name}@champion")
    assert loads == [] and not marker.exists()


@pytest.mark.slow
@pytest.mark.parametrize("payload", ISSUE_PAYLOADS, ids=str)
def test_hot_swap_to_an_untagged_version_scans_it_first(serve, store, tmp_path, payload):
    marker = tmp_path / "ran"
    name = untagged(store, store.copy_of("a", tmp_path / "clean"))
    bad = store.register_folder(name, evil_folder(store, payload, tmp_path / "evil", marker))
    good = store.register_folder(name, store.copy_of("b", tmp_path / "b"))
    running = serve(f"{name}@champion", poll_seconds=0.1)
    rows = frame(2)

    store.client.set_registered_model_alias(name, "champion", str(bad))
    deadline = time.monotonic() + 60
    while "refused by the security scan" not in (running.gateway.router.last_error or ""):
        assert time.monotonic() < deadline, "the gateway never tried the untagged version"
        reply = running.post(records(rows))
        assert reply.status == 200 and reply.json()["version"] == 1
        time.sleep(0.05)
    health = running.get("/health").json()
    assert health["versions"] == [1] and payload.offender in health["last_error"]
    assert not marker.exists()

    store.client.set_registered_model_alias(name, "champion", str(good))  # clean, untagged
    while running.post(records(rows)).json()["version"] != good:
        assert time.monotonic() < deadline + 60, "the clean untagged version never served"
        time.sleep(0.05)
    assert running.post(records(rows)).json()["predictions"] == store.expected("b", rows)
    assert not marker.exists()
