"""The versioned data store: exact round trips, dedup, crash safety, concurrency, disk full,
path traversal and corruption (RELIABILITY cases 7-10), on a local folder and on memory://."""

from __future__ import annotations

import inspect
import json
import os
import random
import signal
import subprocess
import sys
import textwrap
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import fsspec
import numpy as np
import pandas as pd
import pytest

import nbmlops.core.data.store as store_module
from nbmlops.core.data import fileio
from nbmlops.core.data.backends import temp_suffix
from nbmlops.core.data.digest_files import digest_file
from nbmlops.core.data.hashing import digest_value
from nbmlops.core.data.records import CommitResult, DatasetVersion
from nbmlops.core.data.refs import parse_ref, validate_name
from nbmlops.core.data.store import DataStore
from nbmlops.exceptions import (
    DatasetNotFoundError,
    DataStoreError,
    IntegrityError,
    StoreError,
    UsageError,
)

SRC = Path(store_module.__file__).resolve().parents[3]


# ------------------------------------------------------------------------------------------
# Helpers
# ------------------------------------------------------------------------------------------


@pytest.fixture(params=["local", "memory"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[DataStore]:
    """An empty store on a local folder, or on fsspec's memory filesystem (unique root)."""
    if request.param == "local":
        yield DataStore(str(tmp_path / "store"))
        return
    root = f"nbmlops-test/{uuid.uuid4().hex}"
    yield DataStore(f"memory://{root}")
    mem = fsspec.filesystem("memory")
    if mem.exists(f"/{root}"):
        mem.rm(f"/{root}", recursive=True)


def store_files(store: DataStore, under: str = "") -> list[str]:
    """Every file below the store root (relative paths), read with fsspec, not the store."""
    fs, root = fsspec.core.url_to_fs(store.url)
    top = f"{root.rstrip('/')}/{under}".rstrip("/")
    if not fs.exists(top):
        return []
    prefix = root.rstrip("/") + "/"
    return sorted(p[len(prefix) :] if p.startswith(prefix) else p for p in fs.find(top))


def objects(store: DataStore) -> list[str]:
    return [f for f in store_files(store, "objects") if ".tmp-" not in f]


def temps(store: DataStore) -> list[str]:
    return [f for f in store_files(store) if ".tmp-" in f]


def mixed_frame(n: int = 40) -> pd.DataFrame:
    """Every dtype the round trip must keep, on a named MultiIndex."""
    index = pd.MultiIndex.from_arrays(
        [np.arange(n) % 4, [f"k{i:03d}" for i in range(n)]], names=["group", "key"]
    )
    return pd.DataFrame(
        {
            "f": np.linspace(-1, 1, n),
            "f32": np.arange(n, dtype="float32") / 3,
            "i": np.arange(n, dtype="int64") * 7,
            "u8": np.arange(n, dtype="uint8"),
            "cat": pd.Categorical(
                [("lo", "mid", "hi")[k % 3] for k in range(n)],
                categories=["lo", "mid", "hi"],
                ordered=True,
            ),
            "ts": pd.date_range("2024-03-30", periods=n, freq="h", tz="Europe/Paris"),
            "naive": pd.date_range("2020-01-01", periods=n, freq="D"),
            "td": pd.to_timedelta(np.arange(n), unit="s"),
            "ni": pd.array([k if k % 5 else None for k in range(n)], dtype="Int64"),
            "nb": pd.array([(True, None, False)[k % 3] for k in range(n)], dtype="boolean"),
            "ns": pd.array([f"s{k}" if k % 7 else None for k in range(n)], dtype="string"),
            "text": [f"row {k} {'é' * (k % 3)}" for k in range(n)],  # pandas 3 default str
            "flag": np.arange(n) % 2 == 0,
        },
        index=index,
    )


def run_child(code: str, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(SRC), env.get("PYTHONPATH")]))
    return subprocess.run(  # the test's own interpreter, on code written in this file
        [sys.executable, "-c", textwrap.dedent(code), *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=timeout,
        check=False,
    )


def popen_child(code: str, *args: str) -> subprocess.Popen[str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(SRC), env.get("PYTHONPATH")]))
    return subprocess.Popen(  # the test's own interpreter, on code written in this file
        [sys.executable, "-c", textwrap.dedent(code), *args],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )


def big_frame(seed: int, n: int = 200_000) -> pd.DataFrame:
    """A frame of a few MB (its Parquet is > 1 MiB: the disk-full test relies on that)."""
    rng = np.random.default_rng(seed)
    return pd.DataFrame(
        {
            "x": rng.normal(size=n),
            "k": rng.integers(0, 1000, n),
            "s": pd.array(rng.choice(["a", "bb", "ccc"], n), dtype="str"),
            "t": pd.date_range("2024-01-01", periods=n, freq="s", tz="UTC"),
        }
    )


# The children build the very same frames from this function's source.
BIG_FRAME = "import numpy as np, pandas as pd\n\n" + inspect.getsource(big_frame)


def assert_sound(store: DataStore) -> None:
    """What a user relies on after any crash: versions numbered without gaps, each one's
    objects present, every object file (referenced or not) matching the digest it is named by."""
    assert store.verify() == []
    for name in store.names():
        assert [v.version for v in store.log(name)] == list(range(1, len(store.log(name)) + 1))


# ------------------------------------------------------------------------------------------
# Round trips
# ------------------------------------------------------------------------------------------


