"""``nbmlops reproduce RUN_ID``: recorded notebook runs run again in real kernels (papermill),
recorded in a real MLflow SQLite store, compared by output digest and %%track metrics."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from nbmlops.exceptions import PipelineError
from tests.conftest import write_notebook

pytestmark = [pytest.mark.kernel]

cli = CliRunner()

SUMMARY = """\
%load_ext nbmlops
import os
import pandas as pd
"""

SUMMARY_TRACK = """\
%%track summarize
df = pd.read_csv(raw)
total = float(df.x.sum()) * scale
rows = len(df)
"""

SUMMARY_WRITE = """\
os.makedirs(os.path.dirname(summary), exist_ok=True)
with open(summary, "w") as f:
    f.write(f"{rows},{total}\\n")
"""


def settings():
    from nbmlops.config import load_settings

    return load_settings()


def client():
    from mlflow import MlflowClient

    return MlflowClient(settings().resolved_tracking_uri)


def shipped_run_id(run_key: str | None) -> str:
    """The MLflow id of a run journaled by this process, once it and its cells are shipped."""
    from nbmlops.core.tracking.session import get_tracker

    tracker = get_tracker()
    assert tracker.flush(120), "the runs did not reach MLflow"
    assert run_key is not None
    return tracker.shipper.run_ids[run_key]


def children(run_id: str) -> list[Any]:
    c = client()
    run = c.get_run(run_id)
    return c.search_runs(
        [run.info.experiment_id], filter_string=f"tags.`mlflow.parentRunId` = '{run_id}'"
    )


def invoke(*args: str):
    from nbmlops.cli.main import app

    return cli.invoke(app, ["reproduce", *args])


def saved_report(run_id: str) -> dict[str, Any]:
    return json.loads((settings().home_dir / "reproduce" / run_id / "reproduce.json").read_text())


def checks(report: dict[str, Any], index: int = 0) -> dict[str, dict[str, Any]]:
    return {c["item"]: c for c in report["runs"][index]["checks"]}


def summary_notebook(project: Path) -> Path:
    return write_notebook(
        project / "summary.ipynb",
        [SUMMARY, SUMMARY_TRACK, SUMMARY_WRITE],
        parameters="raw = ''\nsummary = ''\nscale = 1.0",
    )


def run_summary(project: Path, raw: Path) -> tuple[str, Path]:
    from nbmlops.core.pipeline.runner import run_notebook

    out = project / "results" / "summary.txt"
    nb_run = run_notebook(
        summary_notebook(project),
        {"raw": str(raw), "summary": str(out), "scale": 2.5},
        outputs={"summary": str(out)},
        experiment="summaries",
        cwd=project,
    )
    assert nb_run.ok, nb_run.report.error
    return shipped_run_id(nb_run.run_key), out


def test_a_deterministic_notebook_reproduces(project: Path):
    raw = project / "data" / "raw.csv"
    raw.parent.mkdir()
    raw.write_text("x\n1\n2\n3\n")
    run_id, out = run_summary(project, raw)
    before = (out.read_bytes(), out.stat().st_mtime_ns)

    result = invoke(run_id)
    assert result.exit_code == 0, result.output
    assert "reproduced" in result.output and "not reproduced" not in result.output

    report = saved_report(run_id)
    assert report["ok"] and report["kind"] == "notebook"
    rows = checks(report)
    assert set(rows) == {
        "code",
        "input raw",
        "status",
        "output summary",
        "metric summarize.total",
        "metric summarize.rows",
    }
    assert all(r["match"] for r in rows.values())
    assert rows["metric summarize.total"]["now"] == "15"
    assert rows["input raw"]["note"] == f"unchanged at {raw}"

    # The user's output was not touched; the new one is in the scratch folder.
    assert (out.read_bytes(), out.stat().st_mtime_ns) == before
    scratch = settings().home_dir / "reproduce" / run_id
    assert (scratch / "work" / "results" / "summary.txt").read_bytes() == before[0]

    # The reproduction is a notebook run of its own, with its %%track run below it.
    new_id = report["runs"][0]["new_run_id"]
    new = client().get_run(new_id)
    assert new.data.tags["nbmlops.reproduces"] == run_id
    assert new.data.tags["nbmlops.kind"] == "notebook"
    assert new.data.tags["nbmlops.reproduce.result"] == "match"
    assert new.data.params["scale"] == "2.5"
    assert new.data.params["raw"].startswith(str(scratch))
    assert [r.info.run_name for r in children(new_id)] == ["summarize"]
    assert [r.info.run_name for r in children(run_id)] == ["summarize"]

    # A tracked cell's run is not a notebook run: the message points at the one above it.
    cell_run = children(run_id)[0].info.run_id
    with pytest.raises(PipelineError, match=f"nbmlops reproduce {run_id}"):
        from nbmlops.core.pipeline.reproduce import reproduce

        reproduce(cell_run)


RANDOM = """\
%load_ext nbmlops
import os
import numpy as np
"""

RANDOM_TRACK = """\
%%track draw
noise = 1.0 + float(np.random.rand()) * 1e-9
steady = float(np.sqrt(0.25))
"""

RANDOM_WRITE = """\
os.makedirs(os.path.dirname(sample), exist_ok=True)
np.save(sample, np.random.rand(5))
"""


def test_an_unseeded_notebook_reports_what_differs(project: Path):
    from nbmlops.core.pipeline.runner import run_notebook

    nb = write_notebook(
        project / "noisy.ipynb", [RANDOM, RANDOM_TRACK, RANDOM_WRITE], parameters="sample = ''"
    )
    out = project / "out" / "sample.npy"
    nb_run = run_notebook(nb, {"sample": str(out)}, outputs={"sample": str(out)}, cwd=project)
    assert nb_run.ok, nb_run.report.error
    run_id = shipped_run_id(nb_run.run_key)

    result = invoke(run_id)
    assert result.exit_code == 1, result.output
    assert "not reproduced" in result.output
    assert "output sample" in result.output and "metric draw.noise" in result.output
    rows = checks(saved_report(run_id))
    assert not rows["output sample"]["match"]
    assert not rows["metric draw.noise"]["match"]
    assert rows["metric draw.steady"]["match"]
    assert rows["code"]["match"] and rows["status"]["match"]

    # Within a relative tolerance the metric matches; the output's bytes still differ.
    result = invoke(run_id, "--rtol", "1e-6")
    assert result.exit_code == 1, result.output
    rows = checks(saved_report(run_id))
    assert rows["metric draw.noise"]["match"]
    assert not rows["output sample"]["match"]
    new = client().get_run(saved_report(run_id)["runs"][0]["new_run_id"])
    assert new.data.tags["nbmlops.reproduce.result"] == "differs"


def test_a_changed_input_is_restored_from_the_data_store_by_digest(project: Path):
    from nbmlops import data
    from nbmlops.core.pipeline.runner import run_notebook

    raw = project / "raw.csv"
    raw.write_text("x\n4\n5\n")
    lookup = project / "lookup.txt"
    lookup.write_text("not versioned\n")
    committed = data.commit(str(raw), "raw", "the version the run reads")
    nb = write_notebook(
        project / "two.ipynb",
        [SUMMARY, SUMMARY_TRACK, "extra = open(lookup).read()", SUMMARY_WRITE],
        parameters="raw = ''\nlookup = ''\nsummary = ''\nscale = 1.0",
    )
    out = project / "results" / "summary.txt"
    nb_run = run_notebook(
        nb,
        {"raw": "raw.csv", "lookup": "lookup.txt", "summary": str(out)},
        outputs={"summary": str(out)},
        cwd=project,
    )
    assert nb_run.ok, nb_run.report.error
    run_id = shipped_run_id(nb_run.run_key)

    raw.write_text("x\n4\n5\n6\n")  # changed since the run; the run's version is raw@1
    result = invoke(run_id)
    assert result.exit_code == 0, result.output
    rows = checks(saved_report(run_id))
    assert rows["input raw"]["match"]
    assert rows["input raw"]["note"] == f"restored from {committed.version.ref}"
    assert rows["input lookup"]["note"] == f"unchanged at {lookup}"
    assert rows["output summary"]["match"] and rows["metric summarize.total"]["now"] == "9"
    assert raw.read_text() == "x\n4\n5\n6\n"  # the user's file stays as it is now
    audit = [json.loads(line) for line in settings().audit_path.read_text().splitlines()]
    assert any(e["action"] == "data.checkout" and e["target"] == "raw@1" for e in audit)

    # An input that changed and was never committed: nothing runs, the input is named.
    lookup.write_text("edited\n")
    result = invoke(run_id)
    assert result.exit_code == 1, result.output
    report = saved_report(run_id)
    run = report["runs"][0]
    assert not run["ran"] and run["new_run_id"] is None
    assert "lookup" in run["error"] and "not run" in run["error"]
    rows = checks(report)
    assert not rows["input lookup"]["match"] and rows["input lookup"]["now"].startswith("changed")
    assert "status" not in rows
    assert "not reproduced" in result.output and "input lookup" in result.output


def test_a_pipeline_run_reproduces_each_step_with_the_reproduced_outputs(project: Path):
    from nbmlops.core.pipeline.runner import run_pipeline

    (project / "raw.csv").write_text("x\n1\n2\n")
    write_notebook(
        project / "load.ipynb",
        [
            "import os, shutil",
            "os.makedirs(os.path.dirname(table), exist_ok=True)\nshutil.copyfile(raw, table)",
        ],
        parameters="raw = ''\ntable = ''",
    )
    summary_notebook(project)
    (project / "pipeline.yaml").write_text(
        "name: two\n"
        "steps:\n"
        "  load:\n"
        "    notebook: load.ipynb\n"
        "    inputs: {raw: raw.csv}\n"
        "    outputs: {table: out/table.csv}\n"
        "  summary:\n"
        "    notebook: summary.ipynb\n"
        "    parameters: {scale: 3.0}\n"
        "    inputs: {raw: out/table.csv}\n"
        "    outputs: {summary: out/summary.txt}\n"
    )
    report = run_pipeline(project / "pipeline.yaml", jobs=1)
    assert report.ok, report.table()
    pipeline_id = shipped_run_id(report.run_key)
    # The intermediate file changes afterwards: step 2 gets step 1's reproduced output.
    (project / "out" / "table.csv").write_text("x\n100\n")

    result = invoke(pipeline_id)
    assert result.exit_code == 0, result.output
    saved = saved_report(pipeline_id)
    assert saved["kind"] == "pipeline"
    assert [r["name"] for r in saved["runs"]] == ["load", "summary"]
    assert checks(saved, 1)["input raw"]["note"] == "reproduced output"
    assert checks(saved, 1)["metric summarize.total"]["now"] == "9"
    new_summary = client().get_run(saved["runs"][1]["new_run_id"])
    assert new_summary.data.tags["nbmlops.reproduces_pipeline"] == pipeline_id
    assert new_summary.data.tags["nbmlops.reproduces"] == saved["runs"][1]["run_id"]


def test_an_unknown_run_id_is_a_clear_error(project: Path, monkeypatch, capsys):
    from nbmlops.cli.main import main
    from nbmlops.core.pipeline.reproduce import reproduce

    client().search_experiments()  # the store exists, the run does not
    with pytest.raises(PipelineError, match="No run '0123456789abcdef0123456789abcdef'"):
        reproduce("0123456789abcdef0123456789abcdef")
    with pytest.raises(PipelineError, match="is not an MLflow run id"):
        reproduce("../../etc")
    with pytest.raises(PipelineError, match="rtol"):
        reproduce("0123456789abcdef0123456789abcdef", rtol=-1)

    monkeypatch.setattr(sys, "argv", ["nbmlops", "reproduce", "feedfacefeedfacefeedfacefeedface"])
    with pytest.raises(SystemExit) as exit_info:
        main()
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "error: No run 'feedfacefeedfacefeedfacefeedface' in the MLflow store" in err
    assert not (settings().home_dir / "reproduce" / "feedfacefeedfacefeedfacefeedface").exists()
