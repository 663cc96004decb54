"""Notebooks and pipelines in real kernels, recorded in a real MLflow store: child runs, the
cache, failures, resume, and a kernel that dies mid-step."""

from __future__ import annotations

import json
from pathlib import Path

import nbformat
import pytest

from nbmlops.core.pipeline.runner import run_notebook, run_pipeline
from nbmlops.core.tracking.session import get_tracker
from tests.conftest import Lane, write_notebook

pytestmark = pytest.mark.kernel


def shipped() -> None:
    tracker = get_tracker()
    tracker.ship_ended_processes()
    assert tracker.flush(120), tracker.shipper.stats.last_error


def runs_by_name(lane: Lane, experiment: str) -> dict[str, list]:
    out: dict[str, list] = {}
    for r in lane.runs(experiment):
        out.setdefault(r.info.run_name, []).append(r)
    return out


TRAIN = [
    "%load_ext nbmlops",
    "%%track fit\nimport pandas as pd\nframe = pd.read_csv(data)\nscore = float(frame['x'].sum()) * scale\n",
]


def test_run_notebook_records_parent_with_tracked_children(lane: Lane) -> None:
    project = lane.project
    (project / "data.csv").write_text("x\n1\n2\n3\n")
    nb = write_notebook(project / "train.ipynb", TRAIN, parameters="data = ''\nscale = 1.0")
    result = run_notebook(nb, {"data": "data.csv", "scale": 2}, experiment="nbrun")
    assert result.ok, result.report.error
    assert Path(result.output_notebook).is_file()
    shipped()
    runs = runs_by_name(lane, "nbrun")
    parent, child = runs["train"][0], runs["fit"][0]
    assert parent.info.status == "FINISHED"
    assert parent.data.params == {"data": "data.csv", "scale": "2.0"}
    assert parent.data.tags["mlflow.source.name"] == str(nb)
    assert len(parent.data.tags["nbmlops.code_digest"]) == 32
    inputs = json.loads(parent.data.tags["nbmlops.inputs"])
    assert set(inputs) == {"data"}  # a string parameter naming a file is an input
    assert child.data.tags["mlflow.parentRunId"] == parent.info.run_id
    assert child.data.metrics["score"] == 12.0
    arts = [a.path for a in lane.client().list_artifacts(parent.info.run_id, "notebook")]
    assert any(a.endswith(Path(result.output_notebook).name) for a in arts)


def test_failing_cell_fails_the_run_and_keeps_the_notebook(project: Path) -> None:
    nb = write_notebook(
        project / "boom.ipynb",
        ["x = 1", "raise ValueError('bad row 7')", "never = True"],
        parameters="n = 1",
    )
    out = project / "boom.out.ipynb"
    result = run_notebook(nb, {"n": 2}, output=out, experiment="boom")
    assert not result.ok
    assert "ValueError: bad row 7" in result.report.error
    executed = nbformat.read(str(out), as_version=4)
    marked = executed.cells[result.report.failed_cell]
    assert "raise ValueError" in marked.source
    assert any(o.get("output_type") == "error" for o in marked.outputs)
    assert any("An Exception was encountered" in c.source for c in executed.cells)  # papermill
    shipped()
    from mlflow import MlflowClient

    client = MlflowClient(f"sqlite:///{project / '.nbmlops' / 'mlflow.db'}")
    exp = client.get_experiment_by_name("boom")
    (run,) = client.search_runs([exp.experiment_id])
    assert run.info.status == "FAILED"
    assert "bad row 7" in run.data.tags["nbmlops.error"]


def test_a_notebook_name_with_spaces_and_brackets_runs(project: Path) -> None:
    nb = write_notebook(project / "my notebook (v2).ipynb", ["x = n * 2"], parameters="n = 1")
    result = run_notebook(nb, {"n": 3})
    assert result.ok, result.report.error
    assert result.report.name == "my-notebook-v2"


