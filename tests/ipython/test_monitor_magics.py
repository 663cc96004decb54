"""``%drift`` in an in-process IPython shell: the table, the histograms of the drifted
features, and a bad line reported in the cell."""

from __future__ import annotations

import numpy as np
import pandas as pd
from IPython.utils.capture import capture_output


def test_drift_magic_shows_the_table_and_histograms_and_writes_html(shell, tmp_path):
    rng = np.random.default_rng(0)
    n = 400
    shell.user_ns["ref"] = pd.DataFrame({"x": rng.normal(size=n), "k": rng.choice(list("ab"), n)})
    shell.user_ns["cur"] = pd.DataFrame(
        {"x": rng.normal(1.0, 1, n), "k": rng.choice(list("ab"), n)}
    )
    html = tmp_path / "r.html"
    with capture_output() as out:
        result = shell.run_cell(f"report = %drift ref cur --html {html}")
    assert result.success, result.error_in_exec
    report = shell.user_ns["report"]
    assert report.drifted == ["x"]
    kinds = [o.data for o in out.outputs]
    assert any("1 of 2 features drifted" in d.get("text/html", "") for d in kinds)
    assert any("image/png" in d for d in kinds)  # the overlaid histograms
    assert html.read_text().count("data:image/png;base64,") == 1


def test_drift_magic_names_a_missing_variable(shell):
    shell.user_ns["ref"] = pd.DataFrame({"x": [1.0, 2.0]})
    with capture_output() as out:
        result = shell.run_cell("%drift ref nowhere")
    assert not result.success
    assert "no variable 'nowhere' for the current data" in out.stderr + str(result.error_in_exec)
