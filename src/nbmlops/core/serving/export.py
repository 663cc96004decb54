"""Export a registered model version for serving elsewhere: a KServe InferenceService or a
Docker build folder.

KServe (``--target kserve``) writes ``inferenceservice.yaml``: an InferenceService
(``serving.kserve.io/v1beta1``) whose predictor serves the MLflow model format from the
version's artifact location. KServe does canaries by rollout: apply the main manifest, then
``inferenceservice-canary.yaml`` (same name, the canary's storageUri and
``canaryTrafficPercent``): KServe keeps the previous revision for the rest of the traffic.

Docker (``--target docker``) writes ``Dockerfile`` and ``model/``: the version's files,
fetched and checked exactly as the gateway does (structure, recorded digest), installed with
the model's own ``requirements.txt`` on the Python version it was logged with, served by
``mlflow models serve`` on port 8080.
"""

from __future__ import annotations

import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from nbmlops.core.serving.errors import ExportError
from nbmlops.core.serving.loader import DIGEST_TAG, ModelLoader, ModelRef, parse_weighted

if TYPE_CHECKING:
    from nbmlops.config import Settings

TARGETS = ("kserve", "docker")
KSERVE_API = "serving.kserve.io/v1beta1"
CONTAINER_PORT = 8080


@dataclass
class ExportResult:
    target: str
    out: Path
    files: list[Path] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def k8s_name(name: str) -> str:
    """A DNS-1123 label from a model name (what Kubernetes accepts in metadata.name)."""
    label = re.sub(r"[^a-z0-9-]+", "-", name.lower()).strip("-")
    if not label or not label[0].isalpha():
        label = "model-" + label
    return label[:63].rstrip("-")


def _storage_uri(location: str) -> tuple[str, bool]:
    """(URI, is_local) for a version's artifact location."""
    if "://" in location:
        return location, location.startswith("file://")
    return Path(location).resolve().as_uri(), True


def _write(path: Path, text: str, force: bool) -> Path:
    if path.exists() and not force:
        raise ExportError(
            f"{path} already exists", fix="Choose another --out folder or pass --force."
        )
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)
    return path


def inference_service(
    name: str,
    storage_uri: str,
    labels: dict[str, str],
    canary_percent: float | None = None,
) -> dict[str, Any]:
    predictor: dict[str, Any] = {}
    if canary_percent is not None:
        predictor["canaryTrafficPercent"] = round(canary_percent)
    predictor["model"] = {
        "modelFormat": {"name": "mlflow"},
        "protocolVersion": "v2",
        "storageUri": storage_uri,
    }
    return {
        "apiVersion": KSERVE_API,
        "kind": "InferenceService",
        "metadata": {"name": name, "annotations": labels},
        "spec": {"predictor": predictor},
    }


def _export_kserve(
    loader: ModelLoader,
    ref: ModelRef,
    out: Path,
    canary: str | None,
    storage_uri: str | None,
    force: bool,
) -> ExportResult:
    import yaml

    result = ExportResult("kserve", out)
    resolved = loader.resolve(ref)
    location = loader.registry.download_uri(resolved.name, resolved.version)
    uri, local = _storage_uri(storage_uri or location)
    name = k8s_name(resolved.name)
    if canary:  # checked before anything is written
        cref, percent = parse_weighted(canary)
        cres = loader.resolve(cref)
        if cres.name != resolved.name or cres.version == resolved.version:
            raise ExportError(
                f"The canary {cref} resolves to {cres.name} v{cres.version}, and {ref} to "
                f"{resolved.name} v{resolved.version}: a canary must be another version of "
                "the same model",
                fix="Promote the new version to its own alias (e.g. @challenger) and name that.",
            )

    def notes_for(version: int, tags: dict[str, str]) -> dict[str, str]:
        return {
            "nbmlops.io/model": resolved.name,
            "nbmlops.io/version": str(version),
            "nbmlops.io/spec": str(ref),
            "nbmlops.io/files-digest": tags.get(DIGEST_TAG, ""),
        }

    main = inference_service(name, uri, notes_for(resolved.version, resolved.tags))
    result.files.append(
        _write(out / "inferenceservice.yaml", yaml.safe_dump(main, sort_keys=False), force)
    )
    if canary:
        clocation = loader.registry.download_uri(cres.name, cres.version)
        curi, clocal = _storage_uri(clocation)
        local = local or clocal
        manifest = inference_service(name, curi, notes_for(cres.version, cres.tags), percent)
        manifest["metadata"]["annotations"]["nbmlops.io/spec"] = str(cref)
        result.files.append(
            _write(
                out / "inferenceservice-canary.yaml",
                yaml.safe_dump(manifest, sort_keys=False),
                force,
            )
        )
        result.notes.append(
            f"Canary: kubectl apply -f inferenceservice.yaml, then -f inferenceservice-canary.yaml "
            f"({percent:g}% to {cref}, the rest to the previous revision)."
        )
    if local and storage_uri is None:
        result.notes.append(
            f"storageUri {uri} is a local folder the cluster cannot read: copy the model to "
            "object storage (s3://, gs://, pvc://) and pass --storage-uri."
        )
    return result


