"""RELIABILITY 9 and 29: the data store on a real disk that fills up (a small tmpfs).

Every kind of commit (frame, array, file, folder, a version file alone) meets ENOSPC: the
error names the store's folder and its free space, nothing partial is left, earlier versions
stay readable, and once space is freed the same commit succeeds.
"""

from __future__ import annotations

import errno
import os
import sqlite3
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from nbmlops.core.data.store import DataStore
from nbmlops.exceptions import DataStoreError
from tests.tmpfs import fill, small_disk


def frame(seed: int, n: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame({"x": rng.normal(size=n), "y": rng.integers(0, 1 << 40, size=n)})


def leftovers(root: Path) -> list[str]:
    return sorted(
        str(p.relative_to(root))
        for p in root.rglob("*")
        if ".tmp-" in p.name or p.name.startswith("incoming")
    )


def assert_disk_full(err: pytest.ExceptionInfo[DataStoreError], name: str, root: Path) -> None:
    text = str(err.value)
    assert f"Could not commit {name!r}" in text
    assert "no space left on the device (disk full)" in text
    assert f"{root} has " in text and " free" in text  # the folder and its free space
    assert "Free space on the disk holding" in text and "nothing partial was kept" in text
    assert isinstance(err.value.__cause__, OSError)
    assert err.value.__cause__.errno == errno.ENOSPC


def test_disk_full_at_every_kind_of_commit(tmp_path: Path, request: pytest.FixtureRequest):
    disk = small_disk(tmp_path / "disk", "8m", request)
    root = disk / "store"
    store = DataStore(root)
    small = frame(0, 100)
    (tmp_path / "small.bin").write_bytes(b"a small file\n")
    (tmp_path / "small-folder").mkdir()
    (tmp_path / "small-folder" / "a.txt").write_text("a")
    store.commit(small, "f")
    store.commit(np.arange(10), "a")
    store.commit(tmp_path / "small.bin", "file")
    store.commit(tmp_path / "small-folder", "folder")
    before = {v.ref for v in store.latest()}

    big_bytes = np.random.default_rng(1).bytes(1 << 20)
    (tmp_path / "big.bin").write_bytes(big_bytes)
    (tmp_path / "big-folder").mkdir()
    (tmp_path / "big-folder" / "one.bin").write_bytes(big_bytes[: 1 << 19])
    (tmp_path / "big-folder" / "two.bin").write_bytes(big_bytes[1 << 19 :])
    big = frame(2, 60_000)  # about 1 MB of parquet
    array = np.random.default_rng(3).normal(size=200_000)  # 1.6 MB of npy
    filler = fill(disk, leave=256 << 10)

    attempts = [
        (big, "f"),
        (array, "a"),
        (tmp_path / "big.bin", "file"),
        (tmp_path / "big-folder", "folder"),
    ]
    for obj, name in attempts:
        with pytest.raises(DataStoreError) as err:
            store.commit(obj, name)
        assert_disk_full(err, name, root)
        assert leftovers(root) == []
        assert {v.ref for v in store.latest()} == before
        assert store.verify() == []

    # Completely full: even a version file naming an object already stored cannot be written.
    fill(disk)
    with pytest.raises(DataStoreError) as err:
        store.commit(np.arange(10), "a-again")
    assert_disk_full(err, "a-again", root)
    assert leftovers(root) == [] and "a-again" not in store.names()

    # Earlier versions are intact and readable.
    pd.testing.assert_frame_equal(store.load("f@1"), small, check_exact=True)
    np.testing.assert_array_equal(store.load("a@1"), np.arange(10))
    out = store.checkout_path("file@1", tmp_path / "out.bin")
    assert out.read_bytes() == b"a small file\n"

    # Space freed: the same commits now succeed and read back exactly.
    filler.unlink()
    for obj, name in attempts:
        assert store.commit(obj, name).version.version == 2
    pd.testing.assert_frame_equal(store.load("f@2"), big, check_exact=True)
    np.testing.assert_array_equal(store.load("a@2"), array)
    assert store.checkout_path("file@2", tmp_path / "big-out.bin").read_bytes() == big_bytes
    assert store.commit(np.arange(10), "a-again").created
    assert store.verify() == [] and leftovers(root) == []
    db = root / "cache" / "stat.db"
    with sqlite3.connect(db) as conn:  # the stat cache survived the full disk
        assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    assert os.path.exists(db)


def test_disk_full_at_checkout_names_the_destination(
    tmp_path: Path, request: pytest.FixtureRequest
):
    store = DataStore(tmp_path / "store")
    payload = np.random.default_rng(4).bytes(1 << 20)
    (tmp_path / "big.bin").write_bytes(payload)
    store.commit(tmp_path / "big.bin", "big")
    disk = small_disk(tmp_path / "disk", "512k", request)
    with pytest.raises(DataStoreError) as err:
        store.checkout_path("big@1", disk / "big.bin")
    text = str(err.value)
    assert "no space left on the device (disk full)" in text
    assert f"{disk} has " in text and " free" in text
    assert "Free space on the disk holding" in text
    assert sorted(p.name for p in disk.iterdir()) == []  # no partial file at the name
