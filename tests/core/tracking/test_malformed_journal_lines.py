"""A journal line that is valid JSON of the wrong shape is set aside in the journal's
quarantine folder and counted; `status` and `sync` go on and ship the rest."""

from __future__ import annotations

import json
from pathlib import Path

from nbmlops.config import load_settings
from nbmlops.core.tracking.journal import Journal
from tests.cli.test_cli import cli
from tests.conftest import Lane, unique
from tests.core.tracking.test_never_lose_a_run import run_script
from tests.core.tracking.test_store_deleted_or_replaced import row

# Complete lines that are not records: the two from the bug report first.
BAD_LINES = [
    b'{"key":"k","t":"metric","ts":"x"}',
    b'{"key":[1]}',
    b"[1, 2, 3]",
    b'"a string"',
    b"null",
    b'{"t":"metric","key":"k2","name":"m","value":"high","ts":1}',
    b'{"t":"metric","key":"k3","name":"m","value":1.0,"ts":1,"step":"two"}',
    b'{"t":"start","key":"k4","tags":"not a mapping"}',
    b'{"t":"end","key":"k5","metrics":[{"name":"m","value":1.0}]}',
    b'{"t":"end","key":"k6","models":[{"file":"models/x.pkl"}]}',
    b'{"t":"rename","key":"k7"}',
    b'{"t":"metric","key":[1],"name":"m","value":1.0,"ts":1}',
    b'{"t":"metric","key":"k8","na',  # cut mid-file: a complete line, but not JSON
    b"\xff\xfe not utf-8",
]


def journal_unshipped_runs(project: Path, exp: str) -> Path:
    """Two finished runs journaled by a process that could not reach its store and ended;
    returns its segment."""
    before = set(Journal(load_settings(project).journal_dir).segments())
    run_script(
        project,
        f"""
        import os, nbmlops
        for name in ("first", "second"):
            with nbmlops.track(name, experiment="{exp}"):
                for i in range(20):
                    nbmlops.log_metric("loss", 1.0 / (i + 1), step=i)
                C = 0.5
        os._exit(0)
        """,
        env={"NBMLOPS_TRACKING_URI": "http://127.0.0.1:9"},  # nothing listens there
    )
    [segment] = set(Journal(load_settings(project).journal_dir).segments()) - before
    return segment


def corrupt(segment: Path) -> None:
    """Put the bad lines between the good records (after the first, in the middle, at the end)."""
    good = segment.read_bytes().splitlines()
    middle = len(good) // 2
    lines = [good[0], *BAD_LINES[:5], *good[1:middle], *BAD_LINES[5:10], *good[middle:]]
    lines += BAD_LINES[10:]
    segment.write_bytes(b"".join(line + b"\n" for line in lines))


def assert_both_runs_shipped(project: Path, exp: str) -> None:
    lane = Lane("sqlite", project, {}, load_settings(project).resolved_tracking_uri)
    runs = {r.info.run_name: r for r in lane.runs(exp)}
    assert set(runs) == {"first", "second"}
    for run in runs.values():
        assert run.info.status == "FINISHED"
        assert run.data.params == {"C": "0.5"}
        history = lane.client().get_metric_history(run.info.run_id, "loss")
        assert sorted((m.step, m.value) for m in history) == [(i, 1.0 / (i + 1)) for i in range(20)]


def assert_quarantined(project: Path, segment: Path) -> None:
    folder = load_settings(project).journal_dir / "quarantine"
    kept = [json.loads(line) for line in (folder / segment.name).read_text().splitlines()]
    assert [k["raw"].encode() for k in kept[:-1]] == BAD_LINES[:-1]
    assert kept[-1]["raw"] == BAD_LINES[-1].decode("utf-8", "replace")
    assert all(k["segment"] == segment.name and k["reason"] for k in kept)
    reasons = [k["reason"] for k in kept]
    assert "ts: Input should be a valid integer" in reasons[0]
    assert "record kind" in reasons[1]
    assert reasons[11].startswith("key: Input should be a valid string")


def test_status_and_sync_quarantine_bad_lines_and_ship_the_rest(project: Path):
    exp = unique("shapes")
    segment = journal_unshipped_runs(project, exp)
    corrupt(segment)
    folder = load_settings(project).journal_dir / "quarantine"

    status = cli(project, "status")
    assert status.returncode == 0, status.stderr
    assert "Traceback" not in status.stderr
    assert row(status.stdout, "runs not yet in MLflow") == "2"
    assert row(status.stdout, "malformed journal lines quarantined") == str(len(BAD_LINES))
    assert f"{len(BAD_LINES)} malformed journal line(s)" in status.stdout
    assert str(folder) in status.stdout.replace("\n", "")
    assert_quarantined(project, segment)

    sync = cli(project, "sync")
    assert sync.returncode == 0, sync.stdout + sync.stderr
    assert row(sync.stdout, "runs shipped") == "2"
    assert row(sync.stdout, "malformed journal lines quarantined") == str(len(BAD_LINES))
    assert str(folder) in sync.stdout.replace("\n", "")
    assert_both_runs_shipped(project, exp)
    assert_quarantined(project, segment)  # written once, not twice

    after = cli(project, "status")
    assert after.returncode == 0
    assert row(after.stdout, "runs not yet in MLflow") == "0"
    assert row(after.stdout, "malformed journal lines quarantined") == str(len(BAD_LINES))


def test_a_new_tracked_run_replays_a_segment_with_bad_lines_quietly(project: Path):
    exp = unique("shapes")
    segment = journal_unshipped_runs(project, exp)
    corrupt(segment)
    proc = run_script(
        project,
        f"""
        import nbmlops
        from nbmlops.core.tracking.session import get_tracker
        with nbmlops.track("after", experiment="{exp}-new"):
            x = 1.0
        tracker = get_tracker()
        tracker.ship_ended_processes()  # a replay after the one the start did, waited for
        assert tracker.flush(180), tracker.shipper.stats.last_error
        assert tracker.shipper.stats.last_error is None, tracker.shipper.stats.last_error
        """,
    )
    assert "failed" not in proc.stderr and "Traceback" not in proc.stderr, proc.stderr
    # the shipper's thread says it in nbmlops's own log, not in the user's output
    said = f"{len(BAD_LINES)} malformed line(s) of {segment.name} set aside"
    assert said not in proc.stderr
    assert said in (project / ".nbmlops" / "nbmlops.log").read_text()
    assert_both_runs_shipped(project, exp)
    assert_quarantined(project, segment)