def test_bad_parameters_stop_before_any_kernel(project: Path) -> None:
    from nbmlops.exceptions import PipelineError

    nb = write_notebook(project / "p.ipynb", ["pass"], parameters="n = 1")
    with pytest.raises(PipelineError, match="Unknown parameter 'm'"):
        run_notebook(nb, {"m": 1}, output=project / "o.ipynb")
    with pytest.raises(PipelineError, match="not a Python identifier"):
        run_notebook(nb, {"n = 1\nimport os\nq": 1}, output=project / "o.ipynb")
    with pytest.raises(PipelineError, match="does not exist"):
        run_notebook(project / "missing.ipynb", {})
    assert not (project / "o.ipynb").exists()


# --- pipelines -------------------------------------------------------------------------------
def diamond(project: Path) -> Path:
    """a -> (b, c) -> d; b fails unless ok.flag exists (a file the cache does not watch)."""
    write_notebook(
        project / "make.ipynb",
        ["open(out, 'w').write(str(sum(range(n))))"],
        parameters="n = 10\nout = 'a.txt'",
    )
    write_notebook(
        project / "double.ipynb",
        [
            "import os\nif fail_unless and not os.path.exists(fail_unless):\n"
            "    raise RuntimeError('flag missing')",
            "%load_ext nbmlops",
            "%%track\nvalue = int(open(src).read()) * factor\nopen(out, 'w').write(str(value))",
        ],
        parameters="src = ''\nout = ''\nfactor = 2\nfail_unless = ''",
    )
    write_notebook(
        project / "join.ipynb",
        ["open(out, 'w').write(str(int(open(left).read()) + int(open(right).read())))"],
        parameters="left = ''\nright = ''\nout = 'd.txt'",
    )
    (project / "pipeline.yaml").write_text(
        """
name: diamond
steps:
  a: {notebook: make.ipynb, parameters: {n: 10}, outputs: {out: a.txt}}
  b: {notebook: double.ipynb, parameters: {fail_unless: ok.flag},
      inputs: {src: a.txt}, outputs: {out: b.txt}}
  c: {notebook: double.ipynb, parameters: {factor: 3}, inputs: {src: a.txt}, outputs: {out: c.txt}}
  d: {notebook: join.ipynb, inputs: {left: b.txt, right: c.txt}, outputs: {out: d.txt}}
"""
    )
    return project / "pipeline.yaml"


def statuses(report) -> dict[str, str]:
    return {n: s.status for n, s in report.steps.items()}


