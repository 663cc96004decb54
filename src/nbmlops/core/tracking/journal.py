"""The local append-only journal: every tracked run is written here before MLflow sees it.

Each process appends to its own segment file (``<host>-<pid>-<id>.jsonl``) and holds an
exclusive ``flock`` on it for its whole life. A segment whose lock can be taken belongs to a
dead process: its runs are replayed (and runs it left open are closed as killed). Which runs
have reached MLflow is written to a sidecar ``<segment>.shipped``; a fully shipped segment of a
dead process moves to ``archive/``.

Records are single JSON lines, each written whole or not at all: a write cut short (a full
disk) is truncated away before the error is raised, so a killed process leaves at most one torn
last line, which readers skip and count. Page-cache writes survive a killed
process; ``sync()`` adds an fsync at the end of every cell for power loss.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

SEGMENT_SUFFIX = ".jsonl"
SHIPPED_SUFFIX = ".shipped"
RESERVE_SUFFIX = ".reserve"
RESERVE_BYTES = 256 * 1024  # room for the records that close runs when the disk fills up
HANDOFF_SUFFIX = ".handoff"  # left to a detached shipper (see handoff.py)


def now_ms() -> int:
    return int(time.time() * 1000)


def _dumps(record: dict[str, Any]) -> bytes:
    return (json.dumps(record, separators=(",", ":"), default=str) + "\n").encode("utf-8")


class Segment:
    """One process's journal file, locked for as long as it is open."""

    def __init__(self, path: Path, fd: int):
        self.path = path
        self._fd = fd
        self._write_lock = threading.Lock()  # user threads may log metrics at once
        self._reserve_fd = -1

    @property
    def staging_dir(self) -> Path:
        return self.path.parent / "staging" / self.path.stem

    def append(self, record: dict[str, Any]) -> None:
        """Write one record as one whole line, or leave the file as it was and raise OSError."""
        data = _dumps(record)
        with self._write_lock:
            before = os.fstat(self._fd).st_size
            try:
                # os.write may write only part of the line when the disk fills up; the rest
                # then fails with ENOSPC, and the part written is cut off below.
                done = 0
                while done < len(data):
                    n = os.write(self._fd, data[done:])
                    if n <= 0:
                        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(self.path))
                    done += n
            except OSError:
                try:
                    os.ftruncate(self._fd, before)  # shrinking needs no free space
                except OSError:
                    pass
                raise

    def sync(self) -> None:
        os.fsync(self._fd)

    def reserve(self, nbytes: int = RESERVE_BYTES) -> bool:
        """Set room aside on this disk (``<segment>.reserve``) for the records that close
        runs; True if it is (or already was) set aside."""
        if self._reserve_fd >= 0:
            return True
        path = self.path.with_suffix(RESERVE_SUFFIX)
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError:
            return False
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # held: its owner is alive
            os.posix_fallocate(fd, 0, nbytes)
        except OSError:
            os.close(fd)
            path.unlink(missing_ok=True)
            return False
        self._reserve_fd = fd
        return True

    def release_reserve(self) -> bool:
        """Give the reserved room back to the disk, so that a run's end fits on a full disk;
        False if there was none."""
        fd, self._reserve_fd = self._reserve_fd, -1
        if fd < 0:
            return False
        try:
            os.ftruncate(fd, 0)  # frees the blocks even if another process unlinked the file
        except OSError:
            pass
        os.close(fd)
        self.path.with_suffix(RESERVE_SUFFIX).unlink(missing_ok=True)
        return True

    def close(self) -> None:
        self.release_reserve()
        if self._fd >= 0:
            os.close(self._fd)  # closing the descriptor releases the flock
            self._fd = -1


@dataclass
class RunRecords:
    """Everything one segment says about one run."""

    key: str
    start: dict[str, Any] | None = None
    metrics: list[dict[str, Any]] = field(default_factory=list)
    end: dict[str, Any] | None = None
    last_ts: int = 0


@dataclass
class SegmentContents:
    runs: dict[str, RunRecords]
    torn_lines: int
    last_ts: int


@dataclass
class ShipState:
    """What the sidecar says has reached MLflow, per run key."""

    run_ids: dict[str, str] = field(default_factory=dict)
    metrics_done: dict[str, int] = field(default_factory=dict)
    finished: set[str] = field(default_factory=set)


