"""A real small disk for disk-full tests: a tmpfs mounted under the test's folder."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest


def small_disk(folder: Path, size: str, request: pytest.FixtureRequest) -> Path:
    """Mount a tmpfs of ``size`` (e.g. ``"2m"``) at ``folder``; unmounted when the test ends."""
    if os.geteuid() != 0:
        pytest.fail(
            "This test fills a real tmpfs it mounts itself, which needs root: run it as root "
            "(or in a container with CAP_SYS_ADMIN)"
        )
    folder.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        pytest.fail(f"Could not mount a tmpfs at {folder}: {done.stderr.strip()}")
    request.addfinalizer(lambda: subprocess.run(["umount", "-l", str(folder)], check=False))
    return folder


def fill(disk: Path, leave: int = 0) -> Path:
    """Fill ``disk`` with one file until at most ``leave`` bytes are free; returns the file."""
    filler = disk / "filler.bin"
    chunk = b"\0" * (64 << 10)
    with open(filler, "ab", buffering=0) as f:
        while True:
            st = os.statvfs(disk)
            free = st.f_bavail * st.f_frsize
            if free <= leave:
                return filler
            try:
                if not f.write(chunk[: min(len(chunk), free - leave)]):
                    return filler
            except OSError:  # full
                return filler
