"""A real small filesystem (tmpfs) that tests fill up to see what a full disk does."""

from __future__ import annotations

import errno
import os
import subprocess
from pathlib import Path

import pytest

ROOT_NEEDED = (
    "this test mounts a small tmpfs to fill it up, which needs root: run it as root "
    "(the project's test machines do)"
)


class SmallDisk:
    """A tmpfs of ``size`` mounted at ``path``; ``fill()`` leaves it with no free byte."""

    def __init__(self, path: Path, size: str = "1m"):
        self.path = path
        self.size = size
        self.filler = path / "filler.bin"

    def mount(self) -> SmallDisk:
        if os.geteuid() != 0:
            pytest.fail(ROOT_NEEDED, pytrace=False)
        self.path.mkdir(parents=True, exist_ok=True)
        subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={self.size},mode=0755", "tmpfs", str(self.path)],
            check=True,
            capture_output=True,
        )
        return self

    def unmount(self) -> None:
        # Lazy: a shipper thread or kernel of the test may still hold a file open here.
        subprocess.run(["umount", "-l", str(self.path)], check=False, capture_output=True)

    def fill(self) -> None:
        """Write the filler until the disk refuses even one more byte."""
        with open(self.filler, "ab", buffering=0) as fh:
            for chunk in (1 << 16, 1 << 12, 1 << 8, 1):
                try:
                    while True:
                        fh.write(b"\0" * chunk)
                except OSError as err:
                    if err.errno != errno.ENOSPC:
                        raise

    def free(self) -> None:
        self.filler.unlink(missing_ok=True)


def segment_lines(journal: Path) -> list[bytes]:
    """Every line of every segment in ``journal`` (live or archived)."""
    lines: list[bytes] = []
    for seg in sorted([*journal.glob("*.jsonl"), *journal.glob("archive/*.jsonl")]):
        lines += seg.read_bytes().splitlines(keepends=True)
    return lines
