"""The scan's allow list: real scikit-learn models, saved as MLflow saves them, scan clean in
every format; helpers of the trusted libraries that run code, open a second file or create
files are refused by name, and never run (RELIABILITY 25)."""

from __future__ import annotations

import io
import pickle
import subprocess
import sys
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import yaml

from nbmlops.config import RegistryScanSettings, load_settings
from nbmlops.core.registry.scan import scan_model_dir
from nbmlops.core.tracking.shipper import _own_skops_types
from nbmlops.exceptions import ConfigError
from tests.core.registry.conftest import Zoo, malicious_copy
from tests.core.registry.payloads import PAYLOADS, Payload, System

OFF = RegistryScanSettings(pip_audit="off")


def real_models() -> dict[str, Any]:
    """Fitted models of the kinds people register (trained on a small mixed frame)."""
    from sklearn.cluster import KMeans
    from sklearn.compose import ColumnTransformer, TransformedTargetRegressor
    from sklearn.ensemble import (
        GradientBoostingClassifier,
        HistGradientBoostingClassifier,
        RandomForestClassifier,
    )
    from sklearn.feature_selection import SelectKBest, f_classif
    from sklearn.impute import SimpleImputer
    from sklearn.linear_model import LogisticRegression, Ridge
    from sklearn.model_selection import GridSearchCV
    from sklearn.neighbors import KNeighborsClassifier
    from sklearn.pipeline import Pipeline, make_pipeline
    from sklearn.preprocessing import FunctionTransformer, OneHotEncoder, StandardScaler

    rng = np.random.default_rng(0)
    num = ["a", "b", "c"]
    X = pd.DataFrame(rng.normal(size=(120, 3)), columns=num)
    X["city"] = rng.choice(["x", "y", "z"], size=120)
    y = (X.a + X.b > 0).astype(int)
    pre = ColumnTransformer(
        [
            ("num", make_pipeline(SimpleImputer(), StandardScaler()), num),
            ("cat", OneHotEncoder(handle_unknown="ignore"), ["city"]),
        ]
    )
    categorical = X.assign(city=X.city.astype("category"))
    return {
        "logistic": LogisticRegression().fit(X[num], y),
        "forest": RandomForestClassifier(n_estimators=4, random_state=0).fit(X[num], y),
        "pipeline": Pipeline([("pre", pre), ("clf", LogisticRegression())]).fit(X, y),
        "boosting": GradientBoostingClassifier(n_estimators=4).fit(X[num], y),
        "hist-boosting": HistGradientBoostingClassifier(max_iter=4).fit(categorical, y),
        "kmeans": KMeans(n_clusters=3, n_init=2, random_state=0).fit(X[num]),
        "log1p": make_pipeline(FunctionTransformer(np.log1p), Ridge()).fit(X[num].abs(), y),
        "target-transform": TransformedTargetRegressor(
            regressor=Ridge(), func=np.log1p, inverse_func=np.expm1
        ).fit(X[num], X.a.abs()),
        "kbest": make_pipeline(SelectKBest(f_classif, k=2), LogisticRegression()).fit(X[num], y),
        "neighbours": KNeighborsClassifier().fit(X[num], y),
        "search": GridSearchCV(LogisticRegression(), {"C": [0.1, 1.0]}, cv=2).fit(X[num], y),
    }


def save(model: Any, path: Path, fmt: str) -> Path:
    """As nbmlops's tracker saves a model (skops, with the types skops asks to trust), or in
    MLflow's pickle formats."""
    import mlflow.sklearn

    mlflow.sklearn.save_model(
        model,
        str(path),
        serialization_format=fmt,
        pip_requirements=["scikit-learn"],
        skops_trusted_types=_own_skops_types(model) if fmt == "skops" else None,
    )
    return path


def test_real_models_scan_clean_in_every_format_and_a_helper_among_them_does_not(
    tmp_path: Path,
):
    for kind, model in real_models().items():
        for fmt in ("skops", "pickle", "cloudpickle"):
            report = scan_model_dir(save(model, tmp_path / kind / fmt, fmt), OFF)
            assert report.status == "clean", (kind, fmt, report.summary())
    # the same pipeline with numpy.load (which opens a second file) in its transformer
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import FunctionTransformer

    loads = make_pipeline(FunctionTransformer(np.load))
    report = scan_model_dir(save(loads, tmp_path / "loads", "cloudpickle"), OFF)
    assert report.status == "flagged"
    [finding] = report.flagged
    assert finding.file == "model.pkl"
    assert finding.detail.startswith("imports numpy.load (a function, not a known reconstructor)")


