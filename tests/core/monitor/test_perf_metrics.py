"""Realized metrics against scikit-learn, the CBPE estimate against realized performance on a
calibrated model and against NannyML's formulas computed window by window, windows and
versions of the performance table, health percentiles against numpy, and worst slices."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import (
    accuracy_score,
    auc,
    f1_score,
    log_loss,
    mean_absolute_error,
    mean_squared_error,
    roc_auc_score,
)

from nbmlops.core.monitor.cbpe import CBPE, expected_calibration_error
from nbmlops.core.monitor.health import health_table, resource_table
from nbmlops.core.monitor.performance import (
    classification_metrics,
    performance_table,
    regression_metrics,
)
from nbmlops.core.monitor.slices import worst_slices
from nbmlops.exceptions import UsageError


def concept(n: int, scale: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Features and labels drawn from one fixed P(y|x): y ~ Bernoulli(sigmoid(2 (x0 + x1)))."""
    rng = np.random.default_rng(seed)
    x = rng.normal(scale=scale, size=(n, 3))
    p = 1.0 / (1.0 + np.exp(-2.0 * (x[:, 0] + x[:, 1])))
    return x, (rng.random(n) < p).astype(int)


@pytest.fixture(scope="module")
def model() -> LogisticRegression:
    x, y = concept(4000, 2.0, seed=0)
    return LogisticRegression().fit(x, y)


def test_classification_metrics_match_sklearn():
    rng = np.random.default_rng(3)
    y = rng.integers(0, 2, 500)
    proba = np.clip(rng.random(500) * 0.6 + y * 0.3, 0.01, 0.99)
    p2 = np.column_stack([1 - proba, proba])
    pred = (proba > 0.5).astype(int)
    got = classification_metrics(y, pred, p2, 2)
    assert got["accuracy"] == pytest.approx(accuracy_score(y, pred))
    assert got["f1"] == pytest.approx(f1_score(y, pred))
    assert got["roc_auc"] == pytest.approx(roc_auc_score(y, proba))
    assert got["log_loss"] == pytest.approx(log_loss(y, p2))

    y3 = rng.integers(0, 3, 600)
    p3 = rng.dirichlet([1, 1, 1], 600)
    pred3 = p3.argmax(axis=1)
    got3 = classification_metrics(y3, pred3, p3, 3)
    assert got3["f1"] == pytest.approx(f1_score(y3, pred3, average="macro"))
    assert got3["roc_auc"] == pytest.approx(roc_auc_score(y3, p3, multi_class="ovr"))
    assert got3["log_loss"] == pytest.approx(log_loss(y3, p3))
    # one class present: ROC AUC is undefined, not an exception
    assert math.isnan(
        classification_metrics(np.ones(5, int), np.ones(5, int), p2[:5], 2)["roc_auc"]
    )


def test_regression_metrics_match_sklearn():
    rng = np.random.default_rng(4)
    y, pred = rng.normal(size=300), rng.normal(size=300)
    got = regression_metrics(y, pred)
    assert got["rmse"] == pytest.approx(math.sqrt(mean_squared_error(y, pred)))
    assert got["mae"] == pytest.approx(mean_absolute_error(y, pred))


def test_expected_calibration_error_by_hand():
    y = np.array([0, 0, 1, 1, 0, 1, 1, 1])
    p = np.array([0.1, 0.2, 0.3, 0.4, 0.6, 0.7, 0.8, 0.9])
    # 4 equal-count bins of 2 (8 <= 2*10 bins, so n // 2 bins), each weighted 1/4
    gaps = [abs(0.15 - 0), abs(0.35 - 1), abs(0.65 - 0.5), abs(0.85 - 1)]
    assert expected_calibration_error(y, p) == pytest.approx(sum(gaps) / 4)


def test_cbpe_estimates_the_realized_performance_of_a_calibrated_model(model):
    x_ref, y_ref = concept(5000, 2.0, seed=1)
    cbpe = CBPE.fit(y_ref, model.predict_proba(x_ref), [0, 1])
    for scale, seed in ((2.0, 2), (0.3, 3)):  # in distribution, then shifted near the boundary
        x, y = concept(20_000, scale, seed=seed)
        proba, pred = model.predict_proba(x), model.predict(x)
        est = cbpe.estimate(pred, proba)
        assert est["accuracy"][0] == pytest.approx(accuracy_score(y, pred), abs=0.02)
        assert est["f1"][0] == pytest.approx(f1_score(y, pred), abs=0.02)
        assert est["roc_auc"][0] == pytest.approx(roc_auc_score(y, proba[:, 1]), abs=0.03)


