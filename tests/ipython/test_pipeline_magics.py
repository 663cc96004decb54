"""`%pipeline` in a real kernel (the notebook is run by papermill): widget progress, result."""

from __future__ import annotations

from pathlib import Path

import nbformat
import pytest

from tests.conftest import outputs_text, run_papermill, write_notebook

pytestmark = pytest.mark.kernel


def test_pipeline_magic_runs_and_shows_progress(project: Path) -> None:
    write_notebook(project / "w.ipynb", ["open(out, 'w').write('x')"], parameters="out = ''")
    (project / "pipeline.yaml").write_text(
        "steps:\n  only: {notebook: w.ipynb, outputs: {out: w.txt}}\n"
    )
    driver = write_notebook(
        project / "driver.ipynb",
        [
            "%load_ext nbmlops",
            "%pipeline show pipeline.yaml",
            "%pipeline run pipeline.yaml",
            "%pipeline run pipeline.yaml",
            "%pipeline run nowhere.yaml",
        ],
    )
    proc = run_papermill(driver, project, check=False)
    # the refused last line fails its cell, and so the batch run, as `nbmlops pipeline` exits 1
    assert proc.returncode != 0
    assert 'Exception encountered at "In [5]"' in proc.stderr
    executed = nbformat.read(str(driver.with_name("driver.out.ipynb")), as_version=4)
    views = [
        o
        for c in executed.cells
        for o in c.get("outputs", [])
        if "application/vnd.jupyter.widget-view+json" in o.get("data", {})
    ]
    assert len(views) == 2  # one progress widget per run
    text = outputs_text(driver.with_name("driver.out.ipynb"))
    assert "ran" in text and "cached" in text
    assert "nowhere.yaml' does not exist" in text
    assert (project / "w.txt").read_text() == "x"
