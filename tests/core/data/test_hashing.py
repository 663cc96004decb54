"""Full-content digests: every value, label, dtype and index position counts; layout does not."""

from __future__ import annotations

import inspect
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
import xxhash

import nbmlops.core.data.hashing as hashing
from nbmlops.core.data.digest_files import digest_file
from nbmlops.core.data.digest_framing import ContentDigest
from nbmlops.core.data.hashing import digest_value, is_digestible
from nbmlops.exceptions import UndigestibleError

SRC = Path(hashing.__file__).resolve().parents[3]
N = 60


def run_python(code: str) -> str:
    """Run code in a fresh interpreter (new hash seed) that can import nbmlops."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(SRC), env.get("PYTHONPATH")]))
    env.pop("PYTHONHASHSEED", None)
    done = subprocess.run(  # the test's own interpreter, on code written in this file
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def make_frame(n: int) -> pd.DataFrame:
    """Deterministic frame with one column of each kind; its source also runs in a subprocess."""
    rng = np.random.default_rng(42)
    return pd.DataFrame(
        {
            "f": rng.normal(size=n),
            "i": rng.integers(-1000, 1000, size=n),
            "s": [f"row-{k}-{'x' * (k % 7)}" for k in range(n)],
            "cat": pd.Categorical(
                [("lo", "mid", "hi")[k % 3] for k in range(n)], categories=["lo", "mid", "hi"]
            ),
            "ts": pd.date_range("2024-01-01", periods=n, freq="h", tz="Europe/Paris"),
            "ni": pd.array([k if k % 5 else None for k in range(n)], dtype="Int64"),
            "b": np.arange(n) % 2 == 0,
            "obj": np.array([f"o{k}" for k in range(n)], dtype=object),
        }
    )


def frame() -> pd.DataFrame:
    return make_frame(N)


def d(obj) -> str:
    return digest_value(obj).digest


# ------------------------------------------------------------------------------------------
# Shape of the result
# ------------------------------------------------------------------------------------------


def test_result_fields():
    df = frame()
    cd = digest_value(df)
    assert isinstance(cd, ContentDigest)
    assert len(cd.digest) == 32 and cd.digest == cd.digest.lower()
    int(cd.digest, 16)
    assert cd.kind == "dataframe"
    assert cd.shape == (N, 8)
    assert cd.schema == {c: str(df[c].dtype) for c in df.columns}
    assert cd.schema["ts"] == str(df["ts"].dtype) and "Europe/Paris" in cd.schema["ts"]
    assert cd.nbytes >= N * 8 * 3
    out = cd.to_dict()
    assert out["shape"] == [N, 8]
    assert json.loads(json.dumps(out)) == out
    assert digest_value(df) == cd and hash(digest_value(df)) == hash(cd)


def test_deterministic_within_process_and_after_copy():
    df = frame()
    assert d(df) == d(df) == d(df.copy()) == d(frame())


def test_equal_across_processes():
    code = "\n".join(
        [
            "from __future__ import annotations",
            "import numpy as np",
            "import pandas as pd",
            "from nbmlops.core.data.hashing import digest_value",
            inspect.getsource(make_frame),
            f"df = make_frame({N})",
            'print(digest_value(df).digest, digest_value(df["s"]).digest)',
        ]
    )
    df = frame()
    assert run_python(code).split() == [d(df), d(df["s"])]


# ------------------------------------------------------------------------------------------
# Sensitivity: any single change anywhere changes the digest
# ------------------------------------------------------------------------------------------

CHANGES = {
    "f": lambda v: v + 1e-9,
    "i": lambda v: v + 1,
    "s": lambda v: v + "!",
    "cat": lambda v: "hi" if v != "hi" else "lo",
    "ts": lambda v: v + pd.Timedelta(1, "us"),
    "ni": lambda v: 999 if pd.isna(v) else v + 1,
    "b": lambda v: not v,
    "obj": lambda v: v + "?",
}


@pytest.mark.parametrize("column", list(CHANGES))
@pytest.mark.parametrize("row", [0, N // 2, N - 1])
def test_one_changed_value_changes_digest(column, row):
    df = frame()
    before = d(df)
    changed = df.copy()
    changed.loc[row, column] = CHANGES[column](df.loc[row, column])
    assert changed.dtypes.equals(df.dtypes)
    assert d(changed) != before


@pytest.mark.parametrize("row", [0, N // 2, N - 1])
def test_changed_index_value_changes_digest(row):
    df = frame().set_index("s")
    labels = list(df.index)
    labels[row] = labels[row] + "*"
    changed = df.copy()
    changed.index = pd.Index(labels, name="s")
    assert d(changed) != d(df)


@pytest.mark.parametrize("column", list(CHANGES))
def test_null_introduction_changes_digest(column):
    df = frame()
    changed = df.copy()
    if column == "b":  # a numpy bool column cannot hold a null; nullable boolean can
        df["b"] = df["b"].astype("boolean")
        changed["b"] = df["b"].copy()
    if column == "i":
        changed["i"] = changed["i"].astype("Int64")
        df["i"] = df["i"].astype("Int64")
    row = 7 if column != "ni" else 6  # row 5 of "ni" is already null
    changed.loc[row, column] = None
    assert changed[column].isna().sum() == df[column].isna().sum() + 1
    assert d(changed) != d(df)


def test_rename_and_reorder_columns():
    df = frame()
    assert d(df.rename(columns={"f": "g"})) != d(df)
    assert d(df[list(reversed(df.columns))]) != d(df)
    assert d(df.rename(columns={"i": 1})) != d(df.rename(columns={"i": "1"}))
    assert d(df.rename_axis(columns="features")) != d(df)


def test_dtype_change_changes_digest():
    ints = pd.DataFrame({"x": np.ones(5, dtype=np.int64)})
    floats = pd.DataFrame({"x": np.ones(5, dtype=np.float64)})
    assert d(ints) != d(floats)
    assert d(ints) != d(ints.astype("int32"))
    assert d(ints) != d(ints.astype("Int64"))
    s = pd.DataFrame({"x": ["a", "b"]})
    assert d(s) != d(s.astype(object)) != d(s.astype("category"))
    mixed = pd.DataFrame({"x": np.array([1, "a"], dtype=object)})
    as_text = pd.DataFrame({"x": np.array(["1", "a"], dtype=object)})
    assert d(mixed) != d(as_text)


def test_index_changes_digest():
    df = frame()
    assert d(df.set_axis(range(1, N + 1))) != d(df)
    assert d(df.rename_axis("row")) != d(df)
    assert d(df.set_index("i")) != d(df.set_index("f"))
    assert d(df.iloc[::-1].reset_index(drop=True)) != d(df.iloc[::-1])


# ------------------------------------------------------------------------------------------
# Layout independence: equal content gives equal digest
# ------------------------------------------------------------------------------------------


def test_sliced_frame_equals_fresh_copy():
    df = frame()
    part = df.iloc[10:20]
    rebuilt = pd.DataFrame(
        {
            "f": np.array(df["f"].tolist()[10:20]),
            "i": np.array(df["i"].tolist()[10:20], dtype=np.int64),
            "s": [f"row-{k}-{'x' * (k % 7)}" for k in range(10, 20)],
            "cat": pd.Categorical(part["cat"].tolist(), categories=["lo", "mid", "hi"]),
            "ts": pd.date_range("2024-01-01 10:00", periods=10, freq="h", tz="Europe/Paris"),
            "ni": pd.array([k if k % 5 else None for k in range(10, 20)], dtype="Int64"),
            "b": np.arange(10, 20) % 2 == 0,
            "obj": np.array([f"o{k}" for k in range(10, 20)], dtype=object),
        },
        index=pd.RangeIndex(10, 20),
    )
    pd.testing.assert_frame_equal(part, rebuilt)
    assert d(part) == d(rebuilt)
    assert d(part) != d(rebuilt.reset_index(drop=True))


def test_arrow_string_chunking_independent():
    words = [f"w{k}" * (k % 4) if k % 9 else None for k in range(50)]
    one = pa.chunked_array([pa.array(words, pa.large_string())])
    three = pa.chunked_array(
        [
            pa.array(words[:7], pa.large_string()),
            pa.array(words[7:30], pa.large_string()),
            pa.array(words, pa.large_string()).slice(30),  # an offset that is not byte aligned
        ]
    )
    str_dtype = pd.StringDtype("pyarrow", na_value=np.nan)
    a = pd.Series(pd.arrays.ArrowStringArray(one, dtype=str_dtype))
    b = pd.Series(pd.arrays.ArrowStringArray(three, dtype=str_dtype))
    assert b.array.__arrow_array__().num_chunks == 3
    assert d(a) == d(b) == d(pd.Series(words, dtype="str"))
    assert d(pd.Series(pd.arrays.ArrowExtensionArray(one))) == d(
        pd.Series(pd.arrays.ArrowExtensionArray(three))
    )
    concat = pd.concat([a.iloc[:20], a.iloc[20:]], ignore_index=True)
    assert concat.array.__arrow_array__().num_chunks == 2
    assert d(concat) == d(a)
    changed = words.copy()
    changed[33] = "different"
    assert d(pd.Series(changed, dtype="str")) != d(a)


def test_arrow_int32_offsets_and_garbage_under_nulls():
    # string (int32 offsets) with a null slot that still spans bytes, as Arrow allows
    offsets = np.array([0, 2, 5, 7], dtype=np.int32)
    data = b"abXYZcd"
    validity = np.packbits(np.array([1, 0, 1], dtype=bool), bitorder="little")
    raw = pa.StringArray.from_buffers(
        3, pa.py_buffer(offsets.tobytes()), pa.py_buffer(data), pa.py_buffer(validity.tobytes())
    )
    clean = pa.array(["ab", None, "cd"], pa.string())
    dtype = pd.ArrowDtype(pa.string())
    assert d(pd.Series(pd.arrays.ArrowExtensionArray(raw), dtype=dtype)) == d(
        pd.Series(pd.arrays.ArrowExtensionArray(clean), dtype=dtype)
    )


def test_arrow_nested_and_numeric_sliced():
    ints = pa.array([1, None, 3, 4, None, 6], pa.int64())
    lists = pa.array([[1], None, [2, 3], [], [4, 5, 6], None], pa.list_(pa.int32()))
    for arr in (ints, lists):
        whole = pd.Series(pd.arrays.ArrowExtensionArray(pa.chunked_array([arr.slice(2)])))
        split = pd.Series(
            pd.arrays.ArrowExtensionArray(pa.chunked_array([arr.slice(2, 1), arr.slice(3)]))
        )
        assert d(whole) == d(split)
        assert d(whole) != d(pd.Series(pd.arrays.ArrowExtensionArray(pa.chunked_array([arr]))))


def test_masked_values_hidden_under_nulls_do_not_count():
    mask = np.array([False, True, False])
    a = pd.Series(pd.arrays.IntegerArray(np.array([1, 5, 3]), mask))
    b = pd.Series(pd.arrays.IntegerArray(np.array([1, 7, 3]), mask))
    assert d(a) == d(b)
    assert d(a) != d(pd.Series(pd.arrays.IntegerArray(np.array([1, 5, 3]), ~mask)))


def test_strided_numpy_columns_equal_contiguous():
    values = np.arange(40, dtype=np.float64).reshape(10, 4)
    from_2d = pd.DataFrame(values, columns=list("abcd"))
    from_cols = pd.DataFrame({c: values[:, k].copy() for k, c in enumerate("abcd")})
    assert d(from_2d) == d(from_cols)


# ------------------------------------------------------------------------------------------
# Mixed dtypes
# ------------------------------------------------------------------------------------------


def test_categorical_metadata_counts():
    s = pd.Series(pd.Categorical(["a", "b", "a"], categories=["a", "b"]))
    assert d(s) != d(pd.Series(pd.Categorical(["a", "b", "a"], categories=["b", "a"])))
    assert d(s) != d(
        pd.Series(pd.Categorical(["a", "b", "a"], categories=["a", "b"], ordered=True))
    )
    assert d(s) != d(pd.Series(pd.Categorical(["a", "b", "a"], categories=["a", "b", "c"])))
    assert d(s) != d(pd.Series(pd.Categorical(["a", "b", None], categories=["a", "b"])))


def test_tz_aware_datetimes():
    utc = pd.Series(pd.date_range("2024-03-01", periods=4, freq="D", tz="UTC"))
    assert d(utc) == d(pd.Series(pd.date_range("2024-03-01", periods=4, freq="D", tz="UTC")))
    assert d(utc) != d(utc.dt.tz_convert("Asia/Tokyo"))  # same instants, other zone
    assert d(utc) != d(utc.dt.tz_localize(None))
    assert d(utc) != d(utc.dt.as_unit("ms"))


def test_nullable_and_bool_columns():
    df = pd.DataFrame(
        {
            "n": pd.array([1, None, 3], dtype="Int64"),
            "fl": pd.array([0.5, None, 1.5], dtype="Float64"),
            "ok": pd.array([True, None, False], dtype="boolean"),
            "b": [True, False, True],
        }
    )
    assert d(df) == d(df.copy())
    for col, value in [("n", 2), ("fl", 1.0), ("ok", True)]:
        changed = df.copy()
        changed.loc[1, col] = value
        assert d(changed) != d(df)
    assert d(df.assign(b=[True, False, False])) != d(df)


def test_multiindex():
    idx = pd.MultiIndex.from_product([["x", "y", "z"], [1, 2, 3, 4]], names=["k", "n"])
    df = pd.DataFrame({"v": np.arange(12.0)}, index=idx)
    assert d(df) == d(df.copy())
    assert d(df) != d(df.rename_axis(["k", "m"]))
    swapped = df.copy()
    swapped.index = idx.set_levels([["x", "y", "w"], [1, 2, 3, 4]])
    assert d(swapped) != d(df)
    # a slice keeps unused levels; the digest follows the rows, not the level tables
    part = df.iloc[4:8]
    fresh = pd.DataFrame(
        {"v": np.arange(4.0, 8.0)},
        index=pd.MultiIndex.from_arrays([["y"] * 4, [1, 2, 3, 4]], names=["k", "n"]),
    )
    assert len(part.index.levels[0]) == 3
    assert d(part) == d(fresh)
    wide = pd.DataFrame([[1, 2]], columns=pd.MultiIndex.from_tuples([("a", "x"), ("a", "y")]))
    assert d(wide) != d(wide.set_axis(pd.MultiIndex.from_tuples([("a", "x"), ("b", "y")]), axis=1))


def test_other_extension_dtypes_use_fallback():
    periods = pd.DataFrame({"p": pd.period_range("2024-01", periods=5, freq="M")})
    intervals = pd.DataFrame({"iv": pd.interval_range(0, 5)})
    for df in (periods, intervals):
        assert d(df) == d(df.copy())
        assert d(df) != d(df.iloc[::-1].reset_index(drop=True))


# ------------------------------------------------------------------------------------------
# Series, ndarray, bytes, files
# ------------------------------------------------------------------------------------------


def test_series():
    s = pd.Series(np.arange(10), name="n")
    cd = digest_value(s)
    assert (cd.kind, cd.shape, cd.schema) == ("series", (10,), {"n": "int64"})
    assert d(s) != d(s.rename("m"))
    assert d(s) != d(s.set_axis(range(1, 11)))
    assert d(s) != d(s.to_frame())
    s2 = s.copy()
    s2.iloc[-1] = 0
    assert d(s2) != d(s)


def test_ndarray():
    a = np.arange(12, dtype=np.int64)
    cd = digest_value(a)
    assert (cd.kind, cd.shape, cd.schema, cd.nbytes) == ("ndarray", (12,), {"dtype": "int64"}, 96)
    assert d(a) != d(a.reshape(3, 4))
    assert d(a) != d(a.astype(np.float64))
    assert d(a) != d(a.view(np.float64))
    m = np.arange(12.0).reshape(3, 4)
    assert d(m.T) == d(np.ascontiguousarray(m.T))
    assert d(m[:, ::2]) == d(m[:, ::2].copy())
    b = a.copy()
    b[5] = -1
    assert d(b) != d(a)
    dt = np.array(["2024-01-01", "NaT"], dtype="datetime64[ns]")
    assert d(dt) != d(dt.astype("datetime64[s]"))
    words = np.array(["a", "bc", None], dtype=object)
    assert digest_value(words).schema == {"dtype": "object"}
    assert d(words) == d(np.array(["a", "bc", None], dtype=object))
    assert d(words) != d(np.array(["a", "b", None], dtype=object))
    assert d(words) != d(np.array(["a", "bc", ""], dtype=object))


def test_undigestible_values_raise_with_reason():
    class Thing:
        pass

    with pytest.raises(UndigestibleError, match=r"numpy object array of .*Thing"):
        digest_value(np.array([Thing(), Thing()], dtype=object))
    with pytest.raises(UndigestibleError, match="numpy object array of int"):
        digest_value(np.array(["a", 1], dtype=object))
    with pytest.raises(UndigestibleError, match=r"object column 'x' holds .*Thing"):
        digest_value(pd.DataFrame({"x": [Thing(), "a"]}, dtype=object))
    with pytest.raises(UndigestibleError, match="list cannot be digested"):
        digest_value([1, 2, 3])
    with pytest.raises(UndigestibleError, match="Index"):
        digest_value(pd.Index([1, 2]))
    with pytest.raises(UndigestibleError) as info:
        digest_value({"a": 1})
    assert isinstance(info.value, TypeError) and "\n" not in str(info.value)


def test_mixed_stable_objects_fall_back():
    df = pd.DataFrame(
        {"x": np.array([1, "a", 2.5, None, pd.Timestamp("2024-01-01")], dtype=object)}
    )
    assert d(df) == d(df.copy())
    changed = df.copy()
    changed.loc[4, "x"] = pd.Timestamp("2024-01-02")
    assert d(changed) != d(df)
    assert d(df) != d(df.astype(str))
    with pytest.raises(UndigestibleError, match="tuple"):
        digest_value(pd.DataFrame({"x": np.array([(1, 2), "a"], dtype=object)}))


def test_bytes_like():
    payload = b"hello digest"
    cd = digest_value(payload)
    assert (cd.kind, cd.shape, cd.schema, cd.nbytes) == ("bytes", (12,), None, 12)
    assert cd.digest == xxhash.xxh3_128(payload).hexdigest()
    assert d(bytearray(payload)) == d(memoryview(payload)) == cd.digest
    assert d(memoryview(payload)[::2]) == d(payload[::2])
    assert d(b"hello digesT") != cd.digest


def test_digest_file(tmp_path):
    content = bytes(range(256)) * 1000 + b"tail"
    path = tmp_path / "data.bin"
    path.write_bytes(content)
    cd = digest_file(path)
    assert cd.digest == xxhash.xxh3_128(content).hexdigest()
    assert (cd.kind, cd.shape, cd.schema, cd.nbytes) == (
        "file",
        (len(content),),
        None,
        len(content),
    )
    assert digest_file(str(path), chunk_size=1000).digest == cd.digest
    assert digest_value(content).digest == cd.digest
    changed = bytearray(content)
    changed[len(content) // 2] ^= 1
    path.write_bytes(bytes(changed))
    assert digest_file(path).digest != cd.digest
    empty = tmp_path / "empty"
    empty.write_bytes(b"")
    assert digest_file(empty).digest == xxhash.xxh3_128(b"").hexdigest()


# ------------------------------------------------------------------------------------------
# is_digestible and import cost
# ------------------------------------------------------------------------------------------


def test_is_digestible():
    assert is_digestible(frame())
    assert is_digestible(frame()["f"])
    assert is_digestible(np.zeros(3))
    assert is_digestible(np.array(["a", "b"], dtype=object))
    assert is_digestible(np.array([], dtype=object))
    assert (
        is_digestible(b"x") and is_digestible(bytearray(b"x")) and is_digestible(memoryview(b"x"))
    )
    assert not is_digestible(np.array([object()], dtype=object))
    assert not is_digestible(np.ma.masked_array([1, 2], mask=[0, 1]))
    assert not is_digestible([1, 2])
    assert not is_digestible("text")
    assert not is_digestible(pd.Index([1]))
    assert not is_digestible(None)


def test_import_and_is_digestible_do_not_import_pandas():
    out = run_python(
        """
        import sys
        from nbmlops.core.data.hashing import digest_value, is_digestible
        assert is_digestible(b"x") and not is_digestible([1])
        digest_value(b"x")
        print("pandas" in sys.modules, "numpy" in sys.modules, "pyarrow" in sys.modules)
        """
    )
    assert out == "False False False"