def test_cbpe_multiclass_estimate():
    rng = np.random.default_rng(5)
    x = rng.normal(size=(12_000, 3))
    logits = x @ np.array([[2.0, -1.0, 0.0], [0.0, 2.0, -1.0], [-1.0, 0.0, 2.0]])
    p = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    y = (rng.random(12_000)[:, None] > p.cumsum(axis=1)).sum(axis=1)
    m = LogisticRegression().fit(x[:4000], y[:4000])
    cbpe = CBPE.fit(y[4000:8000], m.predict_proba(x[4000:8000]), [0, 1, 2])
    proba, pred = m.predict_proba(x[8000:]), m.predict(x[8000:])
    est = cbpe.estimate(pred, proba)
    assert est["accuracy"][0] == pytest.approx(accuracy_score(y[8000:], pred), abs=0.03)
    assert est["f1"][0] == pytest.approx(f1_score(y[8000:], pred, average="macro"), abs=0.03)
    assert est["roc_auc"][0] == pytest.approx(
        roc_auc_score(y[8000:], proba, multi_class="ovr"), abs=0.03
    )


def test_cbpe_windows_at_once_equal_nannymls_formulas_window_by_window(model):
    x_ref, y_ref = concept(3000, 2.0, seed=6)
    cbpe = CBPE.fit(y_ref, model.predict_proba(x_ref), [0, 1])
    x, _ = concept(6000, 1.0, seed=7)
    proba, pred = model.predict_proba(x), model.predict(x)
    groups = np.sort(np.random.default_rng(8).integers(0, 4, 6000))
    est = cbpe.estimate(pred, proba, groups)
    cal = cbpe.calibrated(proba)[:, 1]
    for g in range(4):
        sel = groups == g
        p, yp, raw = cal[sel], pred[sel], proba[sel, 1]
        accuracy = np.mean(np.where(yp == 1, p, 1 - p))
        tp, fp, fn = p[yp == 1].sum(), (1 - p[yp == 1]).sum(), p[yp == 0].sum()
        order = np.argsort(raw)[::-1]
        tps = np.r_[0, np.cumsum(p[order])]
        fps = np.r_[0, 1 + np.arange(sel.sum()) - np.cumsum(p[order])]
        assert est["n"][g] == sel.sum()
        assert est["accuracy"][g] == pytest.approx(accuracy)
        assert est["f1"][g] == pytest.approx(tp / (tp + 0.5 * (fp + fn)))
        assert est["roc_auc"][g] == pytest.approx(auc(fps / fps[-1], tps / tps[-1]))


@pytest.mark.parametrize(
    ("y", "proba", "classes", "message"),
    [
        (
            np.zeros(50, int),
            np.full((50, 2), 0.5),
            [0, 1],
            "calibration needs at least two classes",
        ),
        (np.r_[np.zeros(5, int), np.ones(5, int)], np.full((10, 2), 0.5), [0, 1], "at least 20"),
        (np.zeros(50, int), np.full((50, 1), 1.0), [0], "at least two classes, one column"),
    ],
)
def test_cbpe_refuses_a_reference_it_cannot_calibrate_on(y, proba, classes, message):
    with pytest.raises(UsageError, match=message):
        CBPE.fit(y, proba, classes)


def scored(model, parts: list[tuple[float, float, int, bool]]) -> pd.DataFrame:
    """A scored frame as labels.scored_frame gives it: (ts, scale, seed, labelled) parts."""
    frames = []
    for ts, scale, seed, labelled in parts:
        x, y = concept(2000, scale, seed)
        proba = model.predict_proba(x)
        frames.append(
            pd.DataFrame(
                {
                    "request_id": [f"r{seed}-{i}" for i in range(len(y))],
                    "row": 0,
                    "ts": ts + np.arange(len(y)) * 0.01,
                    "model": "m",
                    "version": 1,
                    "route": "main",
                    "prediction": model.predict(x).tolist(),
                    "f0": x[:, 0],
                    "f1": x[:, 1],
                    "f2": x[:, 2],
                    "proba:0": proba[:, 0],
                    "proba:1": proba[:, 1],
                    "label": pd.Series(y.tolist() if labelled else [None] * len(y), dtype=object),
                    "labeled_at": np.full(len(y), ts + 999.0 if labelled else np.nan),
                }
            )
        )
    frame = pd.concat(frames, ignore_index=True)
    frame["version"] = frame["version"].astype("Int64")
    return frame


