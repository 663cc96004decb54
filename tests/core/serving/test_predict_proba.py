"""POST /predict with ``"params": {"predict_proba": true}`` over real HTTP: a classifier's
class probabilities in the order of its classes; a model without predict_proba and a bad
parameter are refused with a message that says so."""

from __future__ import annotations

from pathlib import Path

import pytest

from nbmlops.core.registry.safety import files_digest
from tests.core.serving.conftest import frame, records, unique


def test_predict_proba_answers_class_probabilities(serve, store):
    running = serve(f"{store.register()}@champion")
    rows = frame(6, seed=3)

    reply = running.post({"dataframe_records": records(rows), "params": {"predict_proba": True}})

    assert reply.status == 200, reply.body
    answer = reply.json()
    expected = store.estimators["a"].predict_proba(rows)
    assert answer["classes"] == [0, 1]
    assert len(answer["predictions"]) == 6
    for got, want in zip(answer["predictions"], expected.tolist(), strict=True):
        assert got == pytest.approx(want)
    assert all(abs(sum(p) - 1.0) < 1e-9 for p in answer["predictions"])

    plain = running.post({"dataframe_records": records(rows), "params": {"predict_proba": False}})
    assert plain.status == 200 and plain.json()["predictions"] == store.expected("a", rows)
    assert "classes" not in plain.json()


def test_bad_params_and_models_without_predict_proba_are_refused(serve, store, tmp_path: Path):
    import mlflow.sklearn
    from sklearn.svm import LinearSVC

    rows = frame(3, seed=4)
    running = serve(f"{store.register()}@champion")
    reply = running.post({"records": records(rows), "params": {"predict_prob": True}})
    assert reply.status == 422
    assert reply.json()["fields"] == ["params.predict_prob"]
    assert "Unknown parameter 'predict_prob'" in reply.json()["error"]
    reply = running.post({"records": records(rows), "params": {"predict_proba": "yes"}})
    assert reply.status == 422 and "true/false" in reply.json()["error"]

    X = frame(200, seed=0)
    folder = tmp_path / "svc"
    mlflow.sklearn.save_model(
        LinearSVC().fit(X, (X.f0 > 0).astype(int)),
        folder,
        input_example=X.head(3),
        pip_requirements=["scikit-learn"],
    )
    name = unique("svc")
    version = store.register_folder(name, folder, files_digest(folder))
    store.client.set_registered_model_alias(name, "champion", str(version))
    svc = serve(f"{name}@champion", project=tmp_path / "svc-project")

    reply = svc.post({"records": records(rows), "params": {"predict_proba": True}})

    assert reply.status == 400
    message = reply.json()["error"]
    assert "LinearSVC" in message and "has no predict_proba" in message
    assert svc.post({"records": records(rows)}).status == 200  # its predictions still answer