def test_frame_round_trip_is_exact(store: DataStore) -> None:
    df = mixed_frame()
    result = store.commit(df, "mixed", message="first cut", author="ana")

    assert isinstance(result, CommitResult) and result.created
    v = result.version
    assert (v.ref, v.kind, v.format, v.shape) == ("mixed@1", "dataframe", "parquet", [40, 13])
    assert v.digest == digest_value(df).digest
    assert v.schema is not None and v.schema["ts"] == "datetime64[us, Europe/Paris]"
    assert v.profile is not None and v.profile["rows"] == 40
    assert (v.message, v.author, v.nbytes) == ("first cut", "ana", result.bytes_written)
    assert DatasetVersion.from_dict(json.loads(json.dumps(v.to_dict()))) == v

    loaded = store.load("mixed@1")
    pd.testing.assert_frame_equal(loaded, df, check_exact=True)
    assert loaded.index.names == ["group", "key"]
    assert str(loaded["text"].dtype) == "str" and str(loaded["ns"].dtype) == "string"
    pd.testing.assert_frame_equal(store.load("mixed"), df, check_exact=True)  # latest


def test_series_arrays_and_int_labels_round_trip(store: DataStore) -> None:
    int_labels = pd.DataFrame({0: [1.5, 2.5], 7: ["a", "b"]}, index=pd.RangeIndex(10, 14, 2))
    named = pd.Series(pd.array([1, None, 3], dtype="Int64"), name="count", index=list("xyz"))
    unnamed = pd.Series(pd.date_range("2024", periods=3, tz="UTC"))
    arrays = {
        "f-order": np.asfortranarray(np.arange(24, dtype=">i4").reshape(2, 3, 4)),
        "when": np.array(["2024-01-01", "2025-06-30"], dtype="datetime64[ns]"),
        "text": np.array(["a", "bcd"], dtype="<U3"),
        "empty": np.empty((0, 5), dtype=np.float16),
    }

    pd.testing.assert_frame_equal(
        store.load(store.commit(int_labels, "ints").version.ref), int_labels, check_exact=True
    )
    for name, ser in (("named", named), ("unnamed", unnamed)):
        v = store.commit(ser, name).version
        assert v.kind == "series"
        back = store.load(v.ref)
        pd.testing.assert_series_equal(back, ser, check_exact=True)
        assert back.name == ser.name
    for name, arr in arrays.items():
        back = store.load(store.commit(arr, name).version.ref)
        assert back.dtype == arr.dtype and back.shape == arr.shape
        np.testing.assert_array_equal(back, arr)

    with pytest.raises(UsageError, match="Python objects"):
        store.commit(np.array(["a", 1], dtype=object), "objects")
    assert "objects" not in store.names()


def test_frames_parquet_cannot_restore_are_refused(store: DataStore) -> None:
    mixed_labels = pd.DataFrame({"a": [1], 2: [3]})  # pyarrow turns the 2 into "2"
    ints_with_none = pd.DataFrame({"o": pd.Series([1, None], dtype=object)})  # -> float64
    ints_and_text = pd.DataFrame({"o": pd.Series([1, "x"], dtype=object)})

    with pytest.raises(UsageError, match="column labels"):
        store.commit(mixed_labels, "labels")
    with pytest.raises(UsageError, match="came back as float64"):
        store.commit(ints_with_none, "lossy")
    with pytest.raises(UsageError, match="cannot be stored as Parquet"):
        store.commit(ints_and_text, "mixed")
    assert store.names() == [] and objects(store) == []


def test_file_and_folder_round_trip(store: DataStore, tmp_path: Path) -> None:
    src = tmp_path / "src"
    (src / "sub" / "deeper").mkdir(parents=True)
    (src / "readme.txt").write_text("hello\n")
    (src / "sub" / "blob.bin").write_bytes(os.urandom(70_000))
    (src / "sub" / "deeper" / "empty").write_bytes(b"")
    (src / "sub" / "deeper" / "same.txt").write_text("hello\n")  # same bytes as readme.txt

    file_v = store.commit(src / "sub" / "blob.bin", "blob").version
    folder_v = store.commit(str(src), "tree").version

    assert (file_v.kind, file_v.format, file_v.shape) == ("file", "bytes", [70_000])
    assert file_v.source == str((src / "sub" / "blob.bin").resolve())
    assert (folder_v.kind, folder_v.format, folder_v.shape) == ("folder", "tree", [4])
    # 3 distinct file contents (blob.bin shared with the file commit) + 1 manifest
    assert len(objects(store)) == 4

    out = tmp_path / "out"
    got_file = store.checkout_path("blob@1", out / "copy.bin")
    assert got_file.read_bytes() == (src / "sub" / "blob.bin").read_bytes()
    assert store.checkout_path("blob", out) == out / "blob.bin"  # into a folder: its name
    tree = store.checkout_path("tree@1", out / "tree")
    for f in src.rglob("*"):
        if f.is_file():
            assert (tree / f.relative_to(src)).read_bytes() == f.read_bytes()
    assert not [p for p in out.rglob("*") if ".tmp-" in p.name]

    with pytest.raises(UsageError, match="checkout_path"):
        store.load("tree")
    with pytest.raises(UsageError, match="local files"):
        store.commit("s3://bucket/key.csv", "remote")
    with pytest.raises(UsageError, match="No such file"):
        store.commit(tmp_path / "missing.csv", "missing")


def test_frame_checkout_writes_its_parquet(store: DataStore, tmp_path: Path) -> None:
    df = mixed_frame(10)
    store.commit(df, "small")
    path = store.checkout_path("small", tmp_path)
    assert path == tmp_path / "small-1.parquet"
    pd.testing.assert_frame_equal(pd.read_parquet(path), df, check_exact=True)


# ------------------------------------------------------------------------------------------
# Dedup, versions, lookups
# ------------------------------------------------------------------------------------------