def test_pipeline_cache_failure_and_resume(project: Path) -> None:
    pipe = diamond(project)
    first = run_pipeline(pipe, jobs=2)
    assert statuses(first) == {"a": "ran", "b": "failed", "c": "ran", "d": "skipped"}
    assert "flag missing" in first.steps["b"].error
    assert Path(first.steps["b"].output_notebook).is_file()  # kept for inspection
    assert "upstream step 'b'" in first.steps["d"].reason
    shipped()

    (project / "ok.flag").write_text("")
    resumed = run_pipeline(pipe, jobs=2, resume=True)
    assert statuses(resumed) == {"a": "cached", "b": "ran", "c": "cached", "d": "ran"}
    assert resumed.run_key == first.run_key  # the same pipeline run, continued
    assert (project / "d.txt").read_text() == str(45 * 2 + 45 * 3)
    shipped()

    from mlflow import MlflowClient

    client = MlflowClient(f"sqlite:///{project / '.nbmlops' / 'mlflow.db'}")
    exp = client.get_experiment_by_name("pipeline-diamond")
    runs = client.search_runs([exp.experiment_id], max_results=100)
    pipeline_runs = [r for r in runs if r.data.tags.get("nbmlops.kind") == "pipeline"]
    assert len(pipeline_runs) == 1 and pipeline_runs[0].info.status == "FINISHED"
    pid = pipeline_runs[0].info.run_id
    steps = [r for r in runs if r.data.tags.get("nbmlops.kind") == "notebook"]
    assert sorted(r.info.run_name for r in steps) == ["a", "b", "b", "c", "d"]
    assert all(r.data.tags["mlflow.parentRunId"] == pid for r in steps)
    cells = [r for r in runs if "nbmlops.cell.index" in r.data.tags]
    step_ids = {r.info.run_id for r in steps}
    assert len(cells) == 2  # c's, and b's second attempt (the first failed before the cell)
    assert all(r.data.tags["mlflow.parentRunId"] in step_ids for r in cells)

    # The steps are linked through their files' digests in the lineage graph.
    from nbmlops.core.lineage.graph import LineageGraph
    from nbmlops.core.lineage.store import LineageStore, run_node

    graph = LineageGraph(LineageStore(project / ".nbmlops" / "lineage.db"))
    view = graph.view(run_node(resumed.steps["d"].run_key))
    assert run_node(first.steps["a"].run_key) in view.upstream()
    assert run_node(first.steps["c"].run_key) in view.upstream()

    # Nothing changed: nothing runs, nothing is recorded.
    again = run_pipeline(pipe, jobs=2)
    assert set(statuses(again).values()) == {"cached"}
    assert again.run_key is None

    # A changed input reruns only the steps that read it (and what their outputs feed).
    (project / "a.txt").write_text("100")  # a's recorded output changed: a reruns
    changed = run_pipeline(pipe, jobs=2)
    assert statuses(changed)["a"] == "ran"
    assert "changed since it was written" in changed.steps["a"].reason
    assert statuses(changed)["b"] == statuses(changed)["c"] == "cached"  # a rewrote 45

    # A parameter change reruns that step and, as its output changes, its downstream.
    pipe.write_text(pipe.read_text().replace("factor: 3", "factor: 4"))
    param = run_pipeline(pipe, jobs=2)
    assert statuses(param) == {"a": "cached", "b": "cached", "c": "ran", "d": "ran"}
    assert (project / "d.txt").read_text() == str(45 * 2 + 45 * 4)

    # A code change in one notebook reruns the steps that use it.
    nb = nbformat.read(str(project / "join.ipynb"), as_version=4)
    nb.cells[-1].source += "\n# reviewed"
    nbformat.write(nb, str(project / "join.ipynb"))
    dry = run_pipeline(pipe, dry_run=True)
    assert statuses(dry) == {
        "a": "would skip",
        "b": "would skip",
        "c": "would skip",
        "d": "would run",
    }
    code = run_pipeline(pipe, jobs=2)
    assert statuses(code) == {"a": "cached", "b": "cached", "c": "cached", "d": "ran"}

    forced = run_pipeline(pipe, jobs=2, force=["c"])
    assert statuses(forced)["c"] == "ran" and statuses(forced)["d"] == "cached"


def test_nothing_to_resume_and_unknown_force(project: Path) -> None:
    from nbmlops.exceptions import PipelineError

    pipe = diamond(project)
    with pytest.raises(PipelineError, match="Nothing to resume"):
        run_pipeline(pipe, resume=True)
    with pytest.raises(PipelineError, match="unknown step"):
        run_pipeline(pipe, force=["zz"])
    with pytest.raises(PipelineError, match="not a scheduler address"):
        run_pipeline(pipe, cluster="localhost:8786")


def test_a_killed_kernel_fails_its_step_and_loses_no_run(project: Path) -> None:
    write_notebook(
        project / "die.ipynb",
        [
            "%load_ext nbmlops",
            "%%track before\nimport nbmlops\nnbmlops.log_metric('progress', 0.5)\n"
            "import os, signal\nos.kill(os.getpid(), signal.SIGKILL)",
        ],
        parameters="n = 1",
    )
    (project / "pipeline.yaml").write_text("steps:\n  die: {notebook: die.ipynb}\n")
    report = run_pipeline(project / "pipeline.yaml")
    assert report.steps["die"].status == "failed"
    assert "Dead" in report.steps["die"].error or "died" in report.steps["die"].error
    shipped()
    from mlflow import MlflowClient

    client = MlflowClient(f"sqlite:///{project / '.nbmlops' / 'mlflow.db'}")
    exp = client.get_experiment_by_name(f"pipeline-{project.name}")
    runs = {r.info.run_name: r for r in client.search_runs([exp.experiment_id])}
    assert runs["die"].info.status == "KILLED"  # a dead kernel, not a failing cell
    cell = runs["before"]  # the tracked cell the kernel died in: journaled, shipped, closed
    assert cell.info.status == "FAILED"
    assert cell.data.tags["nbmlops.failure"] == "killed"
    assert cell.data.metrics["progress"] == 0.5
    assert cell.data.tags["mlflow.parentRunId"] == runs["die"].info.run_id