def test_performance_table_per_window_realized_beside_estimated(model):
    frame = scored(
        model, [(0.0, 2.0, 11, True), (3600.0, 2.0, 12, False), (7200.0, 0.3, 13, False)]
    )
    table = performance_table(frame, window=3600.0, reference=frame[frame.ts < 3600])
    assert list(table.n) == [2000, 2000, 2000] and list(table.labelled) == [2000, 0, 0]
    first = table.iloc[0]
    x, y = concept(2000, 2.0, 11)
    assert first.accuracy == pytest.approx(accuracy_score(y, model.predict(x)))
    assert first.roc_auc == pytest.approx(roc_auc_score(y, model.predict_proba(x)[:, 1]))
    assert math.isnan(table.accuracy[1]) and math.isnan(table.accuracy[2])  # not labelled yet
    assert table.accuracy_estimated[2] < table.accuracy_estimated[1] - 0.15  # the shift shows


def test_a_classifier_without_probabilities_cannot_be_estimated(model):
    frame = scored(model, [(0.0, 2.0, 14, True)]).drop(columns=["proba:0", "proba:1"])
    with pytest.raises(UsageError, match="logged no class probabilities") as err:
        performance_table(frame, window=None)
    assert "--no-estimate" in str(err.value)
    table = performance_table(frame, window=None, estimate=False)
    x, y = concept(2000, 2.0, 14)
    assert table.accuracy[0] == pytest.approx(accuracy_score(y, model.predict(x)))
    assert math.isnan(table.log_loss[0]) and "accuracy_estimated" not in table


def test_regressor_windows_get_rmse_and_mae():
    rng = np.random.default_rng(9)
    y, pred = rng.normal(size=400), rng.normal(size=400) + 0.1
    frame = pd.DataFrame(
        {"request_id": [str(i) for i in range(400)], "row": 0, "ts": np.arange(400.0),
         "model": "reg", "version": pd.array([2] * 400, dtype="Int64"), "route": "main",
         "prediction": pred.tolist(), "label": pd.Series(y.tolist(), dtype=object),
         "labeled_at": 1.0}
    )  # fmt: skip
    table = performance_table(frame, window=200.0)
    assert list(table.n) == [200, 200]
    assert table.rmse[1] == pytest.approx(math.sqrt(mean_squared_error(y[200:], pred[200:])))
    assert table.mae[0] == pytest.approx(mean_absolute_error(y[:200], pred[:200]))


def test_worst_slices_find_the_region_where_the_model_fails(model):
    frame = scored(model, [(0.0, 2.0, 15, True)])
    near = (frame.f0 + frame.f1).abs() < 0.5  # where the labels are coin flips
    frame.loc[near, "f2"] = 10.0  # a feature that marks exactly those records
    worst = worst_slices(frame, limit=3)
    assert worst.slice[0].startswith("f2 in (") and worst.score[0] < worst.overall[0] - 0.2
    estimated = worst_slices(frame, source="estimated", limit=3)
    assert estimated.slice[0] == worst.slice[0]
    with pytest.raises(UsageError, match="No labelled predictions"):
        worst_slices(scored(model, [(0.0, 2.0, 16, False)]))


def test_health_percentiles_errors_and_volume():
    rng = np.random.default_rng(10)
    lat = rng.exponential(5.0, 1000)
    status = np.where(rng.random(1000) < 0.05, 500, 200)
    status[:10] = 422
    log = pd.DataFrame(
        {"request_id": [str(i) for i in range(1000)], "route": "main", "ts": np.arange(1000.0),
         "model": "m", "version": pd.array([1] * 500 + [2] * 500, dtype="Int64"),
         "status": status, "latency_ms": lat}
    )  # fmt: skip
    shadow = log.head(50).assign(route="shadow", latency_ms=1e6)
    table = health_table(pd.concat([log, shadow]), window=500.0)
    assert list(table.version) == [1, 2] and list(table.requests) == [500, 500]
    for i, part in enumerate((slice(0, 500), slice(500, 1000))):
        for p in (50, 95, 99):
            assert table[f"latency_p{p}_ms"][i] == pytest.approx(np.percentile(lat[part], p))
        assert table.errors_5xx[i] == (status[part] == 500).sum()
        assert table.error_rate[i] == pytest.approx((status[part] == 500).mean())
    assert table.errors_4xx[0] == 10 and table.per_second[0] == pytest.approx(1.0)


def test_resource_table_in_mebibytes_and_windows():
    res = pd.DataFrame(
        {"ts": [0.0, 5.0, 10.0, 65.0], "pid": 7, "cpu_percent": [10.0, 30.0, 20.0, 50.0],
         "rss_bytes": [2**20 * 100, 2**20 * 120, 2**20 * 110, 2**20 * 90], "threads": 4}
    )  # fmt: skip
    res["time"] = pd.to_datetime(res.ts, unit="s", utc=True)
    assert list(resource_table(res).rss_mb) == [100.0, 120.0, 110.0, 90.0]
    per_minute = resource_table(res, window=60.0)
    assert list(per_minute.cpu_percent) == [20.0, 50.0] and list(per_minute.rss_mb) == [120.0, 90.0]