def test_identical_content_is_stored_once(store: DataStore) -> None:
    v1 = mixed_frame(30)
    v2 = v1.assign(f=v1["f"] * 2)

    first = store.commit(v1, "sales")
    again = store.commit(v1.copy(), "sales")
    assert (again.created, again.bytes_written, again.version) == (False, 0, first.version)
    assert len(objects(store)) == 1 and len(store.log("sales")) == 1

    other = store.commit(v1, "sales-copy")
    assert other.created and other.bytes_written == 0 and len(objects(store)) == 1

    second = store.commit(v2, "sales")
    back_to_first = store.commit(v1, "sales")
    assert second.bytes_written > 0 and len(objects(store)) == 2
    assert (back_to_first.created, back_to_first.bytes_written) == (True, 0)
    assert back_to_first.version.ref == "sales@3"
    assert back_to_first.version.digest == first.version.digest
    assert back_to_first.version.nbytes == first.version.nbytes

    assert [v.ref for v in store.log("sales")] == ["sales@1", "sales@2", "sales@3"]
    assert store.names() == ["sales", "sales-copy"]
    assert [v.ref for v in store.latest()] == ["sales@3", "sales-copy@1"]
    assert sorted(v.ref for v in store.find_digest(first.version.digest)) == [
        "sales-copy@1",
        "sales@1",
        "sales@3",
    ]
    pd.testing.assert_frame_equal(store.load("sales@2"), v2, check_exact=True)


def test_layout_on_disk(tmp_path: Path) -> None:
    store = DataStore(tmp_path / "store")
    arr = np.arange(5)
    v = store.commit(arr, "arr").version
    assert store_files(store) == [f"objects/{v.digest[:2]}/{v.digest}.npy", "versions/arr/1.json"]
    meta = json.loads((tmp_path / "store" / "versions" / "arr" / "1.json").read_text())
    assert meta["digest"] == v.digest and meta["version"] == 1


def test_missing_versions_name_what_exists(store: DataStore) -> None:
    with pytest.raises(DatasetNotFoundError, match="holds no datasets yet"):
        store.get("nothing")
    store.commit(np.arange(3), "a")
    store.commit(np.arange(4), "a")
    store.commit(np.arange(5), "b")

    with pytest.raises(DatasetNotFoundError) as err:
        store.get("a@7")
    assert "a@7 does not exist" in str(err.value) and "a@1, a@2" in str(err.value)
    assert isinstance(err.value, KeyError)
    with pytest.raises(DatasetNotFoundError, match="Known datasets: a, b"):
        store.load("c")
    with pytest.raises(DatasetNotFoundError):
        store.log("c")


def test_refs_parse_and_validate() -> None:
    assert parse_ref("sales@3") == ("sales", 3)
    assert parse_ref("sales") == ("sales", None)
    assert parse_ref("sales@latest") == ("sales", None)
    assert validate_name("v1.2_final-B") == "v1.2_final-B"
    for bad in ("sales@0", "sales@-1", "sales@x", "sales@1@2", "sales@"):
        with pytest.raises(UsageError, match="NAME@k"):
            parse_ref(bad)


# ------------------------------------------------------------------------------------------
# RELIABILITY 10: names and links that point out of the store
# ------------------------------------------------------------------------------------------

TRAVERSAL_NAMES = [
    "../../etc/passwd",
    "%2e%2e%2f",
    "%2e%2e%2fetc%2fpasswd",
    "%252e%252e%252f",
    "..\\x",
    "a;/../x",
    "/etc/passwd",
    "//server/share",
    "C:\\Windows",
    "file:///etc/passwd",
    "file://../x",
    "..",
    ".",
    "a/../b",
    "a..b",
    ".hidden",
    "~root",
    "a\x00b",
    "",
    "x" * 129,
]


def test_traversal_names_are_refused_before_anything_is_written(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "passwd").write_text("root:x:0:0\n")
    root = tmp_path / "deep" / "store"
    store = DataStore(root)
    frame = pd.DataFrame({"a": [1, 2]})

    for name in TRAVERSAL_NAMES:
        with pytest.raises(UsageError, match="Invalid dataset name") as err:
            store.commit(frame, name)
        assert "letters, digits" in str(err.value)  # the fix is part of the message
        for call in (store.get, store.load, store.log, store.verify):
            with pytest.raises(UsageError):
                call(name)
        with pytest.raises(UsageError):
            store.checkout_path(name, tmp_path / "co")
        with pytest.raises(UsageError):
            store.get(f"{name}@1")

    assert not root.exists() and not (tmp_path / "deep").exists()
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["outside", "passwd"]
    assert (outside / "passwd").read_text() == "root:x:0:0\n"


