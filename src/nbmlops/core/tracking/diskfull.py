"""What a process could not write to its journal (a full disk, mostly), told in plain words."""

from __future__ import annotations

import errno
import shutil
from dataclasses import dataclass, field
from pathlib import Path

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
