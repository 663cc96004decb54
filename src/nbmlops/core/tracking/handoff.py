"""Ship what a process left unshipped after it has exited: the detached shipper.

A process that ends with journal records not yet in MLflow (the store was down or slow) marks its
segment with ``<segment>.handoff`` and starts ``python -m nbmlops.core.tracking.handoff`` in a
session of its own. The child waits until the segment's lock is free (its parent has exited),
ships it as ``nbmlops sync`` would, and gives up after ``handoff_seconds``, leaving the rest in
the journal for the next start or ``nbmlops sync``.

At most one detached shipper runs per journal: it holds ``handoff.lock``. A process that finds the
lock held only leaves its marker; the running shipper looks for markers again after releasing
the lock, so no marker is left behind unseen.
"""

from __future__ import annotations

import fcntl
import logging
import os
import subprocess
import sys
import time
from pathlib import Path

from nbmlops.config import Settings
from nbmlops.core.tracking.journal import SEGMENT_SUFFIX, Journal

LOCK_NAME = "handoff.lock"
MARKER_SUFFIX = ".handoff"
LOG_NAME = "handoff.log"

log = logging.getLogger("nbmlops.handoff")


def _try_lock(root: Path) -> int | None:
    """The journal's handoff lock, held by the returned descriptor; None if another has it."""
    fd = os.open(root / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    return fd


def shipper_running(root: Path) -> bool:
    fd = _try_lock(root)
    if fd is None:
        return True
    os.close(fd)
    return False


def hand_off(settings: Settings, segment: Path) -> int | None:
    """Leave ``segment`` to a detached shipper; its pid, or None when one already runs (it
    picks the segment up). Raises OSError when the marker cannot be written."""
    segment.with_suffix(MARKER_SUFFIX).touch()
    if shipper_running(segment.parent):
        return None
    try:
        errors: int | object = open(settings.home_dir / LOG_NAME, "ab")  # noqa: SIM115
    except OSError:
        errors = subprocess.DEVNULL
    try:
        proc = subprocess.Popen(
            [sys.executable, "-m", "nbmlops.core.tracking.handoff"],
            stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            stderr=errors,
            cwd=settings.project_dir,
            start_new_session=True,  # outlives the kernel and its process group
            close_fds=True,
        )
        assert proc.stdin is not None
        # Settings go by pipe, not argv: a tracking URI may hold credentials.
        proc.stdin.write(settings.model_dump_json().encode())
        proc.stdin.close()
    finally:
        if not isinstance(errors, int):
            errors.close()  # type: ignore[union-attr]
    return proc.pid


def _pending_markers(journal: Journal) -> list[Path]:
    """Markers whose segment is still in the journal; the others are removed."""
    out = []
    for marker in sorted(journal.root.glob("*" + MARKER_SUFFIX)):
        if marker.with_suffix(SEGMENT_SUFFIX).exists():
            out.append(marker)
        else:
            marker.unlink(missing_ok=True)  # shipped and archived
    return out


def run(settings: Settings) -> int:
    """Ship handed-off segments until none is left (0) or ``handoff_seconds`` pass (1)."""
    from nbmlops.core.tracking import store
    from nbmlops.core.tracking.shipper import RunShipper, replay_orphans

    journal = Journal(settings.journal_dir)
    deadline = time.monotonic() + settings.handoff_seconds
    lock = _try_lock(journal.root)
    if lock is None:
        return 0  # the running shipper sees our marker
    shipper: RunShipper | None = None
    delay = 0.5
    try:
        while True:
            markers = _pending_markers(journal)
            if not markers:
                os.close(lock)
                lock = None
                # A process that found the lock held just now relies on us: look once more.
                if not _pending_markers(journal):
                    return 0
                lock = _try_lock(journal.root)
                if lock is None:
                    return 0
                continue
            if time.monotonic() >= deadline:
                log.warning(
                    "nbmlops: gave up after %.0fs; %d segment(s) stay in %s for `nbmlops sync`",
                    settings.handoff_seconds,
                    len(markers),
                    journal.root,
                )
                return 1
            shipper = shipper or RunShipper(settings)
            try:
                if not store.reachable(settings.resolved_tracking_uri):
                    # MLflow's own client would retry for minutes inside one call.
                    raise ConnectionError(f"{settings.resolved_tracking_uri} unreachable")
                report = replay_orphans(shipper, journal)
                for err in report.errors:
                    log.info("nbmlops: not shipped yet: %s", err)
            except Exception as err:  # the store is down: try again later
                log.info("nbmlops: replay failed: %s", err)
            if _pending_markers(journal):
                # Owners still exiting, or the store still down: wait, then try again.
                time.sleep(max(0.0, min(delay, deadline - time.monotonic())))
                delay = min(delay * 2, settings.retry_max_seconds)
    finally:
        if lock is not None:
            os.close(lock)


def main() -> int:
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(message)s")
    settings = Settings.model_validate_json(sys.stdin.read())
    return run(settings)


if __name__ == "__main__":
    sys.exit(main())
