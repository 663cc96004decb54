"""What a tracked cell records about the models it fits, in an in-process IPython shell against
a real store."""

from __future__ import annotations

from pathlib import Path

import pytest
from IPython.utils.capture import capture_output

from nbmlops.core.tracking.session import get_tracker
from tests.conftest import Lane

SETUP = """\
import numpy as np
from sklearn.ensemble import RandomForestClassifier
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import FunctionTransformer, StandardScaler
rng = np.random.default_rng(0)
X = rng.normal(size=(40, 3))
y = (X[:, 0] > 0).astype(int)
"""


@pytest.fixture
def store(project: Path) -> Lane:
    return Lane("sqlite", project, {}, f"sqlite:///{project / '.nbmlops' / 'mlflow.db'}")


def run(shell, cell: str):
    with capture_output() as out:
        result = shell.run_cell(cell)
    assert result.success, out.stderr
    return out


def test_each_fitted_estimator_records_its_settings_nested_ones_flattened(shell, store):
    run(shell, SETUP)
    out = run(
        shell,
        "%%track fit -e settings --no-models\n"
        "pipe = make_pipeline(StandardScaler(), "
        "RandomForestClassifier(max_depth=4, random_state=0, n_estimators=5)).fit(X, y)\n"
        "rf = RandomForestClassifier(n_estimators=3).fit(X, y)\n"
        "clean = FunctionTransformer(kw_args={'url': 'postgresql://scott:tiger@db/prod'}).fit(X)",
    )
    assert get_tracker().flush(60)
    [r] = store.runs("settings")
    params = r.data.params
    # an estimator made inline inside the pipeline keeps its settings
    assert params["pipe.randomforestclassifier__max_depth"] == "4"
    assert params["pipe.randomforestclassifier__random_state"] == "0"
    assert params["pipe.standardscaler__with_mean"] == "True"
    assert params["pipe.randomforestclassifier"] == "RandomForestClassifier"
    assert "RandomForestClassifier" in params["pipe.steps"]
    assert params["rf.n_estimators"] == "3" and params["rf.max_depth"] == "None"
    # a secret in a setting is redacted as any param is
    assert "tiger" not in params["clean.kw_args"]
    assert "***redacted***" in params["clean.kw_args"]
    summary = out.outputs[-1].data["text/plain"]
    n = sum(key.startswith("pipe.") for key in params)
    assert f"pipe, {n} settings as params" in summary
    assert "max_depth" not in summary  # counted, not listed
