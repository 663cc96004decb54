"""The detached shipper: one per journal at a time, and it gives up after a bounded time,
leaving the records in the journal."""

from __future__ import annotations

import os
from pathlib import Path

from nbmlops.config import load_settings
from nbmlops.core.tracking import handoff
from nbmlops.core.tracking.journal import Journal, now_ms, read_segment
from tests.services import find_free_port


def orphan_segment(journal: Journal) -> Path:
    """A segment of a finished run whose process is gone (its lock released)."""
    seg = journal.open_segment()
    key = "k" * 32
    seg.append({"t": "start", "key": key, "ts": now_ms(), "name": "r", "experiment": "e"})
    seg.append({"t": "end", "key": key, "ts": now_ms(), "status": "FINISHED"})
    seg.close()
    return seg.path


def test_it_gives_up_after_handoff_seconds_and_leaves_the_records(project: Path):
    dead = f"http://127.0.0.1:{find_free_port()}"  # nothing listens there
    settings = load_settings(project, tracking_uri=dead, handoff_seconds=3, retry_max_seconds=1)
    journal = Journal(settings.journal_dir)
    path = orphan_segment(journal)
    path.with_suffix(handoff.MARKER_SUFFIX).touch()
    assert handoff.run(settings) == 1  # returns: bounded, even with the store down
    assert path.exists() and path.with_suffix(handoff.MARKER_SUFFIX).exists()
    assert len(read_segment(path).runs) == 1
    assert not handoff.shipper_running(journal.root)  # its lock is released


def test_only_one_runs_per_journal(project: Path):
    settings = load_settings(project)
    journal = Journal(settings.journal_dir)
    path = orphan_segment(journal)
    held = handoff._try_lock(journal.root)  # as a running detached shipper holds it
    assert held is not None
    try:
        assert handoff.hand_off(settings, path) is None  # none started: the running one ships
        assert path.with_suffix(handoff.MARKER_SUFFIX).exists()  # ...and finds this marker
        assert handoff.run(settings) == 0  # a second one started anyway leaves at once
        assert path.exists()
    finally:
        os.close(held)
    # the lock is free now: a shipper run ships the segment and removes the marker
    assert handoff.run(settings) == 0
    assert not path.exists() and not list(journal.root.glob("*" + handoff.MARKER_SUFFIX))
