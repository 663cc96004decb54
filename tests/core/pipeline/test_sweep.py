"""Optuna sweeps over notebooks run in real kernels, recorded in a real MLflow store: the better
setting wins, trials are child runs of the sweep run, the study resumes, pruning interrupts a
losing trial, and bad input stops before any kernel starts."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import optuna
import pytest
import yaml

from nbmlops.config import load_settings
from nbmlops.core.pipeline import params as P
from nbmlops.core.pipeline.events import SweepFinished, SweepPlanned, TrialFinished
from nbmlops.core.pipeline.space import parse_space
from nbmlops.core.pipeline.sweep import open_storage, run_sweep
from nbmlops.core.pipeline.trials import TrialJournal
from nbmlops.core.tracking.session import get_tracker
from nbmlops.exceptions import PipelineError
from tests.conftest import Lane, write_notebook

PNG = b"\x89PNG\r\n\x1a\n"

# val_auc is clearly better for mode='good'; k breaks the tie between the two good trials.
TRAIN = [
    "%load_ext nbmlops",
    "%%track fit\nval_auc = (0.9 if mode == 'good' else 0.6) + 0.01 * k\n",
]


def shipped() -> None:
    tracker = get_tracker()
    tracker.ship_ended_processes()
    assert tracker.flush(120), tracker.shipper.stats.last_error


def train_notebook(project: Path) -> Path:
    return write_notebook(project / "train.ipynb", TRAIN, parameters="mode = 'bad'\nk = 1")


# --- the search space (no kernels) -----------------------------------------------------------
def declared(project: Path, parameters: str) -> P.NotebookParameters:
    nb = write_notebook(project / "space.ipynb", ["pass"], parameters=parameters)
    return P.read_parameters(nb)


def test_space_grammar(project: Path) -> None:
    d = declared(
        project,
        "C = 1.0\nn = 3\npenalty = 'l2'\nwarm = False\nlayers = 2\nname = 'run'\nseed = None",
    )
    space = parse_space(
        [
            "C=loguniform(0.001, 10)",
            "n=int(2,10,2)",
            "layers=intlog(1,64)",
            "penalty=choice(l1, 'l2', \"elastic,net\")",
            "warm=choice(true,false)",
            "seed=choice(1, none, abc)",
            "name=baseline",
        ],
        d,
    )
    dims = space.dimensions
    assert dims["C"].canonical == "loguniform(0.001, 10.0)"
    assert dims["n"].canonical == "int(2, 10, step=2)"
    assert dims["layers"].distribution().log
    assert dims["penalty"].choices == ("l1", "l2", "elastic,net")
    assert dims["warm"].choices == (True, False)
    assert dims["seed"].choices == (1, None, "abc")
    assert space.fixed == {"name": "baseline"}
    # A string parameter takes choices as text: numbers stay as written.
    d2 = declared(project, "version = '1.0'")
    assert parse_space(["version=choice(1.0, 2)"], d2).dimensions["version"].choices == (
        "1.0",
        "2",
    )
    # An int range may feed a float parameter; ints for a float default become floats.
    d3 = declared(project, "C = 1.0")
    assert parse_space({"C": "int(1,3)"}, d3).dimensions["C"].values() == [1, 2, 3]
    # Finite spaces list their combinations (covered before any repeats).
    d4 = declared(project, "a = 'x'\nb = 1")
    combos = parse_space(["a=choice(x,y)", "b=int(1,3)"], d4).combinations()
    assert combos is not None and len(combos) == 6


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("mode=choice(good,bad", "does not parse: a closing parenthesis is missing"),
        ("mode=choise(good,bad)", "Unknown distribution 'choise' (did you mean 'choice'?)"),
        ("mood=choice(good,bad)", "Unknown parameter 'mood' for train.ipynb; its parameters"),
        ("k=uniform(0.1,2)", "uniform() draws floats, but parameter 'k' has the int default 1"),
        ("k=choice(a,b)", "choice value 'a' (str) does not fit parameter 'k'"),
        ("mode=uniform(0,1)", "uniform() draws numbers, but parameter 'mode' has the str"),
        ("k=int(5,1)", "the low bound must be below the high bound"),
        ("k=intlog(0,8)", "needs a low bound above 0"),
        ("k=int(1,x)", "int() takes whole numbers, got 'x'"),
        ("mode=choice(good,'bad)", "A quoted value is not closed"),
        ("k", "A search-space entry must be NAME=SPEC"),
    ],
)
def test_bad_space_stops_before_any_kernel(project: Path, spec: str, message: str) -> None:
    nb = train_notebook(project)
    out = project / "sweep-out"
    with pytest.raises(PipelineError) as caught:
        run_sweep(nb, [spec], metric="val_auc", trials=4, out=out)
    err = caught.value
    assert message in str(err)
    assert err.where == f"--param {spec!r}"  # what, and where: the entry at fault
    assert "\n" not in str(err)  # one paragraph
    assert not out.exists()  # no trial notebook, no files
    assert not (project / ".nbmlops" / "optuna.db").exists()  # not even a study


def test_bad_options_stop_before_any_kernel(project: Path) -> None:
    nb = train_notebook(project)
    space = ["mode=choice(good,bad)"]
    with pytest.raises(PipelineError, match="--metric 'val auc!' is not a valid metric name"):
        run_sweep(nb, space, metric="val auc!", trials=4)
    with pytest.raises(PipelineError, match="--trials must be a positive integer, got 0"):
        run_sweep(nb, space, metric="val_auc", trials=0)
    with pytest.raises(PipelineError, match="jobs must be a positive integer"):
        run_sweep(nb, space, metric="val_auc", trials=2, jobs=0)
    with pytest.raises(PipelineError, match="Nothing to sweep"):
        run_sweep(nb, ["mode=good"], metric="val_auc", trials=2)
    with pytest.raises(PipelineError, match="Parameter 'mode' is given twice"):
        run_sweep(nb, [*space, "mode=choice(a)"], metric="val_auc", trials=2)
    with pytest.raises(PipelineError, match="does not exist"):
        run_sweep(project / "missing.ipynb", space, metric="val_auc", trials=2)
    loop = write_notebook(
        project / "loop.ipynb",
        ["%load_ext nbmlops", "%sweep loop.ipynb --param 'k=int(1,2)' --metric m"],
        parameters="k = 1",
    )
    with pytest.raises(PipelineError, match="runs %sweep itself: each trial would start another"):
        run_sweep(loop, ["k=int(1,2)"], metric="m", trials=2)
    assert not (project / ".nbmlops" / "optuna.db").exists()
    assert not (project / ".nbmlops" / "sweeps").exists()


def test_a_study_resumes_only_with_the_same_space_and_direction(project: Path) -> None:
    nb = train_notebook(project)
    settings = load_settings()
    study = optuna.create_study(
        storage=open_storage(settings), study_name="train-val_auc", direction="maximize"
    )
    study.set_user_attr("nbmlops.space", {"mode": "choice('good', 'bad', 'ugly')"})
    with pytest.raises(PipelineError, match="cannot be resumed by this sweep: its search space"):
        run_sweep(nb, ["mode=choice(good,bad)"], metric="val_auc", trials=2, maximize=True)
    with pytest.raises(PipelineError, match="maximizes its metric; this sweep asks to minimize"):
        run_sweep(nb, ["mode=choice(good,bad)"], metric="val_auc", trials=2)
    assert not (project / ".nbmlops" / "sweeps").exists()


def test_trial_journal_reads_what_mlflow_will_show(tmp_path: Path) -> None:
    """Only runs whose parent is the trial count; a line still being written waits; the value
    is MLflow's latest (by step, then time) on the last tracked run that logged the metric."""
    seg = tmp_path / "host-123-abcd.jsonl"

    def rec(**r) -> bytes:
        return (json.dumps(r) + "\n").encode()

    parent = {"nbmlops.parent_run_key": "T", "nbmlops.pid": "123"}
    seg.write_bytes(
        rec(t="start", key="other", ts=1, tags={"nbmlops.parent_run_key": "X"})
        + rec(t="metric", key="other", name="auc", value=9.0, step=0, ts=2)
        + rec(t="start", key="a", ts=3, tags=parent)
        + rec(t="metric", key="a", name="auc", value=0.5, step=0, ts=4)
        + rec(t="metric", key="a", name="auc", value=0.7, step=1, ts=5)
        + b'{"t":"metric","key":"a","na'
    )
    journal = TrialJournal(tmp_path, "T", since=0)
    assert journal.poll([123]) == [("auc", 0.5, 0), ("auc", 0.7, 1)]
    assert journal.pid == 123
    with open(seg, "ab") as fh:
        fh.write(b'me":"auc","value":0.8,"step":2,"ts":6}\n')
        fh.write(rec(t="end", key="a", ts=7, metrics=[{"name": "auc", "value": 0.1}]))
    assert journal.poll([123]) == [("auc", 0.8, 2)]
    assert journal.final("auc") == 0.8  # step 2 is later than the end value at step 0
    with open(seg, "ab") as fh:
        fh.write(rec(t="start", key="b", ts=8, tags=parent))
        fh.write(rec(t="end", key="b", ts=9, metrics=[{"name": "loss", "value": 0.3}]))
    journal.poll([123])
    assert journal.final("auc") == 0.8 and journal.final("loss") == 0.3
    assert journal.names() == ["auc", "loss"]
    assert journal.final("acc") is None


