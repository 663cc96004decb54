"""Model folders are checked before anything in them is imported."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from sklearn.linear_model import LogisticRegression

from nbmlops.core.registry.safety import files_digest, inspect_model_dir, verify_files
from nbmlops.exceptions import UnsafeModelError


@pytest.fixture
def model_dir(tmp_path: Path) -> Path:
    import mlflow.sklearn

    X = np.random.default_rng(0).normal(size=(40, 3))
    model = LogisticRegression().fit(X, (X[:, 0] > 0).astype(int))
    path = tmp_path / "model"
    mlflow.sklearn.save_model(model, str(path), pip_requirements=["scikit-learn"])
    return path


def edit_mlmodel(path: Path, change) -> None:
    spec = yaml.safe_load((path / "MLmodel").read_text())
    change(spec)
    (path / "MLmodel").write_text(yaml.safe_dump(spec))


def test_a_plain_mlflow_model_passes(model_dir: Path):
    manifest = inspect_model_dir(model_dir)
    assert manifest.loader_module == "mlflow.sklearn"
    assert "MLmodel" in manifest.files


@pytest.mark.parametrize(
    "bad", ["../../etc/passwd", "/etc/passwd", "sub/../../x", "file:///etc/passwd"]
)
def test_paths_leaving_the_folder_are_refused(model_dir: Path, bad: str):
    edit_mlmodel(model_dir, lambda s: s["flavors"]["sklearn"].__setitem__("pickled_model", bad))
    with pytest.raises(UnsafeModelError, match="pickled_model"):
        inspect_model_dir(model_dir)


def test_a_symlink_out_of_the_folder_is_refused(model_dir: Path, tmp_path: Path):
    (tmp_path / "outside.pkl").write_bytes(b"x")
    os.symlink(tmp_path / "outside.pkl", model_dir / "evil.pkl")
    with pytest.raises(UnsafeModelError, match="through a link"):
        inspect_model_dir(model_dir)


def test_an_undeclared_loader_module_is_refused_before_import(model_dir: Path, tmp_path: Path):
    marker = tmp_path / "imported"
    (tmp_path / "evil_loader.py").write_text(f"open({str(marker)!r}, 'w').write('ran')\n")
    sys.path.insert(0, str(tmp_path))
    try:
        edit_mlmodel(
            model_dir,
            lambda s: s["flavors"]["python_function"].__setitem__("loader_module", "evil_loader"),
        )
        with pytest.raises(UnsafeModelError, match="trusted_loader_modules"):
            inspect_model_dir(model_dir)
        assert not marker.exists()
        assert (
            inspect_model_dir(model_dir, trusted_loader_modules=["evil_loader"]).loader_module
            == "evil_loader"
        )
        assert not marker.exists()  # inspecting never imports
    finally:
        sys.path.remove(str(tmp_path))


def test_files_digest_catches_a_changed_file(model_dir: Path):
    digest = files_digest(model_dir)
    verify_files(model_dir, digest)
    pkl = next(p for p in model_dir.iterdir() if p.suffix in (".pkl", ".skops"))
    data = bytearray(pkl.read_bytes())
    data[len(data) // 2] ^= 0xFF
    pkl.write_bytes(bytes(data))
    with pytest.raises(UnsafeModelError, match="do not match"):
        verify_files(model_dir, digest)
