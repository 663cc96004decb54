"""Classification rules, on real objects, without a store."""

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.linear_model import LogisticRegression

from nbmlops.core.tracking.analysis import analyze_cell
from nbmlops.core.tracking.capture import CaptureOptions, capture_after, snapshot_before


def run_block(
    source: str, ns: dict, options: CaptureOptions | None = None, staging: Path | None = None
):
    options = options or CaptureOptions()
    analysis = analyze_cell(source)
    snap = snapshot_before(analysis, ns, options)
    exec(compile(source, "<cell>", "exec"), ns)  # noqa: S102 - the test's own code
    return capture_after(analysis, snap, ns, options, staging)


@pytest.fixture
def data() -> dict:
    rng = np.random.default_rng(1)
    X = pd.DataFrame(rng.normal(size=(60, 3)), columns=["a", "b", "c"])
    y = (X.a > 0).astype(int)
    return {"X": X, "y": y, "LogisticRegression": LogisticRegression, "max_iter": 200, "tag": "v1"}


def test_params_metrics_models_and_data(data, tmp_path):
    cap = run_block(
        "C = 0.5\nmodel = LogisticRegression(C=C, max_iter=max_iter).fit(X, y)\n"
        "acc = model.score(X, y)\nn_rows = len(X)\nconverged = True\n_hidden = 3.0\n",
        data,
        staging=tmp_path,
    )
    own = {k: v for k, v in cap.params.items() if not k.startswith("model.")}
    assert own == {"max_iter": "200", "C": "0.5", "converged": "True"}
    assert cap.params["model.C"] == "0.5" and cap.params["model.max_iter"] == "200"
    assert set(cap.metrics) == {"acc", "n_rows"} and cap.metrics["n_rows"] == 60.0
    assert [m["name"] for m in cap.models] == ["model"]
    assert cap.models[0]["trained_on"] == "X"
    assert (tmp_path / "models" / "model.pkl").exists()
    assert (tmp_path / "models" / "model.example.pkl").exists()
    inputs = {d.name: d for d in cap.data if d.role == "input"}
    assert set(inputs) == {"X", "y"}
    assert inputs["X"].context == "training" and inputs["X"].shape == [60, 3]


def test_overrides(data):
    cap = run_block(
        "baseline = 0.5\nscore = 0.9\nnoise = 1.5\n",
        data,
        CaptureOptions(
            params={"run_by": "ci"},
            force_params={"score"},
            force_metrics={"baseline"},
            ignore={"noise"},
        ),
    )
    assert cap.metrics == {"baseline": 0.5}
    assert cap.params == {"score": "0.9", "run_by": "ci"}


def test_unfitted_estimators_and_other_objects_are_not_captured(data):
    cap = run_block("est = LogisticRegression()\nf = lambda v: v\nname = 'x' + tag\n", data)
    assert cap.models == [] and cap.metrics == {} and "est" not in cap.params
    assert cap.params == {"tag": "v1"}


def test_an_undigestible_input_is_a_note_not_a_crash(data):
    data["weird"] = np.array([{"a": 1}, object()], dtype=object)
    cap = run_block("k = len(weird)\n", data)
    assert any("weird" in note for note in cap.notes)
    assert cap.metrics == {"k": 2.0}


def test_a_model_that_cannot_be_pickled_is_a_note(data, tmp_path):
    data["model"] = LogisticRegression().fit(data["X"], data["y"])
    cap = run_block(
        "model.lock = __import__('threading').Lock()\nm2 = model\n", data, staging=tmp_path
    )
    assert cap.models == []
    assert any("cannot pickle" in note for note in cap.notes)


def test_figures_opened_by_the_block(data, tmp_path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plt.close("all")
    old = plt.figure()
    data["plt"] = plt
    cap = run_block(
        "plt.figure(); plt.plot([1, 2]); plt.title('loss curve')\n", data, staging=tmp_path
    )
    assert cap.figures == ["figures/loss-curve.png"]
    png = (tmp_path / "artifacts" / "figures" / "loss-curve.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    plt.close("all")
    del old