# --- real sweeps -----------------------------------------------------------------------------
@pytest.mark.kernel
def test_sweep_finds_the_better_setting_records_runs_and_resumes(lane: Lane) -> None:
    project = lane.project
    nb = train_notebook(project)
    space = ["mode=choice(good,bad)", "k=int(1,2)"]
    events: list[type] = []
    report = run_sweep(
        nb,
        space,
        metric="val_auc",
        trials=4,
        maximize=True,
        jobs=2,
        seed=0,
        progress=lambda e: events.append(type(e)),
    )
    assert report.ok, [t.error for t in report.trials]
    assert report.counts() == {"COMPLETE": 4, "PRUNED": 0, "FAIL": 0}
    assert report.best is not None
    assert report.best.params == {"mode": "good", "k": 2}
    assert report.best.value == pytest.approx(0.92)
    assert events.count(TrialFinished) == 4
    assert events[0] is SweepPlanned and events[-1] is SweepFinished

    out = project / ".nbmlops" / "sweeps" / "train-val_auc"
    assert report.best_params_path == out / "best_params.yaml"
    assert yaml.safe_load(report.best_params_path.read_text()) == {"mode": "good", "k": 2}
    for name in ("optimization_history", "param_importances"):
        assert report.plots[name].read_bytes().startswith(PNG)
    assert (out / "trials.csv").read_text().count("\n") == 5
    assert all(Path(t.output_notebook).is_file() for t in report.trials)

    shipped()
    runs = lane.runs("train")
    (parent,) = [r for r in runs if r.data.tags.get("nbmlops.kind") == "sweep"]
    assert parent.info.run_name == "train-val_auc"
    assert parent.info.status == "FINISHED"
    assert parent.data.params["best.mode"] == "good"
    assert parent.data.params["space.mode"] == "choice('good', 'bad')"
    assert parent.data.metrics["val_auc"] == pytest.approx(0.92)
    assert parent.data.metrics["trials_complete"] == 4
    arts = {a.path for a in lane.client().list_artifacts(parent.info.run_id)}
    assert {"best_params.yaml", "optimization_history.png", "param_importances.png"} <= arts
    trials = [r for r in runs if r.data.tags.get("nbmlops.sweep.trial") is not None]
    assert len(trials) == 4
    assert all(r.data.tags["mlflow.parentRunId"] == parent.info.run_id for r in trials)
    assert {(r.data.params["mode"], r.data.params["k"]) for r in trials} == {
        ("good", "1"),
        ("good", "2"),
        ("bad", "1"),
        ("bad", "2"),
    }  # a finite space is covered before anything repeats
    by_id = {r.info.run_id: r for r in trials}
    cells = [r for r in runs if r.info.run_name == "fit"]
    assert len(cells) == 4
    assert all(r.data.tags["mlflow.parentRunId"] in by_id for r in cells)
    for cell in cells:  # the trial's score is its tracked cell's metric
        trial = by_id[cell.data.tags["mlflow.parentRunId"]]
        assert trial.data.metrics["val_auc"] == cell.data.metrics["val_auc"]

    # Running it again resumes the study: 6 in all runs 2 more, under a new sweep run.
    again = run_sweep(nb, space, metric="val_auc", trials=6, maximize=True, jobs=2, seed=0)
    assert again.earlier == 4 and len(again.ran) == 2 and len(again.trials) == 6
    assert any("resumed study 'train-val_auc'" in n for n in again.notes)
    assert again.best is not None and again.best.params == {"mode": "good", "k": 2}
    study = optuna.load_study(study_name="train-val_auc", storage=open_storage(load_settings()))
    assert len(study.trials) == 6
    shipped()
    runs = lane.runs("train")
    second = [
        r
        for r in runs
        if r.data.tags.get("nbmlops.kind") == "sweep" and r.info.run_id != parent.info.run_id
    ]
    assert len(second) == 1
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == second[0].info.run_id]
    assert len(children) == 2

    # Nothing left to do: no kernel, no run; the outputs are written again.
    done = run_sweep(nb, space, metric="val_auc", trials=6, maximize=True)
    assert done.ran == [] and done.run_key is None
    assert any("nothing to run" in n for n in done.notes)


