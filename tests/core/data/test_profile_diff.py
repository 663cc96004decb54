"""Profiles (what a version holds, at a glance) and diffs (what changed between versions)."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from nbmlops.core.data.diff import DataDiff, diff_versions
from nbmlops.core.data.profile import EXACT_ROWS, profile_frame
from nbmlops.exceptions import UsageError

# ------------------------------------------------------------------------------------------
# profile_frame
# ------------------------------------------------------------------------------------------


def small_frame() -> pd.DataFrame:
    n = 200
    rng = np.random.default_rng(3)
    x = rng.normal(10, 2, n)
    x[[5, 50]] = np.nan
    return pd.DataFrame(
        {
            "x": x,
            "n": pd.array([k if k % 10 else None for k in range(n)], dtype="Int64"),
            "when": pd.date_range("2024-01-01", periods=n, freq="D", tz="UTC"),
            "city": pd.Categorical(["Oslo"] * 120 + ["Rome"] * 60 + ["Lima"] * 20),
            "name": [f"p{k % 15}" for k in range(n)],
            "ok": np.arange(n) % 4 == 0,
            "empty": np.full(n, np.nan),
        }
    )


def test_profile_counts_ranges_and_top_values() -> None:
    df = small_frame()
    p = profile_frame(df)

    assert (p["kind"], p["rows"], p["sampled"]) == ("dataframe", 200, False)
    cols = p["columns"]
    assert list(cols) == list(df.columns)
    x = cols["x"]
    present = df["x"].dropna()
    assert (x["dtype"], x["count"], x["nulls"], x["unique"]) == ("float64", 198, 2, 198)
    assert x["unique_exact"] is True
    assert x["min"] == present.min() and x["max"] == present.max()
    assert x["mean"] == pytest.approx(present.mean()) and x["std"] == pytest.approx(present.std())
    for key, q in {"p01": 0.01, "p25": 0.25, "p50": 0.5, "p75": 0.75, "p99": 0.99}.items():
        assert x[key] == pytest.approx(present.quantile(q))

    assert (cols["n"]["nulls"], cols["n"]["min"], cols["n"]["max"]) == (20, 1, 199)
    assert isinstance(cols["n"]["min"], int)
    assert cols["when"]["min"] == "2024-01-01T00:00:00+00:00"
    assert cols["when"]["max"] == "2024-07-18T00:00:00+00:00"
    assert cols["city"]["top"] == [["Oslo", 120], ["Rome", 60], ["Lima", 20]]
    assert cols["name"]["unique"] == 15 and len(cols["name"]["top"]) == 10
    assert cols["ok"]["top"] == [[False, 150], [True, 50]]
    assert "mean" not in cols["ok"]  # booleans are categories, not numbers
    assert cols["empty"]["mean"] is None and cols["empty"]["p50"] is None  # NaN -> None

    json.dumps(p, allow_nan=False)  # plain JSON: no NaN, no numpy scalars


def test_profile_of_a_series() -> None:
    p = profile_frame(pd.Series(["a", "b", "a", None], name="letter", dtype="string"))
    assert (p["kind"], p["rows"], list(p["columns"])) == ("series", 4, ["letter"])
    assert p["columns"]["letter"]["top"] == [["a", 2], ["b", 1]]
    assert p["columns"]["letter"]["nulls"] == 1
    with pytest.raises(UsageError, match="DataFrame or Series"):
        profile_frame([1, 2, 3])


def test_large_frames_estimate_distinct_counts_from_a_sample_and_say_so() -> None:
    n = EXACT_ROWS + 200_000
    df = pd.DataFrame(
        {
            "id": np.arange(n),
            "group": np.arange(n) % 1000,
            "half": np.arange(n) // 2,  # every value twice
        }
    )
    p = profile_frame(df)

    assert p["sampled"] is True and "sample" in p["note"]
    cols = p["columns"]
    assert all(c["unique_exact"] is False for c in cols.values())
    assert cols["id"]["unique"] == pytest.approx(n, rel=0.05)
    assert cols["group"]["unique"] == 1000
    assert cols["half"]["unique"] == pytest.approx(n // 2, rel=0.35)
    # everything but distinct counts stays exact
    assert (cols["id"]["min"], cols["id"]["max"], cols["id"]["count"]) == (0, n - 1, n)
    assert cols["id"]["mean"] == pytest.approx((n - 1) / 2)


# ------------------------------------------------------------------------------------------
# diff_versions
# ------------------------------------------------------------------------------------------


def versions() -> tuple[pd.DataFrame, pd.DataFrame]:
    """1000 rows; then 10 dropped, 5 added, 7 values edited in 3 rows, a column added and
    the dtype of ``qty`` changed (int64 -> float64, same values)."""
    rng = np.random.default_rng(11)
    n = 1000
    old = pd.DataFrame(
        {
            "id": np.arange(n),
            "price": rng.uniform(1, 100, n).round(2),
            "qty": rng.integers(1, 50, n),
            "region": rng.choice(["north", "south", "east"], n),
            "note": pd.array([f"n{k}" for k in range(n)], dtype="string"),
        }
    )
    new = old.drop(index=range(100, 110))
    new = new.assign(qty=new["qty"].astype("float64"), score=1.0)
    at = new.index.get_loc
    new.iloc[at(200), [1, 2, 3]] = [555.5, 99.0, "west"]  # 3 values in row id 200
    new.iloc[at(300), [1, 4]] = [0.01, "edited"]  # 2 values in row id 300
    new.iloc[at(400), [2, 3]] = [0.0, "north-east"]  # 2 values in row id 400
    added = pd.DataFrame(
        {
            "id": np.arange(n, n + 5),
            "price": [10.0] * 5,
            "qty": [1.0] * 5,
            "region": ["east"] * 5,
            "note": pd.array(["new"] * 5, dtype="string"),
            "score": [2.0] * 5,
        }
    )
    return old, pd.concat([new, added], ignore_index=True)


def test_keyed_diff_counts_exactly() -> None:
    old, new = versions()
    d = diff_versions(old, new, key_columns=["id"])

    assert isinstance(d, DataDiff)
    assert (d.rows_removed, d.rows_added, d.rows_changed) == (10, 5, 3)
    assert d.changed_columns == {"price": 2, "qty": 2, "region": 2, "note": 1}
    assert d.schema_changes == {
        "added": ["score"],
        "removed": [],
        "dtype_changed": {"qty": ["int64", "float64"]},
    }
    assert (d.old_rows, d.new_rows) == (1000, 995)

    text = d.summary()
    assert "+5 added, -10 removed, ~3 changed" in text
    assert "columns added: score" in text and "dtype of qty: int64 -> float64" in text
    assert json.loads(json.dumps(d.to_dict(), allow_nan=False))["rows_changed"] == 3


def test_diff_without_keys_counts_rows_by_content() -> None:
    old, new = versions()
    d = diff_versions(old, new)

    # an edited row is one removed and one added row: 10 + 3 removed, 5 + 3 added
    assert (d.rows_removed, d.rows_added, d.rows_changed) == (13, 8, 0)
    assert d.changed_columns == {}
    assert any("rows_changed is not computed" in n for n in d.notes)
    assert "note: no key columns" in d.summary()


def test_profile_shifts_from_data_or_stored_profiles() -> None:
    old, new = versions()
    d = diff_versions(old, new, key_columns=["id"])
    assert set(d.profile_shifts) == {"id", "price", "qty"}  # shared numeric columns
    price = d.profile_shifts["price"]
    assert price["mean"]["old"] == pytest.approx(old["price"].mean())
    assert price["mean"]["new"] == pytest.approx(new["price"].mean())
    expected = (new["price"].mean() - old["price"].mean()) / old["price"].mean()
    assert price["mean"]["rel_change"] == pytest.approx(expected)
    assert price["null_rate"] == {"old": 0.0, "new": 0.0, "rel_change": 0.0}
    assert price["std"]["old"] == pytest.approx(old["price"].std())

    with_profiles = diff_versions(
        old, new, ["id"], old_profile=profile_frame(old), new_profile=profile_frame(new)
    )
    assert with_profiles.profile_shifts["price"]["mean"]["rel_change"] == pytest.approx(expected)
    assert with_profiles.profile_shifts["qty"]["std"]["new"] == pytest.approx(new["qty"].std())


def test_identical_frames_have_no_differences() -> None:
    old, _ = versions()
    for keys in (["id"], None):
        d = diff_versions(old, old.copy(), key_columns=keys)
        assert not d.has_changes
        assert (d.rows_added, d.rows_removed, d.rows_changed) == (0, 0, 0)
        assert "no differences" in d.summary()


def test_series_versions_diff_as_one_column() -> None:
    d = diff_versions(pd.Series([1.0, 2.0, 3.0], name="v"), pd.Series([1.0, 2.0, 4.0], name="v"))
    assert (d.rows_added, d.rows_removed, d.rows_changed) == (0, 0, 1)  # same index: matched
    assert d.changed_rows == [{"key": 2, "values": {"v": [3.0, 4.0]}}]
    assert d.profile_shifts["v"]["mean"]["old"] == pytest.approx(2.0)


def test_bad_keys_are_refused() -> None:
    old, new = versions()
    with pytest.raises(UsageError, match="not in both versions"):
        diff_versions(old, new, key_columns=["score"])
    with pytest.raises(UsageError, match="not unique in the old version"):
        diff_versions(old, new, key_columns=["region"])
    with pytest.raises(UsageError, match="must be a pandas DataFrame"):
        diff_versions(old, [1, 2])
