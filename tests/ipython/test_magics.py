"""`%%track` and `%track` in an in-process IPython shell (no kernel), against a real store."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from IPython.utils.capture import capture_output

from nbmlops.core.tracking.session import get_tracker
from tests.conftest import Lane


@pytest.fixture
def store(project: Path) -> Lane:
    return Lane("sqlite", project, {}, f"sqlite:///{project / '.nbmlops' / 'mlflow.db'}")


def run(shell, cell: str):
    with capture_output() as out:
        result = shell.run_cell(cell)
    return result, out


def test_summary_under_the_cell_and_last_expression_still_shown(shell, store):
    shell.run_cell("base = 3")
    result, out = run(
        shell, "%%track first --experiment magic\nalpha = 0.1\nscore = base * 2\nscore + 1"
    )
    assert result.success and result.result == 7
    assert get_tracker().flush(60)
    # The summary, and its update in place once the run is in MLflow if that happened while
    # the cell ran: the user sees the last one.
    shown = [o for o in out.outputs if "nbmlops" in o.data.get("text/plain", "")]
    assert 1 <= len(shown) <= 2
    summary = shown[-1]
    text = summary.data["text/plain"]
    assert "FINISHED 'first' in experiment 'magic'" in text
    assert "alpha=0.1" in text and "base=3" in text and "score=6" in text
    assert "text/html" in summary.data
    [r] = store.runs("magic")
    assert r.data.params == {"alpha": "0.1", "base": "3"} and r.data.metrics == {"score": 6.0}


def test_rerunning_a_cell_makes_a_new_run_and_never_leaves_one_active(shell, store):
    for _ in range(3):
        result, _out = run(shell, "%%track again -e rerun\nx = 2 * 21")
        assert result.success
    result, _out = run(shell, "%%track boom -e rerun\nraise ValueError('bad')")
    assert not result.success and isinstance(result.error_in_exec, ValueError)
    assert get_tracker().active is None
    result, _out = run(shell, "%%track after -e rerun\ny = 1.5 * 2")
    assert result.success
    assert get_tracker().flush(60)
    statuses = sorted((r.info.run_name, r.info.status) for r in store.runs("rerun"))
    assert statuses == [
        ("after", "FINISHED"),
        ("again", "FINISHED"),
        ("again", "FINISHED"),
        ("again", "FINISHED"),
        ("boom", "FAILED"),
    ]


def test_interrupt_marks_the_run_killed_and_reaches_the_user(shell, store):
    result, _out = run(shell, "%%track interrupted -e intr\nn = 5 * 1\nraise KeyboardInterrupt")
    assert isinstance(result.error_in_exec, KeyboardInterrupt)
    assert get_tracker().flush(60) and get_tracker().active is None
    [r] = store.runs("intr")
    assert r.info.status == "KILLED" and r.data.metrics == {"n": 5.0}


def test_track_off_and_on(shell, store):
    run(shell, "%track off")
    result, out = run(shell, "%%track silent -e onoff\nz = 1.0 + 1")
    assert result.success and shell.user_ns["z"] == 2.0
    assert "nbmlops" not in out.stdout
    run(shell, "%track on")
    run(shell, "%%track loud -e onoff\nz = 3.0 + 1")
    assert get_tracker().flush(60)
    assert [r.info.run_name for r in store.runs("onoff")] == ["loud"]


def test_dry_run_shows_but_logs_nothing(shell, store):
    result, out = run(shell, "%%track --dry-run -e dry\nlr = 0.01\nloss = lr * 3")
    assert result.success
    text = "".join(o.data.get("text/plain", "") for o in out.outputs)
    assert "dry run" in text and "lr=0.01" in text and "loss=0.03" in text
    assert get_tracker().flush(30)
    assert store.runs("dry") == []


def test_bad_magic_arguments_print_usage_and_do_not_run_the_cell(shell):
    result, out = run(shell, "%%track --no-such-flag\nran = True")
    assert "ran" not in shell.user_ns
    assert "unrecognized arguments: --no-such-flag" in out.stderr
    assert "usage: %%track [-e EXPERIMENT]" in out.stderr
    result, out = run(shell, "%track sideways")
    assert "on, off, status or sync" in out.stderr + out.stdout + str(result.error_in_exec)


def test_overrides_from_the_magic_line(shell, store):
    run(
        shell,
        "%%track ov -e ov -p owner=ana -p k -m base_rate -i noise\nk = 2 + 3\nbase_rate = 0.5\nnoise = 0.1 * 3",
    )
    assert get_tracker().flush(60)
    [r] = store.runs("ov")
    assert r.data.params == {"owner": "ana", "k": "5"}
    assert r.data.metrics == {"base_rate": 0.5}


def test_status_and_sync_lines(shell, store):
    run(shell, "%%track s -e st\nv = 1 + 1")
    _r, out = run(shell, "%track sync")
    assert "everything is in MLflow" in out.stdout
    _r, out = run(shell, "%track status")
    assert "tracking is on" in out.stdout and str(store.project) in out.stdout


def test_magics_and_shell_escapes_inside_a_tracked_cell(shell, store):
    result, _out = run(
        shell, "%%track inner -e inner\nimport math\nfiles = !echo hi\nroot = math.sqrt(16)"
    )
    assert result.success and shell.user_ns["root"] == 4.0
    assert get_tracker().flush(60)
    [r] = store.runs("inner")
    assert r.data.metrics == {"root": 4.0}


def test_log_metric_outside_a_tracked_cell_says_how_to_fix(shell):
    result, _out = run(shell, "import nbmlops\nnbmlops.log_metric('x', 1.0)")
    err = result.error_in_exec
    assert type(err).__name__ == "NoActiveRunError" and "%%track" in str(err)
    result, _out = run(shell, "%%track bad -e bad\nnbmlops.log_metric('x', 'high')")
    assert "must be a real number" in str(result.error_in_exec)


def test_help_starts_with_the_summary_and_names_the_cell_magic(shell):
    _result, out = run(shell, "%%track?")
    text = re.sub(r"\x1b\[[0-9;]*m", "", out.stdout)  # the shell colours the headings
    assert text.startswith("Docstring:\nTrack a cell as an MLflow run"), text[:200]
    assert "::" not in text.split("positional arguments")[0]
    assert "usage: %%track [-e EXPERIMENT]" in text