@pytest.mark.kernel
def test_a_trial_without_the_metric_fails_and_names_what_was_logged(project: Path) -> None:
    nb = write_notebook(
        project / "typo.ipynb",
        ["%load_ext nbmlops", "%%track\nimport nbmlops\nnbmlops.log_metric('val_acc', 0.5)"],
        parameters="mode = 'a'",
    )
    report = run_sweep(
        nb, ["mode=choice(a,b,c,d)"], metric="val_auc", trials=6, maximize=True, jobs=1
    )
    assert not report.ok and report.best is None
    assert [t.state for t in report.trials] == ["FAIL"] * 3  # stops after 3 failures in a row
    error = report.trials[0].error
    assert "logged no metric 'val_auc' (did you mean 'val_acc'?)" in error
    assert "its tracked cells logged: val_acc" in error
    assert any("stopped after 3 failed trials" in n for n in report.notes)
    shipped()
    runs = {r.info.run_name: r for r in _runs(project, "typo")}
    assert runs["typo-val_auc"].info.status == "FAILED"
    assert runs["trial-0"].info.status == "FAILED"
    assert "logged no metric 'val_auc'" in runs["trial-0"].data.tags["nbmlops.error"]


@pytest.mark.kernel
def test_pruning_interrupts_a_losing_trial(project: Path) -> None:
    """The losing setting logs its steps, then would run for minutes: the median pruner
    (after one completed trial) stops it at its first step by interrupting its kernel."""
    nb = write_notebook(
        project / "curve.ipynb",
        [
            "%load_ext nbmlops",
            "%%track fit\nimport time\nimport nbmlops\nfor epoch in range(3):\n"
            "    nbmlops.log_metric('score', 1.0 if mode == 'good' else 0.0, step=epoch)\n"
            "if mode == 'bad':\n    time.sleep(300)\n",
        ],
        parameters="mode = 'bad'",
    )
    study = optuna.create_study(
        storage=open_storage(load_settings()), study_name="curve", direction="maximize"
    )
    study.enqueue_trial({"mode": "good"})
    study.enqueue_trial({"mode": "bad"})
    report = run_sweep(
        nb,
        ["mode=choice(good,bad)"],
        metric="score",
        trials=2,
        maximize=True,
        study="curve",
        prune=True,
        prune_startup=1,
    )
    good, bad = report.trials
    assert (good.state, good.params, good.value) == ("COMPLETE", {"mode": "good"}, 1.0)
    assert (bad.state, bad.params) == ("PRUNED", {"mode": "bad"})
    assert bad.error is not None and bad.error.startswith("pruned at step 0 (score = 0)")
    assert report.ok and report.best is not None and report.best.number == good.number
    assert "intermediate_values" in report.plots
    shipped()
    runs = {r.info.run_name: r for r in _runs(project, "curve")}
    assert runs[f"trial-{bad.number}"].info.status == "KILLED"
    assert runs[f"trial-{bad.number}"].data.tags["nbmlops.sweep.state"] == "PRUNED"


