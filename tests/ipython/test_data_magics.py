"""`%data`, `%validate`, `%lineage` and `%%track --snapshot` in an in-process IPython shell,
against a real data store, audit log and MLflow store in a fresh project."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from IPython.core.interactiveshell import InteractiveShell
from IPython.utils.capture import capture_output

from nbmlops.core.audit import AuditLog
from nbmlops.core.tracking.session import get_tracker
from tests.conftest import Lane


@pytest.fixture
def shell(project: Path):
    sh = InteractiveShell.instance()
    sh.reset(new_session=True)
    sh.run_line_magic("load_ext", "nbmlops")
    sh.user_ns["pd"], sh.user_ns["np"] = pd, np
    yield sh
    sh.run_line_magic("unload_ext", "nbmlops")
    sh.reset(new_session=True)


def run(shell, cell: str):
    with capture_output() as out:
        result = shell.run_cell(cell)
    return result, out


def frame(n: int = 200, shift: float = 0.0, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame(
        {
            "id": np.arange(n),
            "x": rng.normal(loc=shift, size=n),
            "city": pd.Categorical(rng.choice(["a", "b", "c"], size=n)),
            "when": pd.date_range("2026-01-01", periods=n, freq="h", tz="Europe/Paris"),
        }
    )


def test_commit_log_diff_checkout_round_trip(shell, project: Path):
    shell.user_ns["sales"] = frame()
    _r, out = run(shell, "%data commit sales -m 'first cut'")
    assert "new version sales@1" in out.stdout
    _r, out = run(shell, "%data commit sales")
    assert "unchanged: same content as sales@1" in out.stdout
    run(shell, "sales2 = sales.drop(index=[3, 4]).copy()\nsales2.loc[10, 'x'] = 99.0\n")
    _r, out = run(shell, "%data commit sales2 --name sales -m 'fixed'")
    assert "new version sales@2" in out.stdout
    result, _out = run(shell, "%data log sales")
    assert list(result.result["version"]) == ["sales@1", "sales@2"]
    result, _out = run(shell, "%data ls")
    assert list(result.result["version"]) == ["sales@2"]
    _r, out = run(shell, "%data diff sales@1 sales@2 --key id")
    assert "2" in out.stdout and "removed" in out.stdout.lower()
    result, out = run(shell, "%data checkout sales@1 as old")
    assert result.success, out.stderr
    pd.testing.assert_frame_equal(shell.user_ns["old"], frame(), check_exact=True)
    entries = AuditLog(project / ".nbmlops" / "audit.jsonl").entries()
    assert [(e.action, e.target) for e in entries] == [
        ("data.commit", "sales@1"),
        ("data.commit", "sales@1"),
        ("data.commit", "sales@2"),
        ("data.checkout", "sales@1"),
    ]
    assert AuditLog(project / ".nbmlops" / "audit.jsonl").verify().ok


def test_files_commit_and_checkout(shell, project: Path):
    (project / "raw.csv").write_text("a,b\n1,2\n3,4\n")
    _r, out = run(shell, f"%data commit {project / 'raw.csv'} -m csv")
    assert "new version raw.csv@1" in out.stdout
    _r, out = run(shell, f"%data checkout raw.csv@1 {project / 'copy.csv'}")
    assert (project / "copy.csv").read_text() == "a,b\n1,2\n3,4\n"


def test_bad_lines_print_usage(shell):
    _result, out = run(shell, "%data frobnicate")
    assert "usage: %data" in out.stderr
    _result, out = run(shell, "%data commit nothing_here_at_all")
    assert "nothing_here_at_all" in out.stderr


def test_access_rules_refuse_and_write_nothing(shell, project: Path, monkeypatch):
    (project / "nbmlops.yaml").write_text(
        "access:\n  datasets:\n    'sales*':\n      read: ['*']\n      commit: [alice]\n"
    )
    monkeypatch.setenv("NBMLOPS_USER", "bob")
    from nbmlops.core.tracking.session import reset_tracker

    reset_tracker()
    shell.user_ns["sales"] = frame()
    _result, out = run(shell, "%data commit sales")
    assert "User 'bob' may not commit dataset 'sales'" in out.stderr
    assert not (project / ".nbmlops" / "data" / "versions").exists()
    assert not (project / ".nbmlops" / "audit.jsonl").exists()


def test_validate_inside_a_tracked_cell_is_logged_to_its_run(shell, project: Path):
    shell.user_ns["ref"] = frame(seed=1)
    shell.user_ns["today"] = frame(shift=1.5, seed=2)
    run(shell, "%data commit ref --name baseline")
    result, out = run(shell, "%%track check -e val\n%validate today --against baseline@1 --no-plot")
    assert result.success, out.stderr
    assert "x" in out.outputs[0].data["text/plain"]  # the report, displayed
    assert get_tracker().flush(60)
    lane = Lane("sqlite", project, {}, f"sqlite:///{project / '.nbmlops' / 'mlflow.db'}")
    [r] = lane.runs("val")
    assert r.data.metrics["validation.passed"] == 0.0
    assert r.data.metrics["validation.drifted_columns"] >= 1
    assert r.data.params["validation.reference"] == "baseline@1"


def test_snapshot_commits_the_inputs_and_lineage_links_them(shell, project: Path):
    shell.user_ns["train_df"] = frame()
    result, out = run(shell, "%%track fit -e snap --snapshot\nmean_x = float(train_df.x.mean())")
    assert result.success, out.stderr
    assert get_tracker().flush(60)
    lane = Lane("sqlite", project, {}, f"sqlite:///{project / '.nbmlops' / 'mlflow.db'}")
    [r] = lane.runs("snap")
    assert r.data.params["data.train_df"] == "train_df@1"
    [inp] = r.inputs.dataset_inputs
    assert {t.key: t.value for t in inp.tags}["nbmlops.data_version"] == "train_df@1"
    _r, out = run(shell, "%lineage train_df@1")
    assert "train_df@1" in out.stdout and "run fit (FINISHED" in out.stdout


def test_a_full_disk_under_the_data_store_reaches_the_user_and_fails_the_run(
    shell, project: Path, tmp_path: Path, request: pytest.FixtureRequest
):
    """RELIABILITY 9 and 29: a real tmpfs too small for the frame holds the data store."""
    from nbmlops.core.tracking.session import reset_tracker
    from nbmlops.exceptions import DataStoreError
    from tests.tmpfs import small_disk

    disk = small_disk(tmp_path / "disk", "256k", request)
    (project / "nbmlops.yaml").write_text(f"data_url: {disk / 'data'}\n")
    reset_tracker()
    shell.user_ns["big"] = frame(60_000)
    _result, out = run(shell, "%data commit big")
    assert "Could not commit 'big': no space left on the device (disk full)" in out.stderr
    assert f"{disk / 'data'} has " in out.stderr and " free" in out.stderr
    assert "Free space on the disk holding" in out.stderr
    assert "Traceback" not in out.stderr

    result, out = run(shell, "%%track fit -e full --snapshot\nmean_x = float(big.x.mean())")
    assert not result.success and isinstance(result.error_in_exec, DataStoreError)
    assert "mean_x" not in shell.user_ns
    assert get_tracker().flush(60)
    lane = Lane("sqlite", project, {}, f"sqlite:///{project / '.nbmlops' / 'mlflow.db'}")
    [r] = lane.runs("full")
    assert r.info.status == "FAILED"
    reason = r.data.tags["nbmlops.error"]
    assert "no space left on the device (disk full)" in reason and f"{disk / 'data'}" in reason
    assert not list((disk / "data").rglob("*.tmp-*"))