def _python_version(model: Path) -> str:
    import yaml

    env = model / "python_env.yaml"
    if env.is_file():
        spec = yaml.safe_load(env.read_text(encoding="utf-8")) or {}
        version = str(spec.get("python", "")).strip()
        if re.fullmatch(r"3\.\d+(\.\d+)?", version):
            return version
    import sys

    return f"{sys.version_info.major}.{sys.version_info.minor}"


DOCKERFILE = """\
# {name} version {version} ({spec}), exported by nbmlops.
# Files digest at registration: {digest}
FROM python:{python}-slim

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 \\
    MLFLOW_DISABLE_TELEMETRY=true DO_NOT_TRACK=true
WORKDIR /opt/ml

# The model's own requirements, as logged with it.
COPY model/requirements.txt /opt/ml/requirements.txt
RUN pip install --no-cache-dir -r /opt/ml/requirements.txt{mlflow_pin}

COPY model/ /opt/ml/model/
RUN useradd --system --uid 10001 model
USER 10001

EXPOSE {port}
HEALTHCHECK --interval=10s --timeout=3s --start-period=30s \\
    CMD python -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:{port}/ping')"
# mlflow's scoring server: POST /invocations, GET /ping. Inside the container it listens on
# all of the container's interfaces; publish it with e.g. docker run -p 127.0.0.1:{port}:{port}.
CMD ["mlflow", "models", "serve", "-m", "/opt/ml/model", "--env-manager", "local", \\
     "-h", "0.0.0.0", "-p", "{port}"]
"""


def _export_docker(loader: ModelLoader, ref: ModelRef, out: Path, force: bool) -> ExportResult:
    import importlib.metadata

    result = ExportResult("docker", out)
    resolved = loader.resolve(ref)
    cached, verified = loader.fetch(resolved)  # structure and digest checked, as when serving
    model_dir = out / "model"
    if model_dir.exists():
        if not force:
            raise ExportError(
                f"{model_dir} already exists", fix="Choose another --out folder or pass --force."
            )
        shutil.rmtree(model_dir)
    shutil.copytree(cached, model_dir, ignore=shutil.ignore_patterns("__pycache__"))
    requirements = model_dir / "requirements.txt"
    if not requirements.is_file():
        requirements.write_text("", encoding="utf-8")
    pinned = any(
        re.match(r"^\s*mlflow(-skinny)?\s*([=<>!~]|$)", line)
        for line in requirements.read_text(encoding="utf-8").splitlines()
    )
    mlflow_pin = (
        ""
        if pinned
        else f' \\\n    && pip install --no-cache-dir "mlflow=={importlib.metadata.version("mlflow")}"'
    )
    text = DOCKERFILE.format(
        name=resolved.name,
        version=resolved.version,
        spec=ref,
        digest=resolved.tags.get(DIGEST_TAG, "not recorded"),
        python=_python_version(model_dir),
        mlflow_pin=mlflow_pin,
        port=CONTAINER_PORT,
    )
    result.files.append(_write(out / "Dockerfile", text, force))
    result.files.append(model_dir)
    if not verified:
        result.notes.append(
            f"{resolved.name} version {resolved.version} has no recorded files digest: its files "
            "were checked for structure only."
        )
    result.notes.append(
        f"Build: docker build -t {k8s_name(resolved.name)}:{resolved.version} {out}"
    )
    return result


def export_deployment(
    settings: Settings,
    model: str,
    target: str,
    out: str | Path,
    *,
    canary: str | None = None,
    storage_uri: str | None = None,
    force: bool = False,
) -> ExportResult:
    """Write deployment files for ``model`` (``NAME@alias`` or ``NAME@VERSION``) to ``out``."""
    if target not in TARGETS:
        raise ExportError(
            f"Unknown export target {target!r}", fix=f"Use one of: {', '.join(TARGETS)}."
        )
    if canary and target != "kserve":
        raise ExportError(
            "A canary is exported only to KServe",
            fix="Drop --canary, or export with --target kserve.",
        )
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    loader = ModelLoader(settings)
    ref = ModelRef.parse(model)
    if target == "kserve":
        result = _export_kserve(loader, ref, out, canary, storage_uri, force)
    else:
        result = _export_docker(loader, ref, out, force)
    from nbmlops.core.audit import AuditLog

    AuditLog(settings.audit_path).append(
        "model.deploy.export",
        model,
        user=settings.resolved_user,
        details={"target": target, "out": str(out), "canary": canary},
    )
    return result
