"""A full disk under the journal: tracked cells never raise for it, say what was lost, and the
run's recorded reason says "disk full". The journal lives on a real, small tmpfs."""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import nbformat
import pytest
from IPython.utils.capture import capture_output

from nbmlops.core.tracking.session import get_tracker
from tests.conftest import Lane
from tests.core.tracking.small_disk import SmallDisk, segment_lines


@pytest.fixture
def disk(project: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[SmallDisk]:
    """The project's journal folder on a 1 MiB tmpfs (mounted before the shell loads nbmlops)."""
    monkeypatch.setenv("NBMLOPS_HANDOFF_SECONDS", "0")  # no detached shipper outlives the test
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


def test_a_full_disk_at_run_start_is_named_and_the_run_closes_with_the_reason(
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
    assert text.startswith("nbmlops: FAILED 'at-start'")
    assert f"1 record(s) lost: disk full in the journal folder {disk.path}" in text
    # The room set aside for closing runs closed that one; with the disk still full, the next
    # run's end waits in memory, and the summary says what happens if it never gets room.
    shell.run_cell("import matplotlib\nmatplotlib.use('Agg')\nimport matplotlib.pyplot as plt")
    disk.fill()
    result, out = run(
        shell,
        "%%track still-full -e diskfull\nfor i in range(200):\n    nbmlops.log_metric('m', i)\n"
        "plt.figure(); plt.plot([1, 2]); plt.title('curve')\n",
    )
    assert result.success, result.error_in_exec
    text = summary_of(out)
    assert "not yet in the journal" in text
    assert "closes the run as FAILED (killed)" in text
    assert "figure 'curve' not saved" in text
    _r, status = run(shell, "%track status")
    assert f"problem  disk full in the journal folder {disk.path}" in status.stdout
    assert re.search(
        r": \d+ record\(s\) lost, [12] run start/end record\(s\) waiting", status.stdout
    )
    # room again: the next tracked cell first writes what was held
    disk.free()
    result, out = run(shell, "%%track later -e diskfull\ny = 3\n")
    assert result.success
    assert get_tracker().flush(120)
    runs = {r.info.run_name: r for r in store.runs("diskfull")}
    journaled = Counter(r["key"] for r in journal_records(disk) if r.get("t") == "metric")
    for name, logged in (("at-start", 1), ("still-full", 200)):
        run_ = runs[name]
        lost = logged - journaled[run_.data.tags["nbmlops.run_key"]]
        assert lost > 0  # a page's slack in the segment may have taken a few
        assert run_.info.status == "FAILED"
        assert run_.data.tags["nbmlops.failure"] == "disk full"
        reason = run_.data.tags["nbmlops.status_reason"]
        assert reason.startswith(f"disk full: {lost} journal record(s) of this run could not be")
    # no half-written file was shipped as an artifact
    assert not store.client().list_artifacts(runs["still-full"].info.run_id, "figures")
    assert runs["later"].info.status == "FINISHED"
    journal_records(disk)


FILL = """\
import errno
with open(FILLER, "ab", buffering=0) as fh:
    for chunk in (1 << 16, 1 << 12, 1 << 8, 1):
        try:
            while True:
                fh.write(b"\\0" * chunk)
        except OSError as err:
            assert err.errno == errno.ENOSPC
"""


@pytest.mark.kernel
def test_a_kernel_on_a_full_disk_ends_its_run_as_disk_full_not_killed(
    disk: SmallDisk, project: Path, store: Lane
):
    """Real kernel (nbclient): the disk is full when the tracked cell starts and stays full
    until the kernel has exited; the next start records the run as FAILED for a full disk."""
    from nbclient import NotebookClient

    from nbmlops.api import sync_journal
    from nbmlops.config import load_settings
    from tests.conftest import write_notebook

    nb_path = write_notebook(
        project / "full.ipynb",
        [
            f"%load_ext nbmlops\nimport nbmlops\nFILLER = {str(disk.filler)!r}",
            FILL,
            "%%track on-full -e kernelfull\nfor i in range(50):\n"
            "    nbmlops.log_metric('m', i, step=i)\nalpha = 0.25\n",
        ],
    )
    nb = nbformat.read(str(nb_path), as_version=4)
    NotebookClient(
        nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(project)}}
    ).execute()
    tracked = nb.cells[-1]
    assert not [o for o in tracked.outputs if o.output_type == "error"]
    stderr = "".join(o.get("text", "") for o in tracked.outputs if o.get("name") == "stderr")
    assert f"disk full in the journal folder {disk.path} (" in stderr and "free of" in stderr
    summary = [
        o["data"]["text/plain"] for o in tracked.outputs if "text/plain" in o.get("data", {})
    ][-1]
    assert summary.startswith("nbmlops: FAILED 'on-full'")
    assert "50 record(s) lost: disk full in the journal folder" in summary
    journal_records(disk)  # whole lines only

    # the disk has room again; the next start ships what the kernel journaled
    disk.free()
    sync_journal(load_settings(project))
    [r] = store.runs("kernelfull")
    assert r.info.status == "FAILED"
    assert r.data.tags["nbmlops.failure"] == "disk full"  # not "killed"
    assert r.data.tags["nbmlops.status_reason"].startswith("disk full: 50 journal record(s)")
    assert r.data.params == {"alpha": "0.25"}
