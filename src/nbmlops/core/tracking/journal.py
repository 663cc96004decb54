"""The local append-only journal: every tracked run is written here before MLflow sees it.

Each process appends to its own segment file (``<host>-<pid>-<id>.jsonl``) and holds an
exclusive ``flock`` on it for its whole life. A segment whose lock can be taken belongs to a
dead process: its runs are replayed (and runs it left open are closed as killed). Which runs
have reached MLflow is written to a sidecar ``<segment>.shipped``; a fully shipped segment of a
dead process moves to ``archive/``.

Records are single JSON lines, each written whole or not at all: a write cut short (a full
disk) is truncated away before the error is raised, so a killed process leaves at most one torn
last line, which readers skip and count. Page-cache writes survive a killed
process; ``sync()`` adds an fsync at the end of every cell for power loss. A complete line that
is not a record of the expected shape (edited by hand, corrupted) is counted and copied, with
the reason, to ``quarantine/<segment>``; the segment's other records ship as usual.
"""

from __future__ import annotations

import errno
import fcntl
import json
import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal, NotRequired, Required

from pydantic import ConfigDict, Field, TypeAdapter, ValidationError
from typing_extensions import TypedDict  # pydantic needs this one before Python 3.12

log = logging.getLogger("nbmlops.journal")

SEGMENT_SUFFIX = ".jsonl"
SHIPPED_SUFFIX = ".shipped"
QUARANTINE_DIR = "quarantine"
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


# The shape of each record kind, as far as the shipper relies on it: declared once, checked
# by pydantic-core for every line read on replay (microseconds a line). Other keys pass through.
_OPEN = ConfigDict(extra="allow")


class _Metric(TypedDict):
    __pydantic_config__ = _OPEN  # type: ignore[misc]
    name: str
    value: float
    step: NotRequired[int | None]
    ts: int


class _Model(TypedDict, total=False):
    __pydantic_config__ = _OPEN  # type: ignore[misc]
    name: Required[str]
    file: str
    example: str


class _Start(TypedDict, total=False):
    __pydantic_config__ = _OPEN  # type: ignore[misc]
    t: Required[Literal["start"]]
    key: Required[str]
    ts: int
    name: str | None
    experiment: str | None
    tags: dict[str, Any]
    datasets: list[dict[str, Any]]
    reopen: bool


class _MetricRecord(_Metric):
    t: Literal["metric"]
    key: str


class _End(TypedDict, total=False):
    __pydantic_config__ = _OPEN  # type: ignore[misc]
    t: Required[Literal["end"]]
    key: Required[str]
    ts: int
    status: str
    experiment: str | None
    params: dict[str, Any]
    metrics: list[_Metric]
    tags: dict[str, Any]
    datasets: list[dict[str, Any]]
    models: list[_Model]
    figures: list[Any]
    modules: list[str] | None


_KINDS = ("start", "metric", "end")
_RECORD: TypeAdapter[Any] = TypeAdapter(
    Annotated[_Start | _MetricRecord | _End, Field(discriminator="t")]
)


def check_record(rec: Any) -> dict[str, Any]:
    """The record with its values in the types the shipper uses; ``ValueError`` says why not."""
    if not isinstance(rec, dict):
        raise ValueError(f"a record is a JSON object, not {type(rec).__name__}")
    if rec.get("t") not in _KINDS:
        raise ValueError(
            f"t: the record kind must be one of {', '.join(_KINDS)}, not {rec.get('t')!r}"
        )
    try:
        return _RECORD.validate_python(rec)
    except ValidationError as err:
        reasons = [
            f"{'.'.join(str(p) for p in e['loc'][1:]) or 'record'}: {e['msg']}"
            for e in err.errors()[:3]
        ]
        raise ValueError("; ".join(reasons)) from None


@dataclass
class BadLine:
    """A complete journal line that is not a record of the expected shape."""

    number: int
    reason: str
    raw: str


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
    bad_lines: list[BadLine] = field(default_factory=list)


@dataclass
class ShipState:
    """What the sidecar says has reached MLflow, per run key."""

    run_ids: dict[str, str] = field(default_factory=dict)
    metrics_done: dict[str, int] = field(default_factory=dict)
    finished: set[str] = field(default_factory=set)

    def forget(self, key: str) -> None:
        self.run_ids.pop(key, None)
        self.metrics_done.pop(key, None)
        self.finished.discard(key)


