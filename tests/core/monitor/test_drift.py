"""Drift of frames: a scenario on real data, missing values and new categories, the
multivariate test, and every bad input named with its fix."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from nbmlops.core.monitor.drift import drift
from nbmlops.core.monitor.multivariate import pca_drift
from nbmlops.exceptions import UsageError


def wine_split() -> tuple[pd.DataFrame, pd.DataFrame]:
    """scikit-learn's wine data (178 rows, 13 measurements), split at random in two halves."""
    from sklearn.datasets import load_wine

    df = load_wine(as_frame=True).frame.drop(columns="target")
    order = np.random.default_rng(0).permutation(len(df))
    half = len(df) // 2
    return df.iloc[order[:half]].reset_index(drop=True), df.iloc[order[half:]].reset_index(
        drop=True
    )


def test_on_real_data_exactly_the_shifted_features_are_flagged():
    ref, cur = wine_split()
    assert drift(ref, cur).drifted == []  # two halves of one sample: nothing moved
    shifted = cur.copy()
    shifted["alcohol"] += 0.8 * ref["alcohol"].std()
    shifted["color_intensity"] *= 1.6
    report = drift(ref, shifted)
    assert sorted(report.drifted) == ["alcohol", "color_intensity"]
    assert set(report.features["test"]) == {"ks"}  # under 1000 reference rows, as Evidently
    assert report.drift_share == pytest.approx(2 / 13) and not report.dataset_drift
    # a Bonferroni correction is stricter than BH but still finds shifts this large
    assert sorted(drift(ref, shifted, correction="bonferroni").drifted) == [
        "alcohol",
        "color_intensity",
    ]


def test_large_samples_use_distances_and_report_missing_values_and_new_categories():
    rng = np.random.default_rng(1)
    n = 5000
    ref = pd.DataFrame(
        {
            "x": rng.normal(size=n),
            "y": rng.normal(size=n),
            "city": rng.choice(["paris", "oslo", "rome"], n, p=[0.5, 0.3, 0.2]),
        }
    )
    cur = pd.DataFrame(
        {
            "x": rng.normal(0.5, 1, n),
            "y": rng.normal(size=n),
            "city": rng.choice(["paris", "oslo", "rome", "lima"], n, p=[0.2, 0.3, 0.2, 0.3]),
        }
    )
    cur.loc[: n // 10 - 1, "y"] = np.nan
    cur.loc[:9, "city"] = None
    report = drift(ref, cur)
    rows = report.features.set_index("feature")
    assert rows.loc["x", "test"] == "wasserstein" and rows.loc["x", "drifted"]
    assert rows.loc["x", "score"] == pytest.approx(0.5, abs=0.06)
    assert rows.loc["y", "test"] == "wasserstein" and not rows.loc["y", "drifted"]
    assert rows.loc["y", "current_missing"] == pytest.approx(0.1)
    assert rows.loc["city", "test"] == "jensenshannon" and rows.loc["city", "drifted"]
    assert rows.loc["city", "new_categories"] == ["lima"]
    assert rows.loc["city", "current_missing"] == pytest.approx(10 / n)
    assert any(n.startswith("city: 1 categories unseen in the reference") for n in report.notes)
    assert report.dataset_drift  # 2 of 3 >= 0.5
    d = report.to_dict()
    assert d["drifted"] == ["x", "city"] and d["features"][0]["feature"] == "x"


def test_a_column_with_no_values_in_the_window_is_reported_not_tested():
    rng = np.random.default_rng(2)
    ref = pd.DataFrame({"a": rng.normal(size=300), "b": rng.normal(size=300)})
    cur = pd.DataFrame({"a": rng.normal(size=300), "b": np.nan})
    rows = drift(ref, cur).features.set_index("feature")
    assert rows.loc["b", "test"] == "none" and not rows.loc["b", "drifted"]
    assert rows.loc["b", "current_missing"] == 1.0
    assert "not tested" in rows.loc["b", "note"] and "100%" in rows.loc["b", "note"]


def test_a_rotation_of_correlated_features_is_found_by_the_multivariate_test_only():
    rng = np.random.default_rng(3)
    n = 4000
    ref = pd.DataFrame(rng.multivariate_normal([0, 0], [[1, 0.9], [0.9, 1]], n), columns=["u", "v"])
    # rotated by 90 degrees: each marginal is still N(0, 1), the correlation flips to -0.9
    cur = pd.DataFrame(
        rng.multivariate_normal([0, 0], [[1, -0.9], [-0.9, 1]], n), columns=["u", "v"]
    )
    report = drift(ref, cur, multivariate=True)
    assert report.drifted == []
    assert report.multivariate is not None and report.multivariate.drifted
    assert report.multivariate.increase > 1.0
    same = pd.DataFrame(
        rng.multivariate_normal([0, 0], [[1, 0.9], [0.9, 1]], n), columns=["u", "v"]
    )
    assert not pca_drift(ref, same).drifted


def test_html_report_is_self_contained(tmp_path):
    ref, cur = wine_split()
    cur["alcohol"] += 1.0
    path = tmp_path / "drift.html"
    drift(ref, cur).to_html(path)
    page = path.read_text()
    assert '<img alt="histograms of the drifted features" src="data:image/png;base64,' in page
    assert "alcohol" in page and "http" not in page.replace("http-equiv", "")


# --- bad input: one clear message naming what is wrong and how to fix it -------------------


def test_a_frame_missing_a_feature():
    ref, cur = wine_split()
    with pytest.raises(UsageError) as err:
        drift(ref, cur.drop(columns=["magnesium", "hue"]))
    msg = str(err.value)
    assert "lacks 2 feature(s)" in msg and "'magnesium'" in msg and "'hue'" in msg
    assert "columns=[...]" in msg


def test_an_empty_window():
    ref, cur = wine_split()
    with pytest.raises(UsageError, match=r"current data is empty \(0 rows\).*widen the window"):
        drift(ref, cur.iloc[:0])


def test_a_window_smaller_than_a_test_needs():
    ref, cur = wine_split()
    with pytest.raises(UsageError) as err:
        drift(ref, cur.iloc[:12])
    assert "has 12 rows; the drift tests need at least 30" in str(err.value)
    assert "min_rows=12" in str(err.value)
    assert len(drift(ref, cur.iloc[:12], min_rows=12).features) == 13  # when asked, it runs


def test_a_non_numeric_column_declared_numeric():
    rng = np.random.default_rng(4)
    ref = pd.DataFrame({"size": rng.normal(size=100).round(2).astype(str)})
    ref.loc[5, "size"] = "large"
    cur = pd.DataFrame({"size": rng.normal(size=100).round(2).astype(str)})
    with pytest.raises(UsageError) as err:
        drift(ref, cur, numeric=["size"])
    msg = str(err.value)
    assert "column 'size' is numeric but the reference holds 1 values that are not numbers" in msg
    assert "'large'" in msg and "categorical=['size']" in msg
    # text of numbers declared numeric is read as numbers
    ok = drift(ref.drop(index=5), cur, numeric=["size"])
    assert ok.features.loc[0, "kind"] == "numeric"


def test_unknown_options_are_named():
    ref, cur = wine_split()
    with pytest.raises(UsageError, match="unknown test 'kss'"):
        drift(ref, cur, test="kss")
    with pytest.raises(UsageError, match="unknown correction 'holm'"):
        drift(ref, cur, correction="holm")
    with pytest.raises(UsageError, match="declared both numeric and categorical"):
        drift(ref, cur, numeric=["hue"], categorical=["hue"])
