"""Drift per feature over time on known distributions: a shift that starts at a known window
is flagged from that window on, on exactly the shifted features, whether the windows are read
from rows or from stored profiles; every bad input is named with its fix."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from nbmlops.core.monitor.drift_time import MAX_WINDOWS, drift_over_time, severity
from nbmlops.core.monitor.profile import profile_frame
from nbmlops.core.monitor.profile_store import ProfileStore
from nbmlops.exceptions import UsageError

WINDOW = 60.0
T0 = 1_800_000_000.0  # a multiple of 60: window i is [T0 + 60 i, T0 + 60 (i + 1))
SHIFT_FROM = 3  # the first shifted window


def reference(n: int = 800, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame(
        {
            "a": rng.normal(size=n),
            "b": rng.normal(size=n),
            "c": rng.choice(["x", "y", "z"], size=n, p=[0.5, 0.3, 0.2]),
            "label": rng.integers(0, 2, size=n),
        }
    )


def traffic(windows: int = 6, per_window: int = 400, seed: int = 1) -> pd.DataFrame:
    """``windows`` minutes of records; from window SHIFT_FROM on, a moves by 1.5 std and c's
    shares swap, b never moves. The target (label) is not in the traffic."""
    rng = np.random.default_rng(seed)
    parts = []
    for w in range(windows):
        shifted = w >= SHIFT_FROM
        parts.append(
            pd.DataFrame(
                {
                    "a": rng.normal(loc=1.5 if shifted else 0.0, size=per_window),
                    "b": rng.normal(size=per_window),
                    "c": rng.choice(
                        ["x", "y", "z"],
                        size=per_window,
                        p=[0.2, 0.3, 0.5] if shifted else [0.5, 0.3, 0.2],
                    ),
                    "_ts": T0 + w * WINDOW + rng.uniform(0, WINDOW - 1e-3, size=per_window),
                }
            )
        )
    return pd.concat(parts, ignore_index=True)


def test_a_shift_is_flagged_from_its_first_window_on_exactly_the_shifted_features():
    timeline = drift_over_time(reference(), traffic(), window_seconds=WINDOW)
    assert timeline.features == ["a", "b", "c"]  # label: in no request, left out with a note
    assert any("label" in n for n in timeline.notes)
    assert timeline.windows["start"].tolist() == [T0 + i * WINDOW for i in range(6)]
    assert set(timeline.windows["source"]) == {"rows"}
    drifted = timeline.matrix("drifted").astype(bool)
    expected = [i >= SHIFT_FROM for i in range(6)]
    assert drifted.loc["a"].tolist() == expected
    assert drifted.loc["c"].tolist() == expected
    assert not drifted.loc["b"].any()
    assert timeline.drifted_from() == {"a": T0 + 180, "b": None, "c": T0 + 180}
    # severity is above 1 exactly where the verdict is drifted
    sev = timeline.matrix("severity")
    assert ((sev > 1) == drifted).all().all()
    assert timeline.windows["drifted"].tolist() == [2 if e else 0 for e in expected]
    assert "drifted: a (from" in timeline.summary()
    as_dict = timeline.to_dict()
    assert len(as_dict["cells"]) == 18 and as_dict["features"] == ["a", "b", "c"]


def test_stored_profiles_give_the_same_verdicts_as_the_rows(tmp_path):
    cur = traffic()
    kinds = {"a": "numeric", "b": "numeric", "c": "categorical"}
    store = ProfileStore(tmp_path)
    ts = cur["_ts"].to_numpy()
    for w in range(4):  # the first four windows profiled, the last two only in rows
        start = T0 + w * WINDOW
        rows = cur[(ts >= start) & (ts < start + WINDOW)].drop(columns="_ts")
        store.write("m", 1, profile_frame(rows, kinds=kinds, start=start, end=start + WINDOW))
    stored = store.window_profiles("m", 1)
    assert [p.start for p in stored] == [T0 + w * WINDOW for w in range(4)]
    recent = cur[ts >= T0 + 4 * WINDOW]
    timeline = drift_over_time(
        reference(), recent, window_seconds=WINDOW, profiles=stored, since=T0
    )
    assert timeline.windows["source"].tolist() == ["profiles"] * 4 + ["rows"] * 2
    from_rows = drift_over_time(reference(), cur, window_seconds=WINDOW)
    assert (timeline.matrix("drifted") == from_rows.matrix("drifted")).all().all()
    assert timeline.windows["rows"].tolist() == [400] * 6
    # a window only half profiled is read from rows, never from half its traffic
    half = drift_over_time(
        reference(),
        cur,
        window_seconds=2 * WINDOW,
        profiles=[p for p in stored if p.start != T0 + WINDOW],
    )
    assert half.windows["source"].tolist() == ["rows", "profiles", "rows"]


def test_empty_and_small_windows_are_listed_not_tested():
    cur = traffic(windows=2)
    cur = cur[cur["_ts"] < T0 + WINDOW + 2]  # window 1 keeps only a few rows
    small = int((cur["_ts"] >= T0 + WINDOW).sum())
    assert 0 < small < 30
    timeline = drift_over_time(
        reference(), cur, window_seconds=WINDOW, since=T0, until=T0 + 3 * WINDOW
    )
    assert timeline.windows["source"].tolist() == ["rows", "rows", "empty"]
    assert timeline.windows["rows"].tolist() == [400, small, 0]
    cells = timeline.table.set_index(["window_start", "feature"])
    assert cells.loc[(T0 + WINDOW, "a"), "test"] == "none"
    assert "fewer than 30" in cells.loc[(T0 + WINDOW, "a"), "note"]
    assert cells.loc[(T0 + 2 * WINDOW, "b"), "note"] == "no traffic"
    assert np.isnan(timeline.matrix("severity").iloc[:, 2]).all()


def test_severity_puts_p_values_and_distances_on_one_scale():
    assert severity("ks", 0.05, 0.05) == pytest.approx(1.0)
    assert severity("ks", 0.0005, 0.05) > 1 > severity("ks", 0.5, 0.05)
    assert severity("psi", 0.2, 0.1) == pytest.approx(2.0)
    assert severity("ks", 0.0, 0.05) == 10.0
    assert np.isnan(severity("none", float("nan"), float("nan")))


def test_bad_inputs_name_what_is_wrong_and_how_to_fix_it():
    ref, cur = reference(), traffic(windows=2)
    with pytest.raises(UsageError, match="no time column 'when'") as err:
        drift_over_time(ref, cur, window_seconds=WINDOW, time_column="when")
    assert "time_column=" in str(err.value.fix)
    with pytest.raises(UsageError, match="positive number of seconds"):
        drift_over_time(ref, cur, window_seconds=0)
    with pytest.raises(UsageError, match=f"more than {MAX_WINDOWS}"):
        drift_over_time(ref, cur, window_seconds=0.01)
    with pytest.raises(UsageError, match="reference must be a pandas DataFrame"):
        drift_over_time([1, 2, 3], cur, window_seconds=WINDOW)  # type: ignore[arg-type]
    with pytest.raises(UsageError, match="reference data has 10 rows"):
        drift_over_time(ref.head(10), cur, window_seconds=WINDOW)
    with pytest.raises(UsageError, match="the reference has no column 'd'"):
        drift_over_time(ref, cur, window_seconds=WINDOW, columns=["a", "d"])
    with pytest.raises(UsageError, match="lacks feature\\(s\\) 'label'"):
        drift_over_time(ref, cur, window_seconds=WINDOW, columns=["a", "label"])
    with pytest.raises(UsageError, match="no feature of the reference is in the current data"):
        drift_over_time(ref, cur.rename(columns=str.upper).assign(_ts=cur["_ts"]),
                        window_seconds=WINDOW)  # fmt: skip
    with pytest.raises(UsageError, match="no current data"):
        drift_over_time(ref, None, window_seconds=WINDOW)
    with pytest.raises(UsageError, match="have no time in '_ts'"):
        drift_over_time(ref, cur.assign(_ts=np.nan), window_seconds=WINDOW)
    with pytest.raises(UsageError, match="unknown test 'bogus'"):
        drift_over_time(ref, cur, window_seconds=WINDOW, test="bogus")