def read_segment(path: Path) -> SegmentContents:
    """Every run in a segment; torn and malformed lines are counted, never raised."""
    runs: dict[str, RunRecords] = {}
    torn = 0
    bad: list[BadLine] = []
    last_ts = 0
    with open(path, "rb") as fh:
        for number, raw in enumerate(fh, start=1):
            try:
                rec = check_record(json.loads(raw))
            except ValueError as err:  # JSONDecodeError and UnicodeDecodeError included
                if raw.endswith(b"\n"):  # a complete line: corrupt or edited, not cut by a crash
                    text = raw.decode("utf-8", "replace").rstrip("\n")
                    bad.append(BadLine(number, str(err), text))
                else:
                    torn += 1
                continue
            run = runs.setdefault(rec["key"], RunRecords(rec["key"]))
            ts = rec.get("ts") or 0
            run.last_ts = max(run.last_ts, ts)
            last_ts = max(last_ts, ts)
            kind = rec["t"]
            if kind == "start":
                run.start = rec
            elif kind == "metric":
                run.metrics.append(rec)
            else:
                run.end = rec
    return SegmentContents(runs, torn, last_ts, bad)


def quarantine_path(segment_path: Path) -> Path:
    return segment_path.parent / QUARANTINE_DIR / segment_path.name


def quarantine(segment_path: Path, bad: list[BadLine]) -> Path | None:
    """Write a segment's malformed lines (with the reason) to ``quarantine/<segment>``.

    The segment is append-only, so its bad lines only grow: the file is rewritten whole (and
    atomically) when their number changed, never appended to twice."""
    if not bad:
        return None
    target = quarantine_path(segment_path)
    try:
        if target.exists():
            with open(target, "rb") as fh:
                if sum(1 for _ in fh) == len(bad):
                    return target
        target.parent.mkdir(exist_ok=True)
        part = target.with_name(f".{target.name}.{os.getpid()}.part")
        with open(part, "wb") as fh:
            for line in bad:
                record = {
                    "segment": segment_path.name,
                    "line": line.number,
                    "reason": line.reason,
                    "raw": line.raw,
                }
                fh.write(_dumps(record))
        os.replace(part, target)
    except OSError as err:  # the lines stay in the segment (and its archive) all the same
        log.warning("nbmlops: could not write %s: %s", target, err)
        return None
    return target


def read_ship_state(segment_path: Path) -> ShipState:
    """Replay the sidecar's lines in order; a ``forget`` line drops what was said before about
    its run (the store it named lost it: deleted or replaced)."""
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
            if not isinstance(rec, dict) or not isinstance(rec.get("key"), str):
                continue
            key = rec["key"]
            if rec.get("forget"):
                state.forget(key)
                continue
            if rec.get("run_id"):
                state.run_ids[key] = rec["run_id"]
            if isinstance(rec.get("metrics_done"), int):
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


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # another user's process
    return True


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

    def held_by_replayers(self) -> list[Path]:
        """Segments of ended processes on this host that another shipper (a detached one, a
        second ``nbmlops sync``) is shipping right now: locked, while their owner is gone."""
        held = []
        for path in self.segments():
            host, _, rest = path.stem.rpartition("-")[0].rpartition("-")
            if host != socket.gethostname() or not rest.isdigit() or _pid_alive(int(rest)):
                continue
            try:
                fd = os.open(path, os.O_RDONLY)
            except FileNotFoundError:
                continue
            try:
                fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
            except BlockingIOError:
                held.append(path)
            finally:
                os.close(fd)
        return held

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

    def pending_summary(self) -> dict[str, Any]:
        """Counts of runs in the journal not yet finished in MLflow (all segments), and of
        malformed lines set aside in ``quarantine/``."""
        pending = 0
        open_runs = 0
        segments = self.segments()
        for path in segments:
            contents = read_segment(path)
            quarantine(path, contents.bad_lines)
            state = read_ship_state(path)
            for key, run in contents.runs.items():
                if key not in state.finished:
                    pending += 1
                    if run.end is None:
                        open_runs += 1
        return {
            "pending": pending,
            "open": open_runs,
            "segments": len(segments),
            "quarantined": self.quarantined_lines(),
            "quarantine_dir": self.root / QUARANTINE_DIR,
        }

    def quarantined_lines(self) -> int:
        """Malformed lines kept in ``quarantine/`` (of live, dead and archived segments)."""
        total = 0
        for path in sorted((self.root / QUARANTINE_DIR).glob("*" + SEGMENT_SUFFIX)):
            with open(path, "rb") as fh:
                total += sum(1 for _ in fh)
        return total


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