def test_symlinks_out_of_the_store_are_refused(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    store = DataStore(tmp_path / "store")
    store.commit(np.arange(3), "fine")
    planted = DatasetVersion(
        "evil", 1, "0" * 32, "ndarray", "npy", [3], None, None, "", "x", 0.0, 1
    ).to_dict()
    (outside / "1.json").write_text(json.dumps(planted))
    (tmp_path / "store" / "versions" / "evil").symlink_to(outside, target_is_directory=True)
    frame = pd.DataFrame({"v": [1.0, 2.0]})
    prefix = digest_value(frame).digest[:2]
    (tmp_path / "store" / "objects" / prefix).symlink_to(outside, target_is_directory=True)

    with pytest.raises(DataStoreError, match="outside the data store root"):
        store.commit(np.arange(9), "evil")
    with pytest.raises(DataStoreError, match="outside the data store root"):
        store.get("evil@1")
    with pytest.raises(DataStoreError, match="outside the data store root"):
        store.commit(frame, "innocent")  # its object folder is the planted link
    problems = store.verify()
    assert problems and all("outside the data store root" in p for p in problems)

    assert sorted(p.name for p in outside.iterdir()) == ["1.json"]
    assert store.verify("fine") == [] and store.log("fine")[0].ref == "fine@1"


# ------------------------------------------------------------------------------------------
# Corruption is detected, never returned
# ------------------------------------------------------------------------------------------


def flip_byte(store: DataStore, rel: str, where: float = 0.5) -> None:
    fs, root = fsspec.core.url_to_fs(store.url)
    path = f"{root.rstrip('/')}/{rel}"
    data = bytearray(fs.cat_file(path))
    pos = int(len(data) * where)
    data[pos] ^= 0x55
    fs.pipe_file(path, bytes(data))


def test_corrupted_objects_raise_and_are_reported(store: DataStore, tmp_path: Path) -> None:
    frame_v = store.commit(big_frame(1, n=5_000), "frame").version
    array_v = store.commit(np.arange(1000, dtype=np.int64), "array").version
    (tmp_path / "data.csv").write_text("a,b\n" + "1,2\n" * 1000)
    file_v = store.commit(tmp_path / "data.csv", "file").version
    assert store.verify() == []

    flip_byte(store, f"objects/{frame_v.digest[:2]}/{frame_v.digest}.parquet")
    flip_byte(store, f"objects/{array_v.digest[:2]}/{array_v.digest}.npy", where=0.9)
    flip_byte(store, f"objects/{file_v.digest[:2]}/{file_v.digest}.bin")

    with pytest.raises(IntegrityError, match=frame_v.digest):
        store.load("frame")
    with pytest.raises(IntegrityError, match="does not match its recorded digest"):
        store.load("array")  # npy data bytes decode fine: only the digest can tell
    with pytest.raises(IntegrityError, match="does not match its recorded digest"):
        store.checkout_path("file", tmp_path / "out.csv")
    assert not (tmp_path / "out.csv").exists()
    assert not [p for p in tmp_path.iterdir() if ".tmp-" in p.name]

    problems = store.verify()
    assert len(problems) == 3
    for v in (frame_v, array_v, file_v):
        assert any(v.digest in p and v.ref in p for p in problems), problems
    assert store.verify("array@1") == [p for p in problems if "array@1" in p]


# ------------------------------------------------------------------------------------------
# RELIABILITY 7: killed mid-commit
# ------------------------------------------------------------------------------------------

CRASH_AT_POINT = (
    BIG_FRAME
    + """
import os, sys
from nbmlops.core.data.store import DataStore

url, point = sys.argv[1], sys.argv[2]
real_fsync, real_replace, real_link = os.fsync, os.replace, os.link

def fd_path(fd):
    try:
        return os.readlink(f"/proc/self/fd/{fd}")
    except OSError:
        return ""

def fsync(fd):
    if point == "before_fsync" and ".parquet.tmp-" in fd_path(fd):
        os._exit(9)  # temp object fully written, never fsynced
    real_fsync(fd)

def replace(src, dst, **kw):
    if point == "before_rename" and ".parquet.tmp-" in str(src):
        os._exit(9)  # temp object durable, not renamed into place
    real_replace(src, dst, **kw)
    if point == "after_rename" and str(dst).endswith(".parquet"):
        os._exit(9)  # object in place, no version file yet

def link(src, dst, **kw):
    if point == "before_version" and "/versions/" in str(dst):
        os._exit(9)  # version temp written, not linked to its name
    real_link(src, dst, **kw)

os.fsync, os.replace, os.link = fsync, replace, link
DataStore(url).commit(big_frame(7), "big")
print("committed")
"""
)


@pytest.mark.parametrize(
    "point", ["before_fsync", "before_rename", "after_rename", "before_version"]
)
def test_commit_killed_at_each_step_leaves_a_sound_store(tmp_path: Path, point: str) -> None:
    store = DataStore(tmp_path / "store")
    store.commit(big_frame(1, n=1000), "big")  # an earlier version that must survive

    done = run_child(CRASH_AT_POINT, store.url, point)

    assert done.returncode == 9, done.stdout + done.stderr
    assert_sound(store)
    assert [v.ref for v in store.log("big")] == ["big@1"]  # no version of the killed commit
    leftovers = temps(store)
    assert len(leftovers) == (0 if point == "after_rename" else 1), leftovers
    assert store.clean_orphans() == len(leftovers)
    assert temps(store) == []
    result = store.commit(big_frame(7), "big")
    assert result.created and result.version.ref == "big@2"
    pd.testing.assert_frame_equal(store.load("big@2"), big_frame(7), check_exact=True)
    assert_sound(store)


COMMIT_FOREVER = (
    BIG_FRAME
    + """
import os, sys
from nbmlops.core.data.store import DataStore

store, src = DataStore(sys.argv[1]), sys.argv[2]
frame = big_frame(0)
os.makedirs(src, exist_ok=True)
store.commit(big_frame(1, n=10), "warm-up")  # imports done: the kill lands in real work
print("ready", flush=True)
i = 0
while True:  # new content every time, so every commit writes objects
    if i % 2:
        for j in range(50):  # a folder commit: 50 puts, each temp + fsync + rename
            with open(os.path.join(src, f"part-{j:02d}.txt"), "w") as f:
                f.write(f"{i}-{j}\\n" * 400)
        store.commit(src, "folder")
    else:
        frame.iloc[0, 0] = i
        store.commit(frame, "frame")
    i += 1
"""
)


KILLS = 8


def test_commits_killed_at_random_moments_leave_a_sound_store(tmp_path: Path) -> None:
    store = DataStore(tmp_path / "store")
    rng = random.Random(20240607)
    kills_with_temps = 0
    for _ in range(KILLS):
        child = popen_child(COMMIT_FOREVER, store.url, str(tmp_path / "src"))
        assert child.stdout is not None and child.stdout.readline().strip() == "ready"
        time.sleep(rng.uniform(0, 0.3))
        child.send_signal(signal.SIGKILL)
        child.communicate(timeout=30)
        assert child.returncode == -signal.SIGKILL

        assert_sound(store)  # every version complete, every object matching its name
        leftovers = temps(store)
        kills_with_temps += bool(leftovers)
        assert store.clean_orphans() == len(leftovers)
        assert temps(store) == []

    after = store.commit(pd.DataFrame({"n": [1, 2, 3]}), "after")
    assert after.created and store.load("after").equals(pd.DataFrame({"n": [1, 2, 3]}))
    assert_sound(store)
    print(f"kills that left a temp file: {kills_with_temps} of {KILLS}")


# ------------------------------------------------------------------------------------------
# RELIABILITY 8: two processes commit the same frame at once
# ------------------------------------------------------------------------------------------

COMMIT_AT_SIGNAL = (
    BIG_FRAME
    + """
import json, os, sys, time
from nbmlops.core.data.store import DataStore

url, barrier, me, rounds = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
frames = [big_frame(100 + r, n=50_000) for r in range(rounds)]
for r in range(rounds):
    open(os.path.join(barrier, f"ready-{r}-{me}"), "w").close()
    while not os.path.exists(os.path.join(barrier, f"go-{r}")):
        time.sleep(0.0005)
    res = DataStore(url).commit(frames[r], f"same{r}")
    print(json.dumps({"round": r, "created": res.created, "ref": res.version.ref,
                      "digest": res.version.digest}), flush=True)
"""
)


def test_two_processes_commit_the_same_frame_at_once(tmp_path: Path) -> None:
    store = DataStore(tmp_path / "store")
    barrier = tmp_path / "barrier"
    barrier.mkdir()
    rounds = 4
    children = [
        popen_child(COMMIT_AT_SIGNAL, store.url, str(barrier), me, str(rounds)) for me in "ab"
    ]
    deadline = time.monotonic() + 60
    for r in range(rounds):
        while not all((barrier / f"ready-{r}-{me}").exists() for me in "ab"):
            assert time.monotonic() < deadline, [c.poll() for c in children]
            time.sleep(0.001)
        (barrier / f"go-{r}").touch()
    outputs = [c.communicate(timeout=60) for c in children]
    assert [c.returncode for c in children] == [0, 0], outputs

    results = [json.loads(line) for out, _ in outputs for line in out.splitlines()]
    for r in range(rounds):
        mine = [x for x in results if x["round"] == r]
        digest = big_frame_digest(100 + r)
        assert [x["digest"] for x in mine] == [digest, digest]
        assert any(x["created"] for x in mine)
        versions = store.log(f"same{r}")
        assert all(v.digest == digest for v in versions)
        # one version (the second writer saw it unchanged), or two distinct ones
        assert sorted({x["ref"] for x in mine}) == [v.ref for v in versions]
        assert len([o for o in objects(store) if digest in o]) == 1
    assert len(objects(store)) == rounds
    assert temps(store) == []
    assert_sound(store)


def big_frame_digest(seed: int) -> str:
    return digest_value(big_frame(seed, n=50_000)).digest


# ------------------------------------------------------------------------------------------
# RELIABILITY 9: disk full (a real EFBIG from RLIMIT_FSIZE) during a commit
# ------------------------------------------------------------------------------------------

COMMIT_UNDER_FILE_SIZE_LIMIT = (
    BIG_FRAME
    + """
import json, resource, signal, sys
from nbmlops.core.data.store import DataStore
from nbmlops.exceptions import DataStoreError

store = DataStore(sys.argv[1])
store.commit(big_frame(1, n=100), "small")  # fits: the store exists before the limit
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails with EFBIG
resource.setrlimit(resource.RLIMIT_FSIZE, (1 << 20, resource.RLIM_INFINITY))
out = {}
try:
    store.commit(big_frame(2), "big")
    out["error"] = None
except DataStoreError as err:
    out["error"] = str(err)
    out["cause"] = type(err.__cause__).__name__
resource.setrlimit(resource.RLIMIT_FSIZE, (resource.RLIM_INFINITY, resource.RLIM_INFINITY))
print(json.dumps(out), flush=True)
sys.stdin.readline()  # the test looks at the store now
res = store.commit(big_frame(2), "big")
print(json.dumps({"ref": res.version.ref, "created": res.created}), flush=True)
"""
)


def test_disk_full_during_a_commit_leaves_nothing_partial(tmp_path: Path) -> None:
    store = DataStore(tmp_path / "store")
    child = popen_child(COMMIT_UNDER_FILE_SIZE_LIMIT, store.url)
    assert child.stdout is not None
    first = json.loads(child.stdout.readline() or "{}")
    try:
        assert first.get("error"), child.stderr.read() if child.stderr else ""
        assert "Could not commit 'big'" in first["error"]
        assert "file too large" in first["error"]
        assert str(tmp_path / "store") in first["error"]
        assert "nothing partial was kept" in first["error"]
        assert first["cause"] == "OSError"
        # nothing of the failed commit: no object, no version, no temp file
        assert [v.ref for v in store.latest()] == ["small@1"]
        assert len(objects(store)) == 1 and temps(store) == []
        assert store.verify() == []
    finally:
        out, err = child.communicate("\n", timeout=60)
    assert child.returncode == 0, err
    assert json.loads(out.strip()) == {"ref": "big@1", "created": True}
    pd.testing.assert_frame_equal(store.load("big@1"), big_frame(2), check_exact=True)
    assert_sound(store)


def test_write_errors_are_store_errors(tmp_path: Path) -> None:
    store = DataStore(tmp_path / "store")
    store.commit(np.arange(3), "a")
    (tmp_path / "store" / "objects").rename(tmp_path / "objects-moved")
    (tmp_path / "store" / "objects").write_text("not a folder")  # ENOTDIR on every write
    with pytest.raises(DataStoreError, match="Could not commit 'b'") as err:
        store.commit(np.arange(4), "b")
    assert isinstance(err.value, StoreError) and "store" in str(err.value)
    assert store.names() == ["a"]


# ------------------------------------------------------------------------------------------
# Orphans
# ------------------------------------------------------------------------------------------


def test_clean_orphans_spares_commits_in_flight(tmp_path: Path) -> None:
    store = DataStore(tmp_path / "store")
    v = store.commit(np.arange(3), "a").version
    folder = tmp_path / "store" / "objects" / v.digest[:2]
    live = folder / f"{v.digest}.npy{temp_suffix()}"  # this (live) process
    elsewhere = folder / f"{v.digest}.npy.tmp-otherhost-1-abc"  # another host's, recent
    stale = folder / f"{v.digest}.npy.tmp-otherhost-2-def"  # unknown writer, 2 hours old
    for p in (live, elsewhere, stale):
        p.write_bytes(b"partial")
    os.utime(stale, (time.time() - 7200, time.time() - 7200))

    assert store.clean_orphans() == 1
    assert sorted(p.name for p in folder.iterdir() if ".tmp-" in p.name) == sorted(
        [live.name, elsewhere.name]
    )
    assert store.clean_orphans(older_than=0) == 2
    assert temps(store) == [] and store.verify() == []


# ------------------------------------------------------------------------------------------
# File commits: one read, and none for unchanged files (the stat cache)
# ------------------------------------------------------------------------------------------

OLD = 1_700_000_000 * 10**9  # an mtime far older than any commit below: cache entries trusted


@pytest.fixture(autouse=True)
def private_user_cache(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """Stores that are not local keep their stat cache under ~/.cache: keep it in tmp_path."""
    cache_home = tmp_path / "xdg-cache"
    monkeypatch.setenv("XDG_CACHE_HOME", str(cache_home))
    return cache_home


def write_old(path: Path, data: bytes, mtime_ns: int = OLD) -> Path:
    path.write_bytes(data)
    os.utime(path, ns=(mtime_ns, mtime_ns))
    return path


def same_size_other_bytes(path: Path) -> bytes:
    """Overwrite ``path`` in place (same inode) with different bytes of the same length and
    put its mtime back: only a read can tell it changed."""
    st = path.stat()
    data = path.read_bytes()
    other = bytes(b ^ 0xFF for b in data[:64]) + data[64:]
    path.write_bytes(other)
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    after = path.stat()
    assert (after.st_size, after.st_mtime_ns, after.st_ino) == (
        st.st_size,
        st.st_mtime_ns,
        st.st_ino,
    )
    return other


def count_reads(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every pass over a source or object file the store makes (one ``fileio.pump`` call each)."""
    calls: list[str] = []
    real = fileio.pump

    def pump(src: object, name: object, size_hint: int, out: object = None, *rest: object):
        calls.append("copy" if out is not None else "hash")
        return real(src, name, size_hint, out, *rest)

    monkeypatch.setattr(fileio, "pump", pump)
    return calls


def test_file_commit_reads_once_and_matches_digest_file(
    store: DataStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(fileio, "CHUNK", 64 << 10)  # many chunks, one odd tail
    monkeypatch.setattr(fileio, "_SMALL_CHUNK", 4 << 10)
    data = np.random.default_rng(5).bytes((1 << 20) + 12_345)
    src = write_old(tmp_path / "data.bin", data)
    reads = count_reads(monkeypatch)

    result = store.commit(src, "data")

    assert result.created and result.bytes_written == len(data)
    assert result.version.digest == digest_file(src).digest == digest_value(data).digest
    if store._backend.local:
        assert reads == ["copy"]  # hashed while it was copied: a single pass
    else:
        assert reads == ["hash", "copy"]  # hashed, then uploaded (checked again)
    assert objects(store) == [f"objects/{result.version.digest[:2]}/{result.version.digest}.bin"]
    assert temps(store) == []
    out = store.checkout_path("data", tmp_path / "out.bin")
    assert out.read_bytes() == data
    assert store.verify() == []

    # the same bytes under another name, or inside a folder: stored once, nothing rewritten
    copy = tmp_path / "folder" / "copy.bin"
    copy.parent.mkdir()
    write_old(copy, data)
    other = store.commit(copy, "other")
    assert other.created and other.bytes_written == 0
    assert other.version.digest == result.version.digest
    tree = store.commit(copy.parent, "tree")
    assert tree.created and len(objects(store)) == 2  # the file's object + the manifest


def test_recommitting_an_unchanged_file_reads_nothing(
    store: DataStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, private_user_cache: Path
) -> None:
    src = write_old(tmp_path / "data.csv", b"a,b\n" + b"1,2\n" * 5000)
    first = store.commit(src, "data").version
    if store._backend.local:
        assert (Path(store.url) / "cache" / "stat.db").is_file()
    else:
        assert (private_user_cache / "nbmlops" / "stat.db").is_file()
    reads = count_reads(monkeypatch)

    again = store.commit(src, "data")
    assert (again.created, again.bytes_written, again.version) == (False, 0, first)
    assert reads == []

    # Evidence without timing: new bytes under the recorded (size, mtime, inode) are not
    # seen, because the file is not read at all.
    same_size_other_bytes(src)
    assert digest_file(src).digest != first.digest
    fooled = store.commit(src, "data")
    assert (fooled.created, fooled.version) == (False, first)
    assert reads == []
    # another name for the same file: a new version pointing at the stored object, no read
    alias = store.commit(src, "alias")
    assert alias.created and alias.bytes_written == 0 and alias.version.digest == first.digest
    assert reads == []


def test_stat_cache_entries_are_invalidated_by_size_mtime_and_inode(
    store: DataStore, tmp_path: Path
) -> None:
    src = write_old(tmp_path / "data.bin", b"x" * 10_000)
    v1 = store.commit(src, "data").version

    # a different mtime: read again, the change is seen
    other = same_size_other_bytes(src)
    os.utime(src, ns=(OLD + 10**9, OLD + 10**9))
    v2 = store.commit(src, "data").version
    assert v2.version == 2 and v2.digest == digest_value(other).digest != v1.digest

    # a different size, mtime put back: read again
    write_old(src, b"y" * 10_001, OLD + 10**9)
    v3 = store.commit(src, "data").version
    assert v3.version == 3 and v3.digest == digest_value(b"y" * 10_001).digest

    # another file renamed over it (a new inode), same size and mtime: read again
    new = write_old(tmp_path / "new.bin", b"z" * 10_001, OLD + 10**9)
    os.replace(new, src)
    v4 = store.commit(src, "data").version
    assert v4.version == 4 and v4.digest == digest_value(b"z" * 10_001).digest
    assert store.verify() == []


def test_a_file_modified_just_before_its_commit_is_read_again(
    store: DataStore, tmp_path: Path
) -> None:
    """Racy git: a change within the mtime granularity right after the read would keep size
    and mtime; an entry recorded for a file younger than RACY_NS is therefore not trusted."""
    src = tmp_path / "fresh.bin"
    src.write_bytes(b"0123456789" * 1000)  # mtime: now, i.e. within 2 s of the commit
    v1 = store.commit(src, "fresh").version

    other = same_size_other_bytes(src)  # same size, mtime and inode as recorded
    v2 = store.commit(src, "fresh").version
    assert v2.version == 2 and v2.digest == digest_value(other).digest != v1.digest

    # once the file is old enough when it is read, its entry is trusted
    os.utime(src, ns=(OLD, OLD))
    v3 = store.commit(src, "fresh").version
    assert v3 == v2  # unchanged content; this read recorded a trusted entry
    same_size_other_bytes(src)
    assert store.commit(src, "fresh").version == v2  # not read: trusted now


def test_recommitting_an_unchanged_folder_reads_nothing(
    store: DataStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = tmp_path / "tree"
    (root / "sub").mkdir(parents=True)
    for k in range(5):
        write_old(root / "sub" / f"part-{k}.csv", f"k,{k}\n".encode() * 1000)
    write_old(root / "readme.txt", b"hello\n")
    first = store.commit(root, "tree").version
    reads = count_reads(monkeypatch)

    assert store.commit(root, "tree").version == first
    same_size_other_bytes(root / "sub" / "part-3.csv")
    assert store.commit(root, "tree").version == first  # not read: cached
    assert reads == []

    write_old(root / "readme.txt", b"hello, world\n")  # size changed: only this file is read
    second = store.commit(root, "tree").version
    assert second.version == 2
    assert reads == (["copy"] if store._backend.local else ["hash", "copy"])  # upload: 2nd
    out = store.checkout_path("tree@2", tmp_path / "out")
    assert (out / "readme.txt").read_bytes() == b"hello, world\n"
    assert store.verify() == []


def test_a_cached_digest_whose_object_is_gone_is_read_again(tmp_path: Path) -> None:
    store = DataStore(tmp_path / "store")
    data = b"abc" * 10_000
    src = write_old(tmp_path / "data.bin", data)
    v = store.commit(src, "data").version
    obj = tmp_path / "store" / "objects" / v.digest[:2] / f"{v.digest}.bin"
    obj.unlink()
    assert store.verify()  # the version's object is missing

    again = store.commit(src, "data")
    assert (again.created, again.version, again.bytes_written) == (False, v, len(data))
    assert obj.read_bytes() == data and store.verify() == []


def test_a_same_size_change_after_a_commit_is_stored(
    store: DataStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Same size as the latest version: hashed first (probably unchanged), then stored."""
    src = write_old(tmp_path / "data.bin", b"a" * 50_000)
    store.commit(src, "data")
    write_old(src, b"b" * 50_000, OLD + 10**9)
    reads = count_reads(monkeypatch)
    v2 = store.commit(src, "data").version
    assert v2.version == 2 and v2.digest == digest_value(b"b" * 50_000).digest
    assert reads[0] == "hash" and "copy" in reads
    assert store.checkout_path("data@2", tmp_path / "out.bin").read_bytes() == b"b" * 50_000
    assert store.verify() == [] and temps(store) == []


def test_a_file_changing_while_it_is_committed_leaves_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = DataStore(tmp_path / "store")
    src = write_old(tmp_path / "data.bin", b"q" * 100_000)
    real = fileio.pump

    def pump_then_append(src_file: object, name: object, hint: int, *rest: object):
        result = real(src_file, name, hint, *rest)
        with open(src, "ab") as f:  # a writer appends while the commit is in flight
            f.write(b"more")
        return result

    monkeypatch.setattr(fileio, "pump", pump_then_append)
    with pytest.raises(DataStoreError, match="changed while it was being committed"):
        store.commit(src, "data")
    monkeypatch.undo()
    assert objects(store) == [] and temps(store) == [] and store.names() == []
    assert not (tmp_path / "store" / "cache" / "stat.db").exists()  # nothing recorded
    v = store.commit(src, "data").version
    assert v.digest == digest_value(b"q" * 100_000 + b"more").digest


def test_recommitting_an_unchanged_frame_writes_nothing(tmp_path: Path) -> None:
    store = DataStore(tmp_path / "store")
    df = mixed_frame(50)
    first = store.commit(df, "frame").version

    def snapshot() -> dict[str, tuple[int, int]]:
        return {
            str(p): (p.stat().st_size, p.stat().st_mtime_ns)
            for p in (tmp_path / "store").rglob("*")
        }

    before = snapshot()
    again = store.commit(df.copy(), "frame")
    assert (again.created, again.bytes_written, again.version) == (False, 0, first)
    assert snapshot() == before
    assert not (tmp_path / "store" / "cache").exists()  # frames never touch the stat cache


def test_a_damaged_stat_cache_is_ignored(tmp_path: Path) -> None:
    store = DataStore(tmp_path / "store")
    src = write_old(tmp_path / "data.bin", b"d" * 1000)
    v = store.commit(src, "data").version
    (tmp_path / "store" / "cache" / "stat.db").write_bytes(b"not a database" * 100)
    for suffix in ("-wal", "-shm"):
        (tmp_path / "store" / "cache" / f"stat.db{suffix}").unlink(missing_ok=True)
    assert store.commit(src, "data").version == v  # read again; the database is rebuilt
    same_size_other_bytes(src)
    assert store.commit(src, "data").version == v  # the rebuilt cache answered: no read
    write_old(src, b"e" * 1000, OLD + 10**9)
    assert store.commit(src, "data").version.version == 2


def test_a_cache_folder_linked_out_of_the_store_is_not_used(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    store = DataStore(tmp_path / "store")
    store.commit(np.arange(3), "fine")
    (tmp_path / "store" / "cache").symlink_to(outside, target_is_directory=True)
    src = write_old(tmp_path / "data.bin", b"s" * 5000)

    v = store.commit(src, "data").version
    assert store.commit(src, "data").version == v
    assert list(outside.iterdir()) == []  # nothing written through the link
    assert store.verify() == []


def test_large_files_start_their_write_back_early(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Files of at least 2 x _EARLY_FLUSH bytes get an EarlyFlush (a helper thread that
    fdatasyncs while they are written), at commit and at checkout; same bytes either way."""
    monkeypatch.setattr(fileio, "CHUNK", 16 << 10)
    monkeypatch.setattr(fileio, "_SMALL_CHUNK", 4 << 10)
    monkeypatch.setattr(fileio, "_EARLY_FLUSH", 64 << 10)
    flushed: list[int] = []
    real_wrote = fileio.EarlyFlush.wrote

    def wrote(self: fileio.EarlyFlush, n: int) -> None:
        flushed.append(n)
        real_wrote(self, n)

    monkeypatch.setattr(fileio.EarlyFlush, "wrote", wrote)
    data = np.random.default_rng(9).bytes(1 << 20)
    src = write_old(tmp_path / "big.bin", data)
    store = DataStore(tmp_path / "store")

    v = store.commit(src, "big").version
    assert sum(flushed) == len(data) and v.digest == digest_file(src).digest
    flushed.clear()
    assert store.checkout_path("big", tmp_path / "out.bin").read_bytes() == data
    assert sum(flushed) == len(data)
    assert store.verify() == [] and temps(store) == []


def wait_for(predicate: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.005)


def test_early_flush_syncs_in_the_background_and_reports_errors(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(fileio, "_EARLY_FLUSH", 1000)
    synced: list[int] = []
    failing = [False]

    def fdatasync(fd: int) -> None:
        if failing[0]:
            raise OSError(5, "Input/output error")
        synced.append(fd)

    monkeypatch.setattr(os, "fdatasync", fdatasync)
    with open(tmp_path / "a", "wb") as f:
        with fileio.early_flush(f.fileno(), 1999) as none:
            assert none is None  # small file: no thread
        with fileio.early_flush(f.fileno(), 2000) as flush:
            assert flush is not None
            flush.wrote(999)
            flush.wrote(1)  # 1000 bytes since the last sync: wake the helper
            wait_for(lambda: synced == [f.fileno()])

        failing[0] = True
        with (
            pytest.raises(OSError, match="Input/output error"),
            fileio.early_flush(f.fileno(), 2000) as failed,
        ):
            assert failed is not None
            failed.wrote(1000)
            wait_for(lambda: failed.error is not None)


def test_the_url_scheme_picks_the_backend(tmp_path: Path) -> None:
    from nbmlops.core.data.backends import BACKENDS, FsspecBackend, LocalBackend

    assert isinstance(DataStore(tmp_path / "plain")._backend, LocalBackend)
    assert isinstance(DataStore(f"file://{tmp_path}/url")._backend, LocalBackend)
    assert isinstance(DataStore("memory://scheme-test/root")._backend, FsspecBackend)
    assert BACKENDS[""] is LocalBackend
    with pytest.raises(DataStoreError, match="unknown URL scheme 'nosuch'") as err:
        DataStore("nosuch://bucket/prefix")
    assert "fsspec URL such as s3://bucket/prefix" in str(err.value)
