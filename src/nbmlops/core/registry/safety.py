"""Structural safety of an MLflow model folder, checked before anything in it is imported.

Loading an MLflow model runs code: pyfunc imports the ``loader_module`` its MLmodel file
names, adds its ``code`` paths to ``sys.path``, and unpickles its files. So before loading we
read MLmodel as plain YAML and refuse a model whose:

* paths (model_path, pickled_model, data, code, conda/virtualenv/requirements files, ...) are
  absolute, contain ``..`` or lead (through symlinks too) outside the model's folder;
* ``python_function.loader_module`` is not one of MLflow's own flavours (``mlflow.*``) and was
  not declared trusted by the project (``trusted_loader_modules`` in nbmlops.yaml);
* ships ``code`` paths without that same declaration;
* files no longer match the digest recorded when the model was registered.

Pickle *content* (what it would import) is scanned separately by the registry's scanner
(:mod:`nbmlops.core.registry.scan`), before every load as well as at registration.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nbmlops.exceptions import UnsafeModelError

_PATH_KEYS = {
    "model_path",
    "pickled_model",
    "data",
    "code",
    "conda",
    "virtualenv",
    "python_env",
    "requirements",
    "model_code_path",
    "artifacts",
    "path",
    "config",
    "saved_input_example_info",
}


@dataclass
class ModelManifest:
    """What the MLmodel file declares, after the checks passed."""

    root: Path
    flavors: dict[str, Any]
    loader_module: str | None
    files: list[str] = field(default_factory=list)


def paths_in(value: Any, key: str = "") -> Iterable[tuple[str, str]]:
    """Every string under a path-like key, at any depth (``key`` names where it was found)."""
    if isinstance(value, dict):
        for k, v in value.items():
            yield from paths_in(v, f"{key}.{k}" if key else str(k))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            yield from paths_in(v, f"{key}[{i}]")
    elif isinstance(value, str) and key.rsplit(".", 1)[-1].split("[")[0] in _PATH_KEYS:
        yield key, value


def _inside(root: Path, rel: str, where: str) -> Path:
    if not rel:
        return root
    if os.path.isabs(rel) or rel.startswith(("/", "\\")) or "://" in rel:
        raise UnsafeModelError(
            f"MLmodel field {where} is an absolute path or URL ({rel!r})",
            where=str(root / "MLmodel"),
            fix="A model may only refer to files inside its own folder; re-log it.",
        )
    parts = Path(rel.replace("\\", "/")).parts
    if ".." in parts:
        raise UnsafeModelError(
            f"MLmodel field {where} leaves the model folder ({rel!r})",
            where=str(root / "MLmodel"),
            fix="A model may only refer to files inside its own folder; re-log it.",
        )
    full = (root / rel).resolve()
    if not full.is_relative_to(root.resolve()):
        raise UnsafeModelError(
            f"MLmodel field {where} resolves outside the model folder through a link ({rel!r})",
            where=str(root / "MLmodel"),
            fix="Remove the symbolic link from the model folder.",
        )
    return full


def inspect_model_dir(
    path: str | os.PathLike[str], trusted_loader_modules: Iterable[str] = ()
) -> ModelManifest:
    """Check an MLflow model folder without importing anything from it; raise UnsafeModelError."""
    import yaml

    root = Path(path)
    mlmodel = root / "MLmodel"
    if not mlmodel.is_file():
        raise UnsafeModelError(f"No MLmodel file in {root}", fix="Point at an MLflow model folder.")
    try:
        spec = yaml.safe_load(mlmodel.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as err:
        raise UnsafeModelError(f"MLmodel is not valid YAML: {err}", where=str(mlmodel)) from None
    if not isinstance(spec, dict):
        raise UnsafeModelError("MLmodel is not a mapping", where=str(mlmodel))
    flavors = spec.get("flavors") or {}
    for where, rel in paths_in(spec):
        _inside(root, rel, where)
    trusted = set(trusted_loader_modules)
    pyfunc = flavors.get("python_function") or {}
    loader = pyfunc.get("loader_module")
    if loader is not None and not (str(loader).startswith("mlflow.") or loader in trusted):
        raise UnsafeModelError(
            f"MLmodel names the loader module {loader!r}, which is not an MLflow flavour and was "
            "not declared trusted",
            where=str(mlmodel),
            fix=f"If you wrote {loader!r} and trust it, add it to trusted_loader_modules in "
            "nbmlops.yaml.",
        )
    if pyfunc.get("code") and loader not in trusted:
        raise UnsafeModelError(
            "The model ships code paths that would be imported on load",
            where=str(mlmodel),
            fix="Declare its loader module in trusted_loader_modules in nbmlops.yaml if you trust it.",
        )
    files = []
    for dirpath, dirnames, filenames in os.walk(root):
        for d in list(dirnames):
            if (Path(dirpath) / d).is_symlink():
                _inside(root, str((Path(dirpath) / d).relative_to(root)), "folder link")
        for name in filenames:
            rel = str((Path(dirpath) / name).relative_to(root))
            _inside(root, rel, "file")
            files.append(rel)
    return ModelManifest(root=root, flavors=flavors, loader_module=loader, files=sorted(files))


def files_digest(path: str | os.PathLike[str]) -> str:
    """One xxh3-128 digest over every file of a model folder (relative paths and contents)."""
    import xxhash

    from nbmlops.core.data.digest_files import digest_file

    root = Path(path)
    h = xxhash.xxh3_128()
    for dirpath, _dirnames, filenames in sorted(os.walk(root)):
        for name in sorted(filenames):
            full = Path(dirpath) / name
            rel = full.relative_to(root).as_posix()
            if rel.startswith("__pycache__/") or "/__pycache__/" in rel:
                continue
            if rel == "registered_model_meta":  # MLflow writes it into a folder on download
                continue
            h.update(rel.encode() + b"\0" + digest_file(full).digest.encode() + b"\n")
    return h.hexdigest()


def verify_files(path: str | os.PathLike[str], expected: str | None) -> str:
    """The folder's files digest; UnsafeModelError when it is not ``expected`` (None: no
    digest was recorded, nothing to compare)."""
    actual = files_digest(path)
    if expected is not None and actual != expected:
        raise UnsafeModelError(
            f"The model's files do not match the digest recorded at registration "
            f"({actual[:12]} != {expected[:12]})",
            where=str(path),
            fix="The files were changed after registration: register the model again.",
        )
    return actual
