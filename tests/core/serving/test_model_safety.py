"""A model is checked before anything in it is imported (RELIABILITY 20): changed files,
paths leaving the folder, undeclared loader modules, a flagged scan. A bad new version never
replaces a good one that is serving."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import pytest
import yaml

from nbmlops.core.registry.safety import files_digest
from nbmlops.core.serving.errors import ModelNotFoundError
from nbmlops.exceptions import UnsafeModelError
from tests.core.serving.conftest import frame, records, unique


@pytest.fixture
def loads(monkeypatch):
    """Every model load: scikit-learn models loaded by the gateway itself, everything else by
    mlflow.pyfunc.load_model (there must be none for a refused model)."""
    import mlflow.pyfunc

    from nbmlops.core.serving import loader

    calls = []

    def recording(real):
        def record(*args, **kwargs):
            calls.append(args)
            return real(*args, **kwargs)

        return record

    monkeypatch.setattr(mlflow.pyfunc, "load_model", recording(mlflow.pyfunc.load_model))
    monkeypatch.setattr(loader, "load_sklearn_estimator", recording(loader.load_sklearn_estimator))
    return calls


def flip_a_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


def edit_mlmodel(folder: Path, change) -> None:
    spec = yaml.safe_load((folder / "MLmodel").read_text())
    change(spec)
    (folder / "MLmodel").write_text(yaml.safe_dump(spec))


def champion(store, folder: Path, digest: str | None) -> str:
    name = unique("unsafe")
    version = store.register_folder(name, folder, digest)
    store.client.set_registered_model_alias(name, "champion", str(version))
    return name


def test_a_tampered_model_file_is_refused_before_loading(serve, store, tmp_path, loads):
    folder = store.copy_of("a", tmp_path / "model")
    digest = files_digest(folder)
    flip_a_byte(folder / "model.skops")
    name = champion(store, folder, digest)

    with pytest.raises(UnsafeModelError, match="do not match the digest"):
        serve(f"{name}@champion")
    assert loads == []
    # nothing unchecked was left in the cache either
    assert not list((tmp_path / "project" / ".nbmlops" / "serving-cache").rglob("model.skops"))


@pytest.mark.parametrize("bad", ["../../outside.skops", "/etc/passwd", "sub/../../x.skops"])
def test_mlmodel_paths_leaving_the_folder_are_refused(serve, store, tmp_path, loads, bad):
    folder = store.copy_of("a", tmp_path / "model")
    (tmp_path / "outside.skops").write_bytes((folder / "model.skops").read_bytes())
    edit_mlmodel(folder, lambda s: s["flavors"]["sklearn"].__setitem__("pickled_model", bad))
    name = champion(store, folder, files_digest(folder))  # digest fine: structure is not

    with pytest.raises(UnsafeModelError, match="pickled_model"):
        serve(f"{name}@champion")
    assert loads == []


def test_an_undeclared_loader_module_is_never_imported(serve, store, tmp_path, loads, monkeypatch):
    marker = tmp_path / "imported"
    code = tmp_path / "code"
    code.mkdir()
    (code / "evil_loader_x.py").write_text(f"open({str(marker)!r}, 'w').write('ran')\n")
    monkeypatch.syspath_prepend(str(code))
    folder = store.copy_of("a", tmp_path / "model")
    edit_mlmodel(
        folder,
        lambda s: s["flavors"]["python_function"].__setitem__("loader_module", "evil_loader_x"),
    )
    name = champion(store, folder, files_digest(folder))

    with pytest.raises(UnsafeModelError, match="trusted_loader_modules"):
        serve(f"{name}@champion")
    assert loads == [] and not marker.exists() and "evil_loader_x" not in sys.modules


def test_a_version_flagged_by_the_scan_is_refused(serve, store, loads):
    name = store.register()
    store.client.set_model_version_tag(name, "1", "nbmlops.scan", "flagged")
    with pytest.raises(UnsafeModelError, match="flagged"):
        serve(f"{name}@champion")
    assert loads == []


def test_a_copy_changed_in_the_cache_is_fetched_again_not_served(
    serve, store, tmp_path, monkeypatch, caplog
):
    from nbmlops.core.serving import loader

    name = store.register()
    first = serve(f"{name}@champion", project=tmp_path / "p")
    first.server.stop()
    cached = next((tmp_path / "p" / ".nbmlops" / "serving-cache").rglob("model.skops"))
    flip_a_byte(cached)
    digests_at_load = []  # of the folder each time the gateway loads a model from it
    real = loader.load_sklearn_estimator

    def recording(path, mlmodel):
        digests_at_load.append(files_digest(path))
        return real(path, mlmodel)

    monkeypatch.setattr(loader, "load_sklearn_estimator", recording)

    again = serve(f"{name}@champion", project=tmp_path / "p")

    assert "failed its check and is fetched again" in caplog.text
    assert digests_at_load == [store.digests["a"]]  # loaded once, never the changed copy
    assert files_digest(cached.parent) == store.digests["a"]
    rows = frame(3)
    assert again.post(records(rows)).json()["predictions"] == store.expected("a", rows)


def test_unknown_models_and_aliases_are_named_with_what_exists(serve, store):
    name = store.register(aliases={"champion": 1, "challenger": 2})
    with pytest.raises(ModelNotFoundError, match=r"has no alias 'gold'") as err:
        serve(f"{name}@gold")
    assert "@challenger -> 2" in str(err.value) and "Versions: 1, 2" in str(err.value)
    with pytest.raises(ModelNotFoundError, match="has no version 7"):
        serve(f"{name}@7")
    with pytest.raises(ModelNotFoundError, match="No registered model 'nope-x'"):
        serve("nope-x@champion")


@pytest.mark.slow
def test_an_alias_moved_to_a_tampered_version_keeps_the_old_one_serving(serve, store, tmp_path):
    folder = store.copy_of("b", tmp_path / "model")
    digest = files_digest(folder)
    name = store.register(kinds=("a",))
    store.register_folder(name, folder, digest)  # version 2
    flip_a_byte(folder / "model.skops")  # changed after registration
    running = serve(f"{name}@champion", poll_seconds=0.1)
    rows = frame(2)

    store.client.set_registered_model_alias(name, "champion", "2")
    deadline = time.monotonic() + 10
    while "do not match" not in (running.gateway.router.last_error or ""):
        assert time.monotonic() < deadline, "the gateway never tried version 2"
        reply = running.post(records(rows))
        assert reply.status == 200 and reply.json()["version"] == 1
        time.sleep(0.05)
    health = running.get("/health").json()
    assert health["versions"] == [1] and "do not match" in health["last_error"]
    assert running.post(records(rows)).json()["predictions"] == store.expected("a", rows)