def test_parameter_values_round_trip_and_the_injected_cell_only_assigns(project: Path) -> None:
    import ast

    tricky = "quote \" and ' both, back\\slash, new\nline, nul\x00, sep\u2028, tab\t é"
    values = {"text": tricky, "items": [tricky, 1, None, True], "table": {'k"ey': tricky}}
    nb = write_notebook(
        project / "echo.ipynb",
        ["import json\nopen('echo.json', 'w').write(json.dumps([text, items, table]))"],
        parameters="text = ''\nitems = []\ntable = {}",
    )
    out = project / "echo.out.ipynb"
    result = run_notebook(nb, values, output=out)
    assert result.ok, result.report.error
    assert json.loads((project / "echo.json").read_text()) == [
        values["text"],
        values["items"],
        values["table"],
    ]
    executed = nbformat.read(str(out), as_version=4)
    (injected,) = [c for c in executed.cells if "injected-parameters" in c.metadata.get("tags", [])]
    tree = ast.parse(injected.source)
    assert tree.body and all(isinstance(node, ast.Assign) for node in tree.body)
    assert sorted(node.targets[0].id for node in tree.body) == ["items", "table", "text"]


def test_many_kernels_at_once_all_complete(project: Path) -> None:
    write_notebook(
        project / "w.ipynb", ["open(out, 'w').write(str(k * k))"], parameters="k = 0\nout = ''"
    )
    steps = "".join(
        f"  s{k}: {{notebook: w.ipynb, parameters: {{k: {k}}}, outputs: {{out: o{k}.txt}}}}\n"
        for k in range(8)
    )
    (project / "pipeline.yaml").write_text("steps:\n" + steps)
    report = run_pipeline(project / "pipeline.yaml", jobs=8)
    assert {s.status for s in report.steps.values()} == {"ran"}, report.table()
    assert [(project / f"o{k}.txt").read_text() for k in range(8)] == [str(k * k) for k in range(8)]


def test_one_output_notebook_is_never_written_by_two_runs(project: Path) -> None:
    import subprocess
    import sys
    import time

    from nbmlops.exceptions import PipelineError

    nb = write_notebook(
        project / "slow.ipynb", ["import time\ntime.sleep(wait)"], parameters="wait = 0.0"
    )
    out = project / "shared.ipynb"
    out.write_text("{}")  # an earlier result at that path
    first = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "nbmlops.cli.main",
            "run",
            str(nb),
            "-p",
            "wait",
            "30",
            "-o",
            str(out),
        ],
        cwd=project,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 60
        while not list(project.glob(".shared.*.partial.ipynb")):  # the first run is executing
            assert first.poll() is None, first.communicate()
            assert time.monotonic() < deadline
            time.sleep(0.1)
        assert out.read_text() == "{}"  # the run writes to its partial file, not over the old one
        with pytest.raises(PipelineError, match="being written by a run in progress"):
            run_notebook(nb, {"wait": 0.0}, output=out)
    finally:
        first.kill()
        first.communicate()
    assert out.read_text() == "{}"  # killed mid-run: the earlier notebook is intact
    second = run_notebook(nb, {"wait": 0.0}, output=out)  # the lock died with its process
    assert second.ok
    assert nbformat.read(str(out), as_version=4).cells
    # Without -o, every run gets its own notebook.
    a = run_notebook(nb, {"wait": 0.0})
    b = run_notebook(nb, {"wait": 0.0})
    assert a.output_notebook != b.output_notebook
