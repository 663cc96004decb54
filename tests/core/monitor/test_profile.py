"""Mergeable profiles: two halves merged equal the whole, they round-trip through the store
beside a real prediction log, and drift from profiles agrees with drift from rows."""

from __future__ import annotations

import time

import numpy as np
import pandas as pd
import pytest

from nbmlops.core.monitor.drift import drift, drift_of_summaries
from nbmlops.core.monitor.profile import SKETCH_K, profile_frame
from nbmlops.core.monitor.profile_store import ProfileStore, update_profiles
from nbmlops.core.monitor.summary import summarize_column
from nbmlops.core.serving.predlog import PredictionLog


def traffic(n: int, seed: int, shift: float = 0.0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    df = pd.DataFrame(
        {
            "amount": rng.lognormal(3 + shift, 1, n),
            "age": rng.integers(18, 90, n).astype(float),
            "plan": rng.choice(["free", "pro", "team"], n, p=[0.6, 0.3, 0.1]),
            "seats": rng.integers(1, 4, n),
        }
    )
    df.loc[df.sample(frac=0.05, random_state=seed).index, "amount"] = np.nan
    return df


def test_two_halves_merged_equal_the_whole():
    df = traffic(40_000, seed=1)
    whole = profile_frame(df)
    merged = profile_frame(df.iloc[:15_000]).merge(profile_frame(df.iloc[15_000:]))
    assert merged.rows == whole.rows == 40_000
    for name, w in whole.columns.items():
        m = merged.columns[name]
        # counts exact
        assert (m.kind, m.rows, m.nulls) == (w.kind, w.rows, w.nulls)
        if w.kind == "numeric":
            assert m.mean == pytest.approx(w.mean, rel=1e-12)
            assert m.m2 == pytest.approx(w.m2, rel=1e-9)
            assert (m.min, m.max) == (w.min, w.max)
            assert m.sketch.n == w.sketch.n == w.count
            # quantiles within the sketch's rank error of the exact ones
            ranks = np.linspace(0.01, 0.99, 25)
            values = np.sort(df[name].dropna().to_numpy(dtype=float))
            got = np.asarray(m.sketch.get_quantiles(ranks.tolist()))
            # a value's true ranks span its ties: [below, below or equal]
            low = np.searchsorted(values, got, side="left") / len(values)
            high = np.searchsorted(values, got, side="right") / len(values)
            err = m.sketch.normalized_rank_error(False)
            assert np.all((ranks >= low - err) & (ranks <= high + err)), (name, err)
        else:
            assert m.item_counts().to_dict() == w.item_counts().to_dict()
    # a column with few values keeps exact counts through the merge
    assert merged.columns["seats"].exact == whole.columns["seats"].exact
    assert sum(whole.columns["seats"].exact.values()) == 40_000
    assert whole.columns["plan"].item_counts().to_dict() == df["plan"].value_counts().to_dict()


def test_drift_from_profiles_agrees_with_drift_from_rows():
    ref = traffic(20_000, seed=2)
    cur = traffic(20_000, seed=3, shift=0.4)
    rows = drift(ref, cur).features.set_index("feature")
    kinds = {c: k for c, k in rows["kind"].items()}
    # the current side as four merged window profiles
    prof = profile_frame(cur.iloc[:5000], kinds=kinds)
    for i in range(5000, 20_000, 5000):
        prof = prof.merge(profile_frame(cur.iloc[i : i + 5000], kinds=kinds))
    pairs = {
        c: (summarize_column(ref[c], k, "reference"), prof.columns[c].summary())
        for c, k in kinds.items()
    }
    from_profiles = drift_of_summaries(pairs).features.set_index("feature")
    assert list(from_profiles["drifted"]) == list(rows["drifted"]) == [True, False, False, False]
    assert list(from_profiles["test"]) == list(rows["test"])
    # the sketch's rank error (~1.3%) moves a heavy-tailed column's quantiles, and so the
    # distance; KLL compacts with random coin flips, so the error differs run to run (up to
    # 15% over 40 draws of this data); categorical counts are exact
    assert from_profiles.loc["amount", "score"] == pytest.approx(
        rows.loc["amount", "score"], rel=0.3
    )
    assert from_profiles.loc["age", "score"] == pytest.approx(rows.loc["age", "score"], abs=0.02)
    assert from_profiles.loc["plan", "score"] == pytest.approx(rows.loc["plan", "score"], abs=1e-12)
    assert from_profiles.loc["amount", "current_missing"] == rows.loc["amount", "current_missing"]
    assert SKETCH_K == 200


def test_profiles_of_the_prediction_log_are_stored_beside_it_and_merge_by_window(tmp_path):
    home = tmp_path / ".nbmlops"
    log = PredictionLog(home).start()
    hour = 3600.0
    start = (time.time() // hour - 5) * hour  # five ended hours
    df = traffic(5 * 200, seed=4)
    for i, rec in enumerate(df.to_dict("records")):
        rec = {k: (None if isinstance(v, float) and np.isnan(v) else v) for k, v in rec.items()}
        log.record(
            f"r{i}", "main", "churn", 3, 200, 1.0, inputs=[rec], outputs=[0], ts=start + i * 18.0
        )
    log.record("bad", "main", "churn", 3, 422, 1.0, inputs=[{"amount": "x"}], ts=start + 1)
    log.record("s0", "shadow", "churn", 4, 200, 1.0, inputs=[df.iloc[0].to_dict()], ts=start + 2)
    log.close()
    kinds = {"amount": "numeric", "age": "numeric", "plan": "categorical", "seats": "numeric"}
    assert update_profiles(home, "churn", kinds) == 5
    assert update_profiles(home, "churn", kinds) == 0  # nothing new: nothing rewritten
    store = ProfileStore(home)
    assert store.path == home / "predictions" / "profiles.db"
    windows = store.windows("churn")
    assert [w["rows"] for w in windows] == [200] * 5 and {w["version"] for w in windows} == {3}
    assert [w["start"] for w in windows] == [start + k * hour for k in range(5)]
    merged = store.merged("churn")
    whole = profile_frame(df, kinds=kinds)
    assert merged.rows == 1000
    for name in kinds:
        assert merged.columns[name].nulls == whole.columns[name].nulls
        assert merged.columns[name].count == whole.columns[name].count
    assert merged.columns["plan"].item_counts().to_dict() == df["plan"].value_counts().to_dict()
    two = store.merged("churn", since=start + hour, until=start + 3 * hour)
    assert two.rows == 400 and two.start == start + hour and two.end == start + 3 * hour