def read_segment(path: Path) -> SegmentContents:
    runs: dict[str, RunRecords] = {}
    torn = 0
    last_ts = 0
    with open(path, "rb") as fh:
        for raw in fh:
            try:
                rec = json.loads(raw)
            except ValueError:
                torn += 1
                continue
            if not isinstance(rec, dict) or "key" not in rec:
                torn += 1
                continue
            run = runs.setdefault(rec["key"], RunRecords(rec["key"]))
            ts = int(rec.get("ts", 0))
            run.last_ts = max(run.last_ts, ts)
            last_ts = max(last_ts, ts)
            kind = rec.get("t")
            if kind == "start":
                run.start = rec
            elif kind == "metric":
                run.metrics.append(rec)
            elif kind == "end":
                run.end = rec
    return SegmentContents(runs, torn, last_ts)


def read_ship_state(segment_path: Path) -> ShipState:
    state = ShipState()
    side = segment_path.with_suffix(SHIPPED_SUFFIX)
    if not side.exists():
        return state
    with open(side, "rb") as fh:
        for raw in fh:
            try:
                rec = json.loads(raw)
            except ValueError:
                continue
            key = rec.get("key")
            if rec.get("run_id"):
                state.run_ids[key] = rec["run_id"]
            if "metrics_done" in rec:
                state.metrics_done[key] = max(state.metrics_done.get(key, 0), rec["metrics_done"])
            if rec.get("finished"):
                state.finished.add(key)
    return state


def mark_shipped(segment_path: Path, record: dict[str, Any]) -> None:
    """Append one line to the segment's sidecar (run id known, metrics shipped, run finished)."""
    side = segment_path.with_suffix(SHIPPED_SUFFIX)
    fd = os.open(side, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    try:
        os.write(fd, _dumps(record))
        os.fsync(fd)
    finally:
        os.close(fd)


class Journal:
    """The journal folder: segments of live and dead processes."""

    def __init__(self, root: Path):
        self.root = Path(root)

    def open_segment(self) -> Segment:
        self.root.mkdir(parents=True, exist_ok=True)
        name = f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:8]}{SEGMENT_SUFFIX}"
        path = self.root / name
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_EXCL, 0o644)
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        self._remove_leftovers()
        segment = Segment(path, fd)
        segment.reserve()
        return segment

    def _remove_leftovers(self) -> None:
        """Reserves of processes that died without closing their segment; hand-off markers
        of segments shipped and archived since."""
        for marker in self.root.glob("*" + HANDOFF_SUFFIX):
            if not marker.with_suffix(SEGMENT_SUFFIX).exists():
                marker.unlink(missing_ok=True)
        for path in self.root.glob("*" + RESERVE_SUFFIX):
            try:
                fd = os.open(path, os.O_RDWR)
            except OSError:
                continue
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                pass  # its process is alive (BlockingIOError)
            else:
                path.unlink(missing_ok=True)
            finally:
                os.close(fd)

    def segments(self) -> list[Path]:
        if not self.root.is_dir():
            return []
        return sorted(self.root.glob("*" + SEGMENT_SUFFIX))

    def claim_orphans(self, exclude: Path | None = None) -> Iterator[OrphanSegment]:
        """Yield segments whose owner is gone, each locked by us until the caller is done."""
        for path in self.segments():
            if exclude is not None and path == exclude:
                continue
            try:
                fd = os.open(path, os.O_RDONLY)
            except FileNotFoundError:
                continue  # archived by another process meanwhile
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)  # a live process owns it, or another replayer has it
                continue
            if not path.exists():
                os.close(fd)
                continue
            orphan = OrphanSegment(self, path, fd)
            try:
                yield orphan
            finally:
                orphan.release()

    def pending_summary(self) -> dict[str, int]:
        """Counts of runs in the journal not yet finished in MLflow (all segments)."""
        pending = 0
        open_runs = 0
        for path in self.segments():
            contents = read_segment(path)
            state = read_ship_state(path)
            for key, run in contents.runs.items():
                if key not in state.finished:
                    pending += 1
                    if run.end is None:
                        open_runs += 1
        return {"pending": pending, "open": open_runs, "segments": len(self.segments())}


class OrphanSegment:
    """A dead process's segment, locked by the replaying process."""

    def __init__(self, journal: Journal, path: Path, fd: int):
        self.journal = journal
        self.path = path
        self._fd = fd

    @property
    def staging_dir(self) -> Path:
        return self.path.parent / "staging" / self.path.stem

    def archive(self) -> None:
        """Move a fully shipped segment and its sidecar out of the way (kept, not deleted)."""
        archive = self.journal.root / "archive"
        archive.mkdir(exist_ok=True)
        side = self.path.with_suffix(SHIPPED_SUFFIX)
        if side.exists():
            os.replace(side, archive / side.name)
        os.replace(self.path, archive / self.path.name)
        if self.staging_dir.is_dir():
            import shutil

            shutil.rmtree(self.staging_dir, ignore_errors=True)

    def release(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
