"""Drift of current data from a reference: one row per feature (its statistics, the test the
verdict rests on, missing values, new categories) and a dataset verdict (the drifted share).

:func:`drift` compares two DataFrames; :func:`drift_of_summaries` compares column summaries,
which is how profiles of the prediction log are compared without reading its rows.
"""

from __future__ import annotations

import math
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from nbmlops.core.monitor import stats
from nbmlops.core.monitor.summary import (
    ColumnSummary,
    feature_kinds,
    summarize_column,
)
from nbmlops.exceptions import UsageError

if TYPE_CHECKING:
    import pandas as pd

    from nbmlops.core.monitor.multivariate import MultivariateDrift

__all__ = ["MIN_ROWS", "DriftReport", "check_rows", "drift", "drift_of_summaries"]

MIN_ROWS = 30  # fewer rows than this on either side and a test says little: refuse
HIST_BINS = 30
TOP_CATEGORIES = 15


@dataclass
class DriftReport:
    """Per-feature drift (``features``, one row per feature) and the dataset verdict.

    ``features`` columns: feature, kind, test (the one the verdict rests on), score (its
    p-value, corrected, or its distance), threshold, drifted; then every statistic computed
    (ks, ks_p, wasserstein, chi2, chi2_p, jensenshannon, psi), reference_rows, current_rows,
    reference_missing, current_missing (shares of nulls), new_categories and note.
    ``dataset_drift`` is true when ``drift_share`` (drifted / compared features) is at least
    ``share_threshold``.
    """

    features: pd.DataFrame
    drift_share: float
    share_threshold: float
    dataset_drift: bool
    correction: str
    reference_rows: int
    current_rows: int
    reference_label: str = "reference"
    current_label: str = "current"
    notes: list[str] = field(default_factory=list)
    histograms: dict[str, dict[str, Any]] = field(default_factory=dict)
    multivariate: MultivariateDrift | None = None

    @property
    def drifted(self) -> list[str]:
        """Names of the drifted features."""
        return [str(f) for f in self.features.loc[self.features["drifted"], "feature"]]

    def to_frame(self) -> pd.DataFrame:
        return self.features.copy()

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able dict (the CLI's ``--json``)."""
        import numpy as np

        def clean(v: Any) -> Any:
            if isinstance(v, (np.floating, float)):
                return None if not math.isfinite(float(v)) else float(v)
            if isinstance(v, np.integer):
                return int(v)
            if isinstance(v, np.bool_):
                return bool(v)
            if isinstance(v, (list, tuple)):
                return [clean(x) for x in v]
            return v

        rows = [{k: clean(v) for k, v in r.items()} for r in self.features.to_dict("records")]
        out: dict[str, Any] = {
            "dataset_drift": self.dataset_drift,
            "drift_share": self.drift_share,
            "share_threshold": self.share_threshold,
            "drifted": self.drifted,
            "correction": self.correction,
            "reference": {"label": self.reference_label, "rows": self.reference_rows},
            "current": {"label": self.current_label, "rows": self.current_rows},
            "features": rows,
            "notes": list(self.notes),
        }
        if self.multivariate is not None:
            out["multivariate"] = self.multivariate.to_dict()
        return out

    def summary(self) -> str:
        """One line: how many features drifted and the dataset verdict."""
        n = len(self.features)
        verdict = "dataset drift" if self.dataset_drift else "no dataset drift"
        names = f": {', '.join(self.drifted)}" if self.drifted else ""
        line = f"{len(self.drifted)} of {n} features drifted ({self.drift_share:.0%}, {verdict}){names}"
        if self.multivariate is not None:
            line += f"; {self.multivariate.summary()}"
        return line

    def figure(self, features: list[str] | None = None, max_features: int = 12) -> Any:
        """Overlaid histograms (reference vs current) of ``features`` (default: the drifted)."""
        from nbmlops.core.monitor.report import drift_figure

        return drift_figure(self, features, max_features)

    def png(self, features: list[str] | None = None) -> bytes | None:
        """:meth:`figure` as PNG bytes (None when nothing drifted)."""
        from nbmlops.core.monitor.report import figure_png

        fig = self.figure(features)
        return None if fig is None else figure_png(fig)

    def to_html(self, path: str | os.PathLike[str] | None = None) -> str:
        """A self-contained HTML report (table + plots inline); written to ``path`` if given."""
        from nbmlops.core.monitor.report import drift_html

        return drift_html(self, path)

    def _repr_html_(self) -> str:
        from nbmlops.core.monitor.report import drift_table_html

        return drift_table_html(self)


def drift(
    reference: pd.DataFrame,
    current: pd.DataFrame,
    *,
    columns: list[str] | None = None,
    numeric: list[str] | None = None,
    categorical: list[str] | None = None,
    test: str = "auto",
    thresholds: dict[str, float] | None = None,
    correction: str = "bh",
    drift_share: float = 0.5,
    categorical_max: int = 50,
    min_rows: int = MIN_ROWS,
    multivariate: bool = False,
    workers: int | None = None,
    labels: tuple[str, str] = ("reference", "current"),
) -> DriftReport:
    """Drift of ``current`` from ``reference``, feature by feature.

    ``columns`` defaults to the reference's; each must be in ``current``. Kinds are inferred
    (see :func:`~nbmlops.core.monitor.summary.feature_kinds`) unless declared with
    ``numeric=[...]`` / ``categorical=[...]``. ``test="auto"`` picks the test per column as
    Evidently does (:mod:`nbmlops.core.monitor.stats`); name one of ks, wasserstein, chi2,
    jensenshannon, psi to use it wherever it applies. p-value tests are corrected for the
    number of features (``correction``: bh, bonferroni, none). ``multivariate=True`` adds
    the PCA reconstruction test of :mod:`nbmlops.core.monitor.multivariate`.
    """
    from nbmlops.core.data.column_kinds import check_frame

    reference = check_frame(reference, "reference")
    current = check_frame(current, "current")
    _check_options(test, correction, drift_share, min_rows, thresholds)
    cols = reference_columns(reference, columns)
    missing = [c for c in cols if c not in current.columns]
    if missing:
        raise UsageError(
            f"the current data lacks {len(missing)} feature(s) of the reference: "
            f"{', '.join(map(repr, missing))}",
            fix="send every feature the model was trained on, or compare a subset with "
            f"columns=[...] (the current data has {', '.join(map(str, current.columns[:12]))})",
        )
    check_rows(len(reference), len(current), min_rows, labels)
    kinds, notes = feature_kinds(
        reference, cols, numeric=numeric, categorical=categorical, categorical_max=categorical_max
    )
    extra = [str(c) for c in current.columns if str(c) not in set(map(str, reference.columns))]
    if extra:
        notes.append(f"not in the reference, so not compared: {', '.join(extra[:12])}")

    def one(col: str) -> tuple[ColumnSummary, ColumnSummary]:
        kind = kinds[col]
        return (
            summarize_column(reference[col], kind, "reference"),
            summarize_column(current[col], kind, "current"),
        )

    pairs = _map(one, list(kinds), workers)
    summaries = dict(zip(kinds, pairs, strict=True))
    report = drift_of_summaries(
        summaries,
        test=test,
        thresholds=thresholds,
        correction=correction,
        drift_share=drift_share,
        min_rows=min_rows,
        workers=workers,
        labels=labels,
        reference_rows=len(reference),
        current_rows=len(current),
    )
    report.notes[:0] = notes
    if multivariate:
        from nbmlops.core.monitor.multivariate import pca_drift

        numeric_cols = [c for c, k in kinds.items() if k == "numeric"]
        report.multivariate = pca_drift(reference[numeric_cols], current[numeric_cols])
    return report


def drift_of_summaries(
    summaries: dict[str, tuple[ColumnSummary, ColumnSummary]],
    *,
    test: str = "auto",
    thresholds: dict[str, float] | None = None,
    correction: str = "bh",
    drift_share: float = 0.5,
    min_rows: int = MIN_ROWS,
    workers: int | None = None,
    labels: tuple[str, str] = ("reference", "current"),
    reference_rows: int | None = None,
    current_rows: int | None = None,
) -> DriftReport:
    """Drift from (reference, current) summaries per feature: the common path of frames and
    profiles."""
    import pandas as pd

    _check_options(test, correction, drift_share, min_rows, thresholds)
    limits = {**stats.DEFAULT_THRESHOLDS, **(thresholds or {})}
    names = list(summaries)
    results = _map(lambda c: _feature(c, *summaries[c], test, min_rows), names, workers)
    rows = [r for r, _ in results]
    table = pd.DataFrame(rows, columns=_COLUMNS)
    # the correction counts the features whose verdict rests on a p-value
    is_p = table["test"].isin(stats.P_VALUE_TESTS).to_numpy()
    score = table["score"].to_numpy(dtype="float64").copy()
    if is_p.any():
        score[is_p] = stats.adjust_p_values(score[is_p], correction)
    table["score"] = score
    table["threshold"] = [limits.get(t, math.nan) for t in table["test"]]
    table["drifted"] = [
        bool(t in limits and stats.is_drifted(t, s, limits[t]))
        for t, s in zip(table["test"], score, strict=True)
    ]
    tested = int((table["test"] != "none").sum())
    share = float(table["drifted"].sum() / tested) if tested else 0.0
    ref_rows = reference_rows if reference_rows is not None else _rows(summaries, 0)
    cur_rows = current_rows if current_rows is not None else _rows(summaries, 1)
    return DriftReport(
        features=table,
        drift_share=share,
        share_threshold=drift_share,
        dataset_drift=bool(tested and share >= drift_share),
        correction=correction,
        reference_rows=int(ref_rows),
        current_rows=int(cur_rows),
        reference_label=labels[0],
        current_label=labels[1],
        histograms={c: h for c, (_, h) in zip(names, results, strict=True) if h},
        notes=[str(r["note"]) for r in rows if r["note"]],
    )


_COLUMNS = [
    "feature",
    "kind",
    "test",
    "score",
    "threshold",
    "drifted",
    "ks",
    "ks_p",
    "wasserstein",
    "chi2",
    "chi2_p",
    "jensenshannon",
    "psi",
    "reference_rows",
    "current_rows",
    "reference_missing",
    "current_missing",
    "new_categories",
    "note",
]


def _feature(
    name: str, ref: ColumnSummary, cur: ColumnSummary, test: str, min_rows: int
) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """The statistics row of one feature and its histogram data (for the plots)."""
    nan = math.nan
    row: dict[str, Any] = dict.fromkeys(_COLUMNS, nan)
    row.update(
        feature=name,
        kind=ref.kind,
        test="none",
        drifted=False,
        reference_rows=ref.rows,
        current_rows=cur.rows,
        reference_missing=ref.nulls / ref.rows if ref.rows else nan,
        current_missing=cur.nulls / cur.rows if cur.rows else nan,
        new_categories=[],
        note="",
    )
    need = max(min_rows, 2)
    if ref.values < need or cur.values < need:
        side, have = ("reference", ref.values) if ref.values < need else ("current", cur.values)
        row["note"] = (
            f"{name}: not tested, the {side} has {have} non-null values (fewer than {need}); "
            f"its missing share is {row['current_missing' if side == 'current' else 'reference_missing']:.0%}"
        )
        return row, None
    if ref.kind == "numeric":
        assert ref.numeric is not None and cur.numeric is not None
        rc = ref.numeric.value_counts(stats.FEW_VALUES)
        cc = cur.numeric.value_counts(stats.FEW_VALUES)
        distinct = None
        if rc is not None and cc is not None:
            distinct = len(rc.index.union(cc.index))
        chosen = stats.choose_test("numeric", ref.values, distinct) if test == "auto" else test
        ks, w = stats.ks_wasserstein(ref.numeric, cur.numeric)
        norm = max(ref.numeric.std(), 0.001)  # Evidently's floor for a constant reference
        row.update(
            ks=ks,
            ks_p=stats.ks_test(ref.numeric, cur.numeric, ks),
            wasserstein=w / norm,
            psi=stats.numeric_psi(ref.numeric, cur.numeric),
        )
        if chosen in ("chi2", "jensenshannon"):
            if rc is None or cc is None:
                rc, cc = _binned(ref, cur)
            _categorical_stats(row, rc, cc)
        hist = _numeric_hist(ref, cur)
    else:
        assert ref.counts is not None and cur.counts is not None
        chosen = stats.choose_test("categorical", ref.values, None) if test == "auto" else test
        _categorical_stats(row, ref.counts, cur.counts)
        new = cur.counts[~cur.counts.index.isin(ref.counts.index)]
        row["new_categories"] = [str(v) for v in new.sort_values(ascending=False).index[:10]]
        if len(new):
            row["note"] = (
                f"{name}: {len(new)} categories unseen in the reference "
                f"({new.sum() / cur.values:.1%} of current values)"
            )
        hist = _categorical_hist(ref.counts, cur.counts)
    if chosen not in stats.TESTS:
        raise UsageError(f"unknown test {chosen!r}", fix=f"pass one of {', '.join(stats.TESTS)}")
    score_of = {"ks": "ks_p", "chi2": "chi2_p"}
    if ref.kind == "categorical" and chosen in ("ks", "wasserstein"):
        chosen = "chi2" if chosen == "ks" else "jensenshannon"  # a numeric test on categories
    row["test"] = chosen
    row["score"] = row[score_of.get(chosen, chosen)]
    return row, hist


def _categorical_stats(row: dict[str, Any], rc: pd.Series, cc: pd.Series) -> None:
    r, c, _ = stats.share_vectors(rc, cc)
    chi, p = stats.chi_square(r, c)
    row.update(
        chi2=chi,
        chi2_p=p,
        jensenshannon=stats.jensen_shannon(r, c),
        psi=stats.psi(r / r.sum(), c / c.sum()),
    )


def _binned(ref: ColumnSummary, cur: ColumnSummary) -> tuple[pd.Series, pd.Series]:
    """Counts over the reference's decile bins, for a categorical test on a numeric column."""
    import numpy as np
    import pandas as pd

    assert ref.numeric is not None and cur.numeric is not None
    edges = np.unique(ref.numeric.quantiles(np.linspace(0.0, 1.0, stats.PSI_BINS + 1)[1:-1]))

    def counts(s: ColumnSummary) -> pd.Series:
        assert s.numeric is not None
        share = np.diff(np.r_[0.0, s.numeric.cdf(edges), 1.0])
        return pd.Series(np.round(share * s.values), index=range(len(share)))

    return counts(ref), counts(cur)


def _numeric_hist(ref: ColumnSummary, cur: ColumnSummary) -> dict[str, Any]:
    import numpy as np

    assert ref.numeric is not None and cur.numeric is not None
    lo_hi = np.r_[
        ref.numeric.quantiles(np.array([0.001, 0.999])),
        cur.numeric.quantiles(np.array([0.001, 0.999])),
    ]
    lo, hi = float(lo_hi.min()), float(lo_hi.max())
    if not hi > lo:
        hi = lo + 1.0
    edges = np.linspace(lo, hi, HIST_BINS + 1)
    return {
        "kind": "numeric",
        "edges": edges.tolist(),
        "reference": np.diff(ref.numeric.cdf(edges)).tolist(),
        "current": np.diff(cur.numeric.cdf(edges)).tolist(),
    }


def _categorical_hist(rc: pd.Series, cc: pd.Series) -> dict[str, Any]:
    r, c, cats = stats.share_vectors(rc, cc)
    r_share, c_share = r / max(r.sum(), 1), c / max(c.sum(), 1)
    top = (r_share + c_share).argsort()[::-1][:TOP_CATEGORIES]
    return {
        "kind": "categorical",
        "categories": [str(x) for x in cats[top]],
        "reference": r_share[top].tolist(),
        "current": c_share[top].tolist(),
    }


def reference_columns(reference: pd.DataFrame, columns: Any = None) -> list[str]:
    """The columns to compare (default: all of the reference's), each one the reference has."""
    cols = [str(c) for c in (columns if columns is not None else reference.columns)]
    missing = [c for c in cols if c not in reference.columns]
    if missing:
        raise UsageError(
            f"the reference has no column {', '.join(map(repr, missing))}",
            fix="pass columns=[...] naming columns both frames have",
        )
    return cols


def _check_options(
    test: str,
    correction: str,
    drift_share: float,
    min_rows: int,
    thresholds: dict[str, float] | None,
) -> None:
    if test != "auto" and test not in stats.TESTS:
        raise UsageError(
            f"unknown test {test!r}", fix=f"pass test='auto' or one of {', '.join(stats.TESTS)}"
        )
    if correction not in ("bh", "bonferroni", "none"):
        raise UsageError(
            f"unknown correction {correction!r}",
            fix="pass correction='bh' (Benjamini-Hochberg), 'bonferroni' or 'none'",
        )
    if not 0.0 < drift_share <= 1.0:
        raise UsageError(f"drift_share must be in (0, 1], got {drift_share}", fix="pass e.g. 0.5")
    if min_rows < 1:
        raise UsageError(f"min_rows must be >= 1, got {min_rows}", fix="pass e.g. 30")
    unknown = sorted(set(thresholds or {}) - set(stats.TESTS))
    if unknown:
        raise UsageError(
            f"thresholds for unknown tests: {', '.join(unknown)}",
            fix=f"name tests among {', '.join(stats.TESTS)}",
        )


def check_rows(ref_rows: int, cur_rows: int, min_rows: int, labels: tuple[str, str]) -> None:
    """A clear error when either side has no rows or fewer than ``min_rows``."""
    for rows, label in ((ref_rows, labels[0]), (cur_rows, labels[1])):
        if rows == 0:
            raise UsageError(
                f"the {label} data is empty (0 rows): there is nothing to compare",
                fix="widen the window (e.g. last='24h' or since=...) or pass a non-empty frame",
            )
        if rows < min_rows:
            raise UsageError(
                f"the {label} data has {rows} rows; the drift tests need at least {min_rows}",
                fix="widen the window (e.g. last='24h', since=..., rows=1000), or pass "
                f"min_rows={rows} to accept tests with little power",
            )


def _rows(summaries: dict[str, tuple[ColumnSummary, ColumnSummary]], side: int) -> int:
    return max((pair[side].rows for pair in summaries.values()), default=0)


def _map(fn: Any, items: list[Any], workers: int | None) -> list[Any]:
    """``fn`` over ``items`` on a few threads: numpy's sorts and searches release the GIL."""
    n = workers if workers is not None else min(4, os.cpu_count() or 1)
    if n <= 1 or len(items) <= 1:
        return [fn(x) for x in items]
    with ThreadPoolExecutor(max_workers=n) as pool:
        return list(pool.map(fn, items))