def write_payload(zoo: Zoo, payload: Payload, dest: Path, marker: Path) -> Path:
    """A copy of the zoo's good model whose model.pkl is ``payload`` (MLmodel loads it)."""
    folder = malicious_copy(zoo, dest, marker)
    (folder / "model.pkl").write_bytes(payload.make(marker))
    return folder


def unpickle_elsewhere(file: Path) -> None:
    """Load ``file`` with pickle in another interpreter, as MLflow would."""
    code = "import pickle, sys\npickle.load(open(sys.argv[1], 'rb'))\n"
    subprocess.run([sys.executable, "-c", code, str(file)], capture_output=True, timeout=300)


@pytest.mark.parametrize("payload", PAYLOADS, ids=str)
def test_helpers_that_run_code_are_refused_by_name_and_never_run(
    zoo: Zoo, tmp_path: Path, payload: Payload
):
    marker = tmp_path / "ran"
    folder = write_payload(zoo, payload, tmp_path / "evil", marker)
    report = scan_model_dir(folder, OFF)
    assert report.status == "flagged" and not report.loadable
    [finding] = report.flagged
    assert finding.file == "model.pkl" and finding.kind == "pickle-import"
    assert finding.detail.startswith(f"imports {payload.offender} (")
    assert "trusted_pickle_globals" in finding.detail and "skops" in finding.detail
    assert not marker.exists()
    # and the payload is live: unpickled, it does what it says
    unpickle_elsewhere(folder / "model.pkl")
    assert marker.exists()


def test_a_pickle_with_a_zip_appended_is_read_from_its_first_byte(zoo: Zoo, tmp_path: Path):
    marker = tmp_path / "ran"
    folder = zoo.model_dir("good", tmp_path / "copy")
    archive = io.BytesIO()
    with zipfile.ZipFile(archive, "w") as z:
        z.writestr("readme.txt", "nothing to see")
    payload = pickle.dumps(System(f"touch {marker}")) + archive.getvalue()
    (folder / "extra.pkl").write_bytes(payload)
    report = scan_model_dir(folder, OFF)
    assert report.status == "flagged"
    assert {f.file for f in report.flagged} == {"extra.pkl"}
    assert "imports posix.system (code execution)" in report.flagged[0].detail
    assert not marker.exists()
    unpickle_elsewhere(folder / "extra.pkl")
    assert marker.exists()  # pickle.load reads the pickle and never sees the zip


def test_a_model_file_the_scan_cannot_read_makes_the_model_unloadable(zoo: Zoo, tmp_path: Path):
    folder = zoo.model_dir("good", tmp_path / "copy")
    (folder / "weights.npy").write_bytes(b"PK\x03\x04 not an array")
    report = scan_model_dir(folder, OFF)
    assert report.status == "incomplete" and not report.loadable
    assert report.incomplete[0].file == "weights.npy"


def test_skops_types_and_pickle_globals_share_one_allow_list(zoo: Zoo, tmp_path: Path):
    folder = zoo.model_dir("good", tmp_path / "copy")
    spec = yaml.safe_load((folder / "MLmodel").read_text())
    spec["flavors"]["sklearn"]["skops_trusted_types"] = [
        "sklearn.tree._tree.Tree",  # what skops asks to trust for a forest: allowed
        "numpy.testing.runstring",
    ]
    (folder / "MLmodel").write_text(yaml.safe_dump(spec))
    report = scan_model_dir(folder, OFF)
    assert report.status == "flagged"
    [finding] = report.flagged
    assert finding.kind == "skops-trust"
    assert finding.detail.startswith("declares numpy.testing.runstring trusted for skops loading")
    trusted = RegistryScanSettings(
        pip_audit="off", trusted_pickle_globals=["numpy.testing.runstring"]
    )
    assert scan_model_dir(folder, trusted).status == "clean"


def test_trusting_whole_packages_is_refused_with_the_way_to_trust_globals(tmp_path: Path):
    (tmp_path / "nbmlops.yaml").write_text(
        yaml.safe_dump({"registry": {"scan": {"trusted_pickle_modules": ["mypkg"]}}})
    )
    with pytest.raises(ConfigError, match=r"list each class or function .* trusted_pickle_globals"):
        load_settings(tmp_path, environ={})
    (tmp_path / "nbmlops.yaml").write_text(
        yaml.safe_dump({"registry": {"scan": {"trusted_pickle_globals": ["mypkg"]}}})
    )
    with pytest.raises(ConfigError, match=r"module\.name entries, not 'mypkg'"):
        load_settings(tmp_path, environ={})
