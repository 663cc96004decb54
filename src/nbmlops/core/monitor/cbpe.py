"""Confidence-based performance estimation (CBPE, as NannyML does it): a classifier's
accuracy, F1 and ROC AUC estimated from its own class probabilities, before labels arrive.

Fit on a reference set with labels: each class's probability is calibrated with isotonic
regression when that lowers the expected calibration error (NannyML's test: ten stratified
10% test sets, ECE over ten equal-count bins; skipped when one class only or ROC AUC > 0.999),
and rows are renormalised for several classes. On new data the calibrated probability of
each record is its expected share of every cell of the confusion matrix, so the expected
matrix gives the metrics. It holds under covariate shift (P(y|x) unchanged), as NannyML's.

Hand-written rather than calling NannyML: the same formulas vectorised over all windows at
once (one ``bincount`` per sum, one sort for every window's ROC curve) are an order of
magnitude faster, and NannyML's dependency tree (LightGBM, FLAML, plotly, ...) is heavy.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from nbmlops.exceptions import UsageError

METRICS = ("accuracy", "f1", "roc_auc")
MIN_REFERENCE = 20  # labelled rows: below this neither calibration nor its check means much


def expected_calibration_error(y: np.ndarray, p: np.ndarray, bins: int = 10) -> float:
    """ECE over ``bins`` equal-count bins of the sorted probabilities (NannyML's binning)."""
    order = np.argsort(p, kind="stable")
    p, y = p[order], y[order]
    n = len(p)
    if n <= 2 * bins:
        bins = max(n // 2, 1)
    width = n // bins
    edges = np.arange(0, n + 1, width)
    edges[-1] = n
    ids = np.repeat(np.arange(len(edges) - 1), np.diff(edges))
    counts = np.bincount(ids)
    gap = np.abs(np.bincount(ids, weights=p) - np.bincount(ids, weights=y)) / counts
    return float(np.sum(gap * counts / n))


def _isotonic_on_sorted(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Isotonic regression of ``y`` on ``x`` already sorted by ``x``: (knots, values) for
    ``np.interp``. What ``IsotonicRegression(out_of_bounds="clip").fit`` computes (equal x
    merged to their mean y, then PAVA), without re-sorting for each of the check's splits."""
    from sklearn.isotonic import isotonic_regression

    starts = np.flatnonzero(np.r_[True, x[1:] != x[:-1]])
    counts = np.diff(np.r_[starts, len(x)]).astype("float64")
    means = np.add.reduceat(y, starts) / counts
    knots, values = x[starts], isotonic_regression(means, sample_weight=counts, increasing=True)
    if len(values) > 2:  # inside a flat step only its ends matter (as scikit-learn keeps them)
        keep = np.r_[True, (values[:-2] != values[1:-1]) | (values[1:-1] != values[2:]), True]
        knots, values = knots[keep], values[keep]
    return knots, values


def stratified_tenths(y: np.ndarray, splits: int, seed: int = 42) -> list[np.ndarray]:
    """``splits`` random test sets of a tenth of the rows, each class in proportion.

    NannyML draws these with scikit-learn's StratifiedShuffleSplit; its per-row Python lists
    cost more than the whole estimate of a million predictions, and the check compares pooled
    calibration errors, which do not hang on which rows a tenth holds.
    """
    rng = np.random.default_rng(seed)
    classes = [np.flatnonzero(y == c) for c in np.unique(y)]
    n_test = max(int(np.ceil(0.1 * len(y))), len(classes))
    share = [len(c) * n_test / len(y) for c in classes]
    counts = [max(int(s), 1) for s in share]
    for i in np.argsort([c - s for c, s in zip(counts, share, strict=True)]):
        if sum(counts) >= n_test:
            break
        counts[i] += 1
    return [
        np.concatenate([rng.permutation(c)[:k] for c, k in zip(classes, counts, strict=True)])
        for _ in range(splits)
    ]


def _sorted_roc_auc(p_sorted: np.ndarray, y_sorted: np.ndarray) -> float:
    """ROC AUC (Mann-Whitney, ties at their mean rank) of scores already sorted: what
    ``roc_auc_score`` answers, without sorting again."""
    starts = np.flatnonzero(np.r_[True, p_sorted[1:] != p_sorted[:-1]])
    counts = np.diff(np.r_[starts, len(p_sorted)])
    mean_rank = np.repeat(starts + (counts + 1) / 2.0, counts)
    n1 = y_sorted.sum()
    n0 = len(y_sorted) - n1
    return float((mean_rank @ y_sorted - n1 * (n1 + 1) / 2.0) / (n1 * n0))


def needs_calibration(y: np.ndarray, p: np.ndarray, splits: int = 10) -> bool:
    """Whether isotonic calibration lowers the ECE on held-out tenths of the reference."""
    if np.bincount(y.astype(np.int64), minlength=2).min() < 2:
        return False  # one class (or one record of a class): nothing to split and compare
    order = np.argsort(p, kind="stable")
    rank = np.empty_like(order)
    rank[order] = np.arange(len(order))
    p_sorted, y_sorted = p[order], y[order].astype("float64")
    if _sorted_roc_auc(p_sorted, y_sorted) > 0.999:
        return False  # the scores separate the classes: nothing to calibrate
    ys, before, after = [], [], []
    for test in stratified_tenths(y, splits):
        keep = np.ones(len(p), dtype=bool)
        keep[rank[test]] = False  # the training rows, still in sorted order
        knots, values = _isotonic_on_sorted(p_sorted[keep], y_sorted[keep])
        ys.append(y[test])
        before.append(p[test])
        after.append(np.interp(p[test], knots, values))
    yy = np.concatenate(ys)
    return expected_calibration_error(yy, np.concatenate(before)) > expected_calibration_error(
        yy, np.concatenate(after)
    )


@dataclass
class CBPE:
    """A fitted estimator: the classes (in the probability columns' order) and one
    calibrator per class column, the (knots, values) of its isotonic fit (None: the model's
    probability is used as it is)."""

    classes: list[Any]
    calibrators: list[Any] = field(default_factory=list)
    reference_size: int = 0

    @property
    def binary(self) -> bool:
        return len(self.classes) == 2

    @classmethod
    def fit(cls, y_true: np.ndarray, proba: np.ndarray, classes: list[Any]) -> CBPE:
        """Calibrate on a labelled reference: ``y_true`` as class indices (0..k-1) into
        ``classes``, ``proba`` the model's probabilities (n, k)."""
        y_true = np.asarray(y_true)
        proba = np.asarray(proba, dtype="float64")
        if proba.ndim != 2 or proba.shape[1] != len(classes) or len(classes) < 2:
            raise UsageError(
                f"CBPE needs class probabilities of at least two classes, one column each "
                f"(got shape {proba.shape} for classes {classes})",
                fix="Serve a classifier with predict_proba.",
            )
        if len(y_true) < MIN_REFERENCE:
            raise UsageError(
                f"The reference has {len(y_true)} labelled predictions; the estimate needs "
                f"at least {MIN_REFERENCE}",
                fix="Label more predictions of the reference period (nbmlops monitor label), "
                "pass a larger reference, or ask for realized metrics only (--no-estimate).",
            )
        present = np.unique(y_true)
        if len(present) < 2:
            raise UsageError(
                f"Every labelled reference prediction is of class {classes[int(present[0])]!r}; "
                "calibration needs at least two classes",
                fix="Use a reference period whose labels hold more than one class.",
            )
        columns = [1] if len(classes) == 2 else list(range(len(classes)))
        calibrators: list[Any] = [None] * len(classes)
        for c in columns:
            yc, pc = (y_true == c).astype("float64"), proba[:, c]
            if needs_calibration(yc, pc):
                order = np.argsort(pc, kind="stable")
                calibrators[c] = _isotonic_on_sorted(pc[order], yc[order])
        return cls(list(classes), calibrators, len(y_true))

    def _calibrate(self, c: int, p: np.ndarray) -> np.ndarray:
        knots = self.calibrators[c]
        return p if knots is None else np.interp(p, *knots)  # clipped beyond the ends

    def calibrated(self, proba: np.ndarray) -> np.ndarray:
        """The calibrated probabilities (n, k)."""
        proba = np.asarray(proba, dtype="float64")
        if self.binary:
            p1 = self._calibrate(1, proba[:, 1])
            return np.column_stack([1.0 - p1, p1])
        out = np.column_stack([self._calibrate(c, proba[:, c]) for c in range(proba.shape[1])])
        total = out.sum(axis=1, keepdims=True)
        uniform = np.full_like(out, 1.0 / out.shape[1])
        return np.divide(out, total, out=uniform, where=total != 0)

    def estimate(
        self,
        y_pred: np.ndarray,
        proba: np.ndarray,
        groups: np.ndarray | None = None,
        metrics: tuple[str, ...] = METRICS,
    ) -> dict[str, np.ndarray]:
        """Estimated metrics per group: ``y_pred`` as class indices, ``proba`` the model's
        probabilities (n, k), ``groups`` integer window ids 0..g-1 (None: one group).
        Returns ``{"n": counts, metric: values}``, arrays of length g."""
        y_pred = np.asarray(y_pred)
        proba = np.asarray(proba, dtype="float64")
        g = np.zeros(len(y_pred), dtype=np.int64) if groups is None else np.asarray(groups)
        ng = int(g.max()) + 1 if len(g) else 0
        counts = np.bincount(g, minlength=ng).astype("float64")
        out: dict[str, np.ndarray] = {"n": counts}
        if self.binary:  # the second class's column does: the first is its complement
            p1 = self._calibrate(1, proba[:, 1])
            is1 = y_pred == 1
            # expected correct = TP + TN, where TN = (n - n1) - (sum p - TP): four sums
            tp = np.bincount(g, weights=np.where(is1, p1, 0.0), minlength=ng)
            n1 = np.bincount(g[is1], minlength=ng)
            total = np.bincount(g, weights=p1, minlength=ng)
            with np.errstate(divide="ignore", invalid="ignore"):
                if "accuracy" in metrics:
                    out["accuracy"] = (2 * tp + counts - n1 - total) / counts
                if "f1" in metrics:  # FP = n1 - TP, FN = sum p - TP
                    denom = tp + 0.5 * ((n1 - tp) + (total - tp))
                    out["f1"] = np.where(denom != 0, tp / np.where(denom != 0, denom, 1.0), 0.0)
                if "roc_auc" in metrics:
                    out["roc_auc"] = _roc_auc(p1, proba[:, 1], g, ng, monotone=True)
            return out
        cal = self.calibrated(proba)
        cols = {c: cal[:, c] for c in range(len(self.classes))}
        p_pred = np.take_along_axis(cal, y_pred[:, None], axis=1)[:, 0]
        with np.errstate(divide="ignore", invalid="ignore"):
            if "accuracy" in metrics:
                out["accuracy"] = np.bincount(g, weights=p_pred, minlength=ng) / counts
            if "f1" in metrics:
                out["f1"] = np.mean([_f1(y_pred == c, p, g, ng) for c, p in cols.items()], axis=0)
            if "roc_auc" in metrics:
                out["roc_auc"] = np.mean(
                    [_roc_auc(p, proba[:, c], g, ng) for c, p in cols.items()], axis=0
                )
        return out


def _f1(is_c: np.ndarray, p: np.ndarray, g: np.ndarray, ng: int) -> np.ndarray:
    """Expected F1 of one class per group: TP, FP, FN as sums of calibrated probabilities."""
    tp = np.bincount(g, weights=np.where(is_c, p, 0.0), minlength=ng)
    fp = np.bincount(g, weights=np.where(is_c, 1.0 - p, 0.0), minlength=ng)
    fn = np.bincount(g, weights=np.where(is_c, 0.0, p), minlength=ng)
    denom = tp + 0.5 * (fp + fn)
    return np.where(denom != 0, tp / np.where(denom != 0, denom, 1.0), 0.0)


def _roc_auc(
    cal: np.ndarray, raw: np.ndarray, g: np.ndarray, ng: int, monotone: bool = False
) -> np.ndarray:
    """Expected ROC AUC per group: records ranked by the model's own score (descending, as
    NannyML ranks them), each counting ``cal`` as a positive and ``1 - cal`` as a negative.

    With ``tps`` the running sum of ``cal``, each record moves the curve right by
    ``(1 - p) / FP`` at mean height ``(2 tps - p) / (2 TP)``, so the trapezoid sum is one
    dot product per group. ``monotone``: ``cal`` never falls as ``raw`` rises (two classes:
    isotonic calibration, or none), so sorting ``cal`` itself gives the same sequence (equal
    values only swap places), without a gather.
    """
    out = np.full(ng, np.nan)
    if len(g) and not np.all(g[1:] >= g[:-1]):  # windows come sorted by time; else sort once
        order = np.argsort(g, kind="stable")
        cal, raw, g = cal[order], raw[order], g[order]
    bounds = np.searchsorted(g, np.arange(ng + 1))
    for k in range(ng):
        lo, hi = bounds[k], bounds[k + 1]
        if hi <= lo:
            continue
        p = np.sort(cal[lo:hi]) if monotone else cal[lo:hi][np.argsort(raw[lo:hi])]
        p = p[::-1]
        tps = np.cumsum(p)
        tp = tps[-1]
        fp = (hi - lo) - tp
        if tp > 0 and fp > 0:
            out[k] = float(np.dot(1.0 - p, 2.0 * tps - p)) / (2.0 * tp * fp)
    return out
