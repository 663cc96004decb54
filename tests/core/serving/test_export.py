"""Deployment exports. No cluster and no Docker daemon run here: the cluster is faked by
structure checks, i.e. the manifests are parsed and every field KServe reads is checked, and
the Docker build folder is checked file by file (Dockerfile instructions, model files and
their recorded digest)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from nbmlops.core.registry.safety import files_digest
from nbmlops.core.serving.errors import ExportError
from nbmlops.core.serving.export import export_deployment, k8s_name
from nbmlops.exceptions import UnsafeModelError


@pytest.fixture
def settings(store, tmp_path):
    return store.settings(tmp_path / "project")


def test_kserve_manifest_points_at_the_versions_artifacts(store, settings, tmp_path):
    name = store.register(aliases={"champion": 2})
    result = export_deployment(settings, f"{name}@champion", "kserve", tmp_path / "out")

    (path,) = result.files
    manifest = yaml.safe_load(path.read_text())
    assert manifest["apiVersion"] == "serving.kserve.io/v1beta1"
    assert manifest["kind"] == "InferenceService"
    assert manifest["metadata"]["name"] == k8s_name(name)
    notes = manifest["metadata"]["annotations"]
    assert notes["nbmlops.io/version"] == "2" and notes["nbmlops.io/spec"] == f"{name}@champion"
    assert notes["nbmlops.io/files-digest"] == store.digests["b"]
    predictor = manifest["spec"]["predictor"]
    assert "canaryTrafficPercent" not in predictor
    assert predictor["model"]["modelFormat"] == {"name": "mlflow"}
    location = store.client.get_model_version_download_uri(name, "2")
    assert predictor["model"]["storageUri"] == location  # a file:// URI in this test store
    assert any("--storage-uri" in note for note in result.notes)  # local: says what to do


def test_kserve_canary_is_a_second_rollout_with_its_share(store, settings, tmp_path):
    name = store.register(aliases={"champion": 1, "challenger": 2})
    result = export_deployment(
        settings,
        f"{name}@champion",
        "kserve",
        tmp_path / "out",
        canary=f"{name}@challenger:10",
        storage_uri="s3://models/churn/1",
    )
    main, canary = (yaml.safe_load(p.read_text()) for p in result.files)
    assert main["metadata"]["name"] == canary["metadata"]["name"]
    assert main["spec"]["predictor"]["model"]["storageUri"] == "s3://models/churn/1"
    assert "canaryTrafficPercent" not in main["spec"]["predictor"]
    assert canary["spec"]["predictor"]["canaryTrafficPercent"] == 10
    assert canary["metadata"]["annotations"]["nbmlops.io/version"] == "2"
    assert canary["spec"]["predictor"]["model"]["storageUri"] == (
        store.client.get_model_version_download_uri(name, "2")
    )


def test_docker_folder_holds_the_checked_model_and_a_dockerfile(store, settings, tmp_path):
    name = store.register()
    out = tmp_path / "image"
    result = export_deployment(settings, f"{name}@1", "docker", out)

    assert files_digest(out / "model") == store.digests["a"]
    dockerfile = (out / "Dockerfile").read_text()
    lines = [line.strip() for line in dockerfile.splitlines()]
    assert "FROM python:3.11.7-slim" in lines
    assert "COPY model/requirements.txt /opt/ml/requirements.txt" in lines
    assert any(
        line.startswith("RUN pip install --no-cache-dir -r /opt/ml/requirements.txt")
        for line in lines
    )
    assert "COPY model/ /opt/ml/model/" in lines
    assert "USER 10001" in lines and "EXPOSE 8080" in lines
    cmd = dockerfile[dockerfile.index("CMD [") :]
    assert '"mlflow", "models", "serve", "-m", "/opt/ml/model"' in cmd
    assert "mlflow==" in (out / "model" / "requirements.txt").read_text()
    assert any("docker build" in note for note in result.notes)

    with pytest.raises(ExportError, match="already exists"):
        export_deployment(settings, f"{name}@1", "docker", out)
    export_deployment(settings, f"{name}@1", "docker", out, force=True)


def test_an_unsafe_model_is_not_exported(store, settings, tmp_path):
    folder = store.copy_of("a", tmp_path / "model")
    digest = files_digest(folder)
    (folder / "model.skops").write_bytes(b"not the model")
    name = f"tampered-{tmp_path.name[-6:]}"
    store.register_folder(name, folder, digest)
    with pytest.raises(UnsafeModelError):
        export_deployment(settings, f"{name}@1", "docker", tmp_path / "out")
    assert not (tmp_path / "out" / "model").exists()


def test_bad_requests_are_refused(store, settings, tmp_path: Path):
    name = store.register()
    with pytest.raises(ExportError, match="Unknown export target"):
        export_deployment(settings, f"{name}@1", "helm", tmp_path)
    with pytest.raises(ExportError, match="only to KServe"):
        export_deployment(settings, f"{name}@1", "docker", tmp_path, canary=f"{name}@2:10")
    assert k8s_name("Churn_Model v2") == "churn-model-v2"
    assert k8s_name("2fast") == "model-2fast"


def test_exports_and_serving_are_in_the_audit_log(store, settings, serve, tmp_path):
    """Deploy actions join register/promote/rollback in the hash-chained audit log."""
    from nbmlops.core.audit import AuditLog

    name = store.register(aliases={"champion": 1})
    export_deployment(settings, f"{name}@champion", "kserve", tmp_path / "out")
    running = serve(f"{name}@champion", project=tmp_path / "project")
    log = AuditLog(running.settings.audit_path)
    entries = [(e.action, e.target) for e in log.entries()]
    assert ("model.deploy.export", f"{name}@champion") in entries
    assert ("model.deploy.serve", f"{name}@champion") in entries
    assert log.verify().ok


def test_a_canary_of_the_deployed_version_is_refused_before_anything_is_written(
    store, settings, tmp_path
):
    """`nbmlops deploy export --canary` keeps the rule the Registry panel shows: the canary is
    another version of the same model."""
    name = store.register(aliases={"champion": 2, "challenger": 2})
    out = tmp_path / "out"
    with pytest.raises(ExportError, match="another version of the same model"):
        export_deployment(settings, f"{name}@champion", "kserve", out, canary=f"{name}@2:10")
    assert not out.exists() or not any(out.iterdir())


def test_the_canary_rule_lives_behind_the_front_door():
    from nbmlops.api.serving import kserve_canary
    from nbmlops.exceptions import UsageError

    aliases = {"champion": 1, "challenger": 2}
    assert kserve_canary("churn", "champion", aliases, 0) is None
    assert kserve_canary("churn", "champion", aliases, 20) == "churn@challenger:20"
    with pytest.raises(UsageError, match="needs @challenger set"):
        kserve_canary("churn", "challenger", aliases, 20)
    with pytest.raises(UsageError, match="needs @challenger set"):
        kserve_canary("churn", "champion", {"champion": 1}, 20)
    with pytest.raises(UsageError, match="same version"):
        kserve_canary("churn", "champion", {"champion": 2, "challenger": 2}, 20)
    with pytest.raises(UsageError, match="1 to 50"):
        kserve_canary("churn", "champion", aliases, 80)