def _runs(project: Path, experiment: str) -> list:
    from mlflow import MlflowClient

    client = MlflowClient(f"sqlite:///{project / '.nbmlops' / 'mlflow.db'}")
    exp = client.get_experiment_by_name(experiment)
    return client.search_runs([exp.experiment_id], max_results=200)


# --- the command line ------------------------------------------------------------------------
def nbmlops(project: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "nbmlops.cli.main", "sweep", *args],
        cwd=project,
        capture_output=True,
        text=True,
        timeout=600,
    )


def test_cli_bad_input_is_one_paragraph_and_exit_2(project: Path) -> None:
    train_notebook(project)
    proc = nbmlops(project, "train.ipynb", "--param", "k=loguniform(1,9)", "--metric", "val_auc")
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        "error: loguniform() draws floats, but parameter 'k' has the int default 1 (in --param "
        "'k=loguniform(1,9)'). Use int(a,b) or intlog(a,b), or make the default a float "
        "(k = 1.0)."
    ]
    assert not (project / ".nbmlops" / "optuna.db").exists()


@pytest.mark.kernel
def test_cli_sweep_json(project: Path) -> None:
    train_notebook(project)
    proc = nbmlops(
        project,
        "train.ipynb",
        "--param",
        "mode=choice(good,bad)",
        "--param",
        "k=2",
        "--trials",
        "2",
        "--jobs",
        "2",
        "--metric",
        "val_auc",
        "--maximize",
        "--out",
        "out",
        "--json",
    )
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    assert data["best"]["params"] == {"mode": "good"}
    assert data["best"]["value"] == pytest.approx(0.92)  # k fixed at 2 for every trial
    assert data["run_id"] and data["ok"]
    assert yaml.safe_load((project / "out" / "best_params.yaml").read_text()) == {
        "k": 2,
        "mode": "good",
    }
