"""What a process does about runs not yet in MLflow: a batch cell's wait, the exit, and the
detached shipper that ships them after the process has exited.

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
from typing import IO, TYPE_CHECKING

from nbmlops.config import Settings
from nbmlops.core.tracking.journal import HANDOFF_SUFFIX, SEGMENT_SUFFIX, Journal, Segment

if TYPE_CHECKING:
    from nbmlops.core.tracking.background import BackgroundShipper

LOCK_NAME = "handoff.lock"
MARKER_SUFFIX = HANDOFF_SUFFIX
LOG_NAME = "handoff.log"
_OWNER_POLL_S = 0.2

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
    log_file: IO[bytes] | None
    try:
        log_file = open(settings.home_dir / LOG_NAME, "ab")  # noqa: SIM115
    except OSError:
        log_file = None
    try:
        proc = subprocess.Popen(
            [sys.executable, "-m", "nbmlops.core.tracking.handoff"],
            stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            stderr=log_file if log_file is not None else subprocess.DEVNULL,
            cwd=settings.project_dir,
            start_new_session=True,  # outlives the kernel and its process group
            close_fds=True,
        )
        assert proc.stdin is not None
        # Settings go by pipe, not argv: a tracking URI may hold credentials.
        proc.stdin.write(settings.model_dump_json().encode())
        proc.stdin.close()
    finally:
        if log_file is not None:
            log_file.close()
    return proc.pid


def ship_after_exit(settings: Settings, segment: Path) -> str | None:
    """A batch kernel's hand-off at its start: a detached shipper waits for this process to
    exit, then ships its segment. What each cell's summary says, or None when no shipper could
    be started (the kernel then ships and waits itself)."""
    try:
        pid = hand_off(settings, segment)
    except OSError as err:
        log.warning("nbmlops: no detached shipper for this batch kernel: %s", err)
        return None
    who = "the detached shipper" if pid is None else f"a detached shipper (pid {pid})"
    return (
        f"on its way: safe in the journal, {who} ships it to MLflow once this batch kernel "
        "has exited (`nbmlops sync` ships it now; `ship: wait` makes cells wait for MLflow)"
    )


def tell_at_exit(text: str) -> None:
    """Print to stderr, and to the process's own stderr too when they differ: at a kernel's
    exit nobody reads its output stream any more, while its own stderr reaches the terminal
    or the log of whatever started it (papermill, nbclient, Jupyter)."""
    print(text, file=sys.stderr)
    real = sys.__stderr__
    if real is not None and real is not sys.stderr:
        try:
            print(text, file=real, flush=True)
        except (OSError, ValueError):
            pass


def wait_for_store(
    settings: Settings, shipper: BackgroundShipper, given_up: str | None
) -> tuple[str | None, str | None]:
    """A batch kernel's wait until its runs are in MLflow: (what the cell's summary says, why
    later cells need not wait). After one wait timed out, later cells do not wait: the store is
    down or overloaded, and each cell would stall as long."""
    uri = settings.resolved_tracking_uri
    later = (
        "The run is safe in the journal, not yet in MLflow: it ships in the background, "
        "after this kernel exits through a detached shipper, or with `nbmlops sync`"
    )
    if given_up is not None:
        if shipper.flush(0):
            return None, None
        return f"did not wait for {uri}: {given_up}. {later}", None
    wait_s = settings.ship_wait_seconds
    if shipper.flush(wait_s):
        return None, None
    error = shipper.stats.last_error or "no error, the store is busy or slow"
    return (
        f"waited {wait_s:g}s for {uri} in vain ({error}); later cells do not wait. {later}",
        f"an earlier tracked cell waited {wait_s:g}s in vain ({error})",
    )


def stop_at_exit(
    settings: Settings,
    shipper: BackgroundShipper,
    segment: Segment | None,
    given_up: str | None,
) -> None:
    """Give the shipper its bounded time; what is left goes to a detached shipper, and the
    user is told why and what happens next."""
    # After a cell's wait for MLflow timed out, waiting again at exit would only stall the
    # exit (batch kernels are killed a few seconds after their last cell).
    timeout = (
        settings.exit_flush_seconds if given_up is None else min(settings.exit_flush_seconds, 1.0)
    )
    if shipper.stop(timeout):
        return
    error = shipper.stats.last_error
    why = (
        f"the last attempt failed: {error}"
        if error
        else f"no error, but the store did not take them within {timeout:g}s (busy or slow)"
    )
    later = "they ship at the next start or with `nbmlops sync`"
    if segment is None or settings.ship == "defer" or not settings.handoff_seconds:
        then = later
    else:
        try:
            pid = hand_off(settings, segment.path)
        except OSError as err:
            then = f"no detached shipper could be started ({err}); {later}"
        else:
            then = (
                f"the detached shipper already running for this journal ships them, else {later}"
                if pid is None
                else f"a detached shipper (pid {pid}) keeps trying for up to "
                f"{settings.handoff_seconds:g}s; after that {later}"
            )
    tell_at_exit(
        f"nbmlops: {shipper.pending} journal record(s) could not reach {settings.resolved_tracking_uri} before "
        f"exit; {why}. They are safe in {settings.journal_dir}; {then}"
    )


def _pending_markers(journal: Journal) -> list[Path]:
    """Markers whose segment is still in the journal; the others are removed."""
    out = []
    for marker in sorted(journal.root.glob("*" + MARKER_SUFFIX)):
        if marker.with_suffix(SEGMENT_SUFFIX).exists():
            out.append(marker)
        else:
            marker.unlink(missing_ok=True)  # shipped and archived
    return out


def _owner_alive(marker: Path) -> bool:
    """Whether the process writing the marked segment still lives (it holds the segment's lock)."""
    try:
        fd = os.open(marker.with_suffix(SEGMENT_SUFFIX), os.O_RDONLY)
    except FileNotFoundError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True  # or another replayer has it for a moment: look again shortly
    finally:
        os.close(fd)
    return False


def _dead_segments(journal: Journal) -> bool:
    """Whether a segment of a process that has ended waits to be shipped (cheap: locks only)."""
    return any(not _owner_alive(seg.with_suffix(MARKER_SUFFIX)) for seg in journal.segments())


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
            live = [m for m in markers if _owner_alive(m)]
            if live:
                # Batch kernels hand off at their start: the time counts from their exit.
                deadline = time.monotonic() + settings.handoff_seconds
                if len(live) == len(markers) and not _dead_segments(journal):
                    # Checking locks is cheap: the runs ship moments after the kernel exits.
                    time.sleep(_OWNER_POLL_S)
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
            left = _pending_markers(journal)
            if left and (_dead_segments(journal) or not all(_owner_alive(m) for m in left)):
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
