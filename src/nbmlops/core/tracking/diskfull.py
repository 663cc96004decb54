"""What a process could not write to its journal (a full disk, mostly), told in plain words."""

from __future__ import annotations

import errno
import shutil
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nbmlops.core.tracking.journal import Segment

_FULL = (errno.ENOSPC, errno.EDQUOT)


def size_text(n: int) -> str:
    value = float(n)
    for unit in ("bytes", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{int(value)} bytes" if unit == "bytes" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{n} bytes"


def free_text(folder: Path) -> str:
    """``"12.0 KiB free of 256.0 KiB"`` for the filesystem holding ``folder``."""
    try:
        usage = shutil.disk_usage(folder)
    except OSError as err:
        return f"free space unknown: {err.strerror}"
    return f"{size_text(usage.free)} free of {size_text(usage.total)}"


def cause_text(err: OSError) -> str:
    if err.errno in _FULL:
        return "disk full"
    return f"cannot write ({err.strerror or err})"


@dataclass
class JournalTrouble:
    """Records this process could not journal: counted per run, never raised into user code."""

    folder: Path
    cause: str  # "disk full", or the OS error
    free: str  # free space when it last happened
    lost: dict[str, int] = field(default_factory=dict)  # run key -> records lost

    @classmethod
    def from_error(cls, folder: Path, err: OSError) -> JournalTrouble:
        return cls(folder, cause_text(err), free_text(folder))

    def update(self, err: OSError) -> None:
        self.cause = cause_text(err)
        self.free = free_text(self.folder)

    @property
    def total_lost(self) -> int:
        return sum(self.lost.values())

    def where(self) -> str:
        return f"{self.cause} in the journal folder {self.folder} ({self.free})"

    def reason(self, key: str) -> str:
        """The failure reason recorded on a run that lost records."""
        return (
            f"{self.cause}: {self.lost.get(key, 0)} journal record(s) of this run could not be "
            f"written to {self.folder} ({self.free})"
        )


class JournalWriter:
    """Appends records to this process's segment and never raises for a full disk.

    A record the disk cannot take is, for a run's start or end, held and written before
    anything newer once there is room; a run's end may use the segment's reserve. Any other
    record (a logged metric) is counted as lost on its run.
    """

    def __init__(
        self,
        folder: Path,
        segment: Callable[[], Segment],
        written: Callable[[dict[str, Any]], None],
    ):
        self.folder = folder
        self._segment = segment
        self._written = written  # called with each record once it is in the journal
        self.trouble: JournalTrouble | None = None
        self.held: list[dict[str, Any]] = []
        self._lock = threading.Lock()

    def write(self, record: dict[str, Any], essential: bool = False) -> bool:
        """True once ``record`` is in the journal."""
        with self._lock:
            if not self.held or self._write_held():
                try:
                    self._segment().append(record)
                except OSError as err:
                    self.note(err)
                else:
                    self._written(record)
                    if record.get("t") == "start":
                        self._segment().reserve()  # again, if an earlier run's end used it
                    return True
            if essential:
                self.held.append(record)
                # The room set aside for exactly this: a run's end, so that it is closed with
                # its reason rather than as killed by the next start.
                return (
                    record.get("t") == "end"
                    and self._segment().release_reserve()
                    and self._write_held()
                )
            assert self.trouble is not None
            key = record.get("key", "")
            self.trouble.lost[key] = self.trouble.lost.get(key, 0) + 1
            return False

    def write_held(self) -> bool:
        """Write what is held (there may be room again); True when nothing is left."""
        with self._lock:
            return self._write_held()

    def _write_held(self) -> bool:
        while self.held:
            try:
                self._segment().append(self.held[0])
            except OSError as err:
                self.note(err)
                return False
            self._written(self.held.pop(0))
        return True

    def note(self, err: OSError) -> None:
        """Remember a failed write (also of files staged next to the journal)."""
        if self.trouble is None:
            self.trouble = JournalTrouble.from_error(self.folder, err)
        else:
            self.trouble.update(err)

    def lost(self, key: str) -> int:
        return self.trouble.lost.get(key, 0) if self.trouble else 0
