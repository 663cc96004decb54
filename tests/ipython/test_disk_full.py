"""A full disk under the journal: tracked cells never raise for it, say what was lost, and the
run's recorded reason says "disk full". The journal lives on a real, small tmpfs."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from IPython.utils.capture import capture_output

from nbmlops.core.tracking.session import get_tracker
from tests.conftest import Lane
from tests.core.tracking.small_disk import SmallDisk, segment_lines


@pytest.fixture
def disk(project: Path) -> Iterator[SmallDisk]:
    """The project's journal folder on a 1 MiB tmpfs (mounted before the shell loads nbmlops)."""
    small = SmallDisk(project / ".nbmlops" / "journal").mount()
    try:
        yield small
    finally:
        from nbmlops.core.tracking.session import reset_tracker

        reset_tracker()
        small.unmount()


@pytest.fixture
def store(project: Path) -> Lane:
    return Lane("sqlite", project, {}, f"sqlite:///{project / '.nbmlops' / 'mlflow.db'}")


def run(shell, cell: str):
    with capture_output() as out:
        result = shell.run_cell(cell)
    return result, out


def summary_of(out) -> str:
    shown = [o.data["text/plain"] for o in out.outputs if "nbmlops" in o.data.get("text/plain", "")]
    assert shown, out.stdout + out.stderr
    return shown[-1]


def journal_records(disk: SmallDisk) -> list[dict]:
    lines = segment_lines(disk.path)
    records = []
    for line in lines:
        assert line.endswith(b"\n"), f"torn journal line: {line[:200]!r}"
        records.append(json.loads(line))  # raises on a torn line
    return records


def test_a_full_disk_mid_cell_loses_records_not_the_cell(disk: SmallDisk, shell, store):
    shell.run_cell("import nbmlops")
    shell.push({"fill": disk.fill, "free": disk.free})
    result, out = run(
        shell,
        "%%track half-full -e diskfull\n"
        "nbmlops.log_metric('loss', 0.0, step=0)\n"
        "fill()\n"
        "for step in range(1, 40):\n"
        "    nbmlops.log_metric('loss', 1.0 / step, step=step)\n"
        "free()\n"
        "alpha = 0.5\n",
    )
    assert result.success, result.error_in_exec  # log_metric never raised
    # what the journal holds is whole lines only; what it lacks is counted, not hidden
    records = [r for r in journal_records(disk) if r.get("t") == "metric"]
    lost = 40 - len(records)
    assert lost > 0
    assert "disk full in the journal folder" in out.stderr and str(disk.path) in out.stderr
    text = summary_of(out)
    assert f"{lost} record(s) lost: disk full in the journal folder {disk.path}" in text
    assert "free of" in text
    assert text.startswith("nbmlops: FAILED 'half-full'")
    # the run in MLflow: FAILED, and the reason says disk full and how much was lost
    assert get_tracker().flush(120)
    [r] = store.runs("diskfull")
    assert r.info.status == "FAILED"
    assert r.data.tags["nbmlops.failure"] == "disk full"
    assert r.data.tags["nbmlops.status_reason"].startswith(
        f"disk full: {lost} journal record(s) of this run could not be written to {disk.path}"
    )
    assert r.data.params == {"alpha": "0.5"}
    history = store.client().get_metric_history(r.info.run_id, "loss")
    assert len(history) == len(records)


def test_a_full_disk_at_run_start_is_named_and_the_run_closes_once_there_is_room(
    disk: SmallDisk, shell, store
):
    shell.run_cell("import nbmlops")
    disk.fill()
    result, out = run(shell, "%%track at-start -e diskfull\nnbmlops.log_metric('m', 1.0)\nx = 2\n")
    assert result.success, result.error_in_exec
    # the message names the journal's folder and its free space, not a bare OSError
    assert f"disk full in the journal folder {disk.path} (" in out.stderr
    assert "free of" in out.stderr
    assert "Errno" not in out.stderr
    text = summary_of(out)
    assert "not yet in the journal" in text
    assert "closes the run as FAILED (killed)" in text  # honest about the worst case
    _r, status = run(shell, "%track status")
    assert f"problem  disk full in the journal folder {disk.path}" in status.stdout
    assert "1 record(s) lost" in status.stdout
    assert "2 run start/end record(s) waiting for room" in status.stdout
    # room again: the next tracked cell first writes what was held
    disk.free()
    result, out = run(shell, "%%track later -e diskfull\ny = 3\n")
    assert result.success
    assert get_tracker().flush(120)
    runs = {r.info.run_name: r for r in store.runs("diskfull")}
    first = runs["at-start"]
    assert first.info.status == "FAILED"
    assert first.data.tags["nbmlops.failure"] == "disk full"
    assert "disk full: 1 journal record(s)" in first.data.tags["nbmlops.status_reason"]
    assert runs["later"].info.status == "FINISHED"
    journal_records(disk)
