"""The feature ranges and categories where a served model performs worst.

Each numeric feature is cut into quantile bins, each categorical one into its most frequent
categories (the rest together); every bin with enough records is one slice. A slice's score is
the realized accuracy (classifiers) or mean absolute error (regressors) of its labelled
records, or, with ``source="estimated"``, the CBPE-expected accuracy of all its records: the
calibrated probability of the predicted class, averaged. Slices are ranked by how far they
fall behind the whole.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from nbmlops.core.monitor.labels import META, PROBA_PREFIX
from nbmlops.core.monitor.performance import class_indices, fit_reference, task_of
from nbmlops.exceptions import UsageError

if TYPE_CHECKING:
    import pandas as pd

_NOT_FEATURES = {*META, "label", "labeled_at"}


def _feature_columns(frame: pd.DataFrame) -> list[str]:
    return [
        c for c in frame.columns if c not in _NOT_FEATURES and not str(c).startswith(PROBA_PREFIX)
    ]


def _bins(values: pd.Series, bins: int, top: int) -> pd.Series:
    """A slice name for every record of one feature (NaN: in no slice)."""
    import pandas as pd

    numeric = pd.to_numeric(values, errors="coerce")
    if numeric.notna().sum() >= max(values.notna().sum() * 0.95, 1) and numeric.nunique() > top:
        cut = pd.qcut(numeric, q=bins, duplicates="drop")
        return cut.map(lambda iv: f"in ({iv.left:.4g}, {iv.right:.4g}]").astype(object)
    text = values.map(lambda v: None if v is None or v != v else str(v))
    common = text.value_counts().index[:top]
    return text.map(
        lambda v: None if v is None else (f"= {v!r}" if v in set(common) else "= (other)")
    )


def worst_slices(
    scored: pd.DataFrame,
    *,
    source: str = "realized",
    reference: pd.DataFrame | None = None,
    bins: int = 5,
    top: int = 10,
    min_size: int | None = None,
    limit: int = 10,
) -> pd.DataFrame:
    """The ``limit`` worst slices of one model version's scored records: feature, slice,
    n, score, overall score, gap (how much worse than overall), metric."""
    import pandas as pd

    if scored.empty:
        raise UsageError(
            "No predictions to slice", fix="Widen the window (--last, --since) or send traffic."
        )
    versions = scored[["model", "version"]].drop_duplicates()
    if len(versions) > 1:
        raise UsageError(
            f"Slices compare one model version; these records come from {len(versions)}",
            fix="Choose one with --model NAME --version N.",
        )
    task = task_of(scored)
    if source == "estimated":
        if task.classes is None or not task.has_proba:
            raise UsageError(
                "Estimated slices need a classifier that logged class probabilities",
                fix="Use realized slices (--source realized) once labels exist.",
            )
        cbpe = fit_reference(scored if reference is None else reference, task, "the slices")
        cols = [f"{PROBA_PREFIX}{c}" for c in task.classes]
        data = scored[scored[cols].notna().all(axis=1)]
        pred = class_indices(data["prediction"], task.classes)
        data = data[pred >= 0]
        cal = cbpe.calibrated(data[cols].to_numpy("float64"))
        score = np.take_along_axis(cal, pred[pred >= 0][:, None], axis=1)[:, 0]
        metric, higher_is_better = "accuracy (estimated)", True
    elif source == "realized":
        data = scored[scored["label"].notna()]
        if data.empty:
            raise UsageError(
                "No labelled predictions to find the worst slices in",
                fix="Label predictions first (nbmlops monitor label), or use "
                "--source estimated for a classifier.",
            )
        if task.classes is None:
            err = np.abs(data["label"].to_numpy("float64") - data["prediction"].to_numpy("float64"))
            score, metric, higher_is_better = err, "mae", False
        else:
            y, p = (
                class_indices(data["label"], task.classes),
                class_indices(data["prediction"], task.classes),
            )
            score, metric, higher_is_better = (y == p).astype("float64"), "accuracy", True
    else:
        raise UsageError(f"Unknown slice source {source!r}", fix="Use realized or estimated.")
    overall = float(np.mean(score)) if len(score) else float("nan")
    need = min_size if min_size is not None else max(10, len(data) // 50)
    rows: list[dict[str, Any]] = []
    scores = pd.Series(score, index=data.index)
    for feature in _feature_columns(data):
        names = _bins(data[feature], bins, top)
        for name, part in scores.groupby(names, dropna=True):
            if len(part) < need:
                continue
            value = float(part.mean())
            gap = overall - value if higher_is_better else value - overall
            rows.append(
                {"feature": feature, "slice": f"{feature} {name}", "n": len(part),
                 "score": value, "overall": overall, "gap": gap, "metric": metric}
            )  # fmt: skip
    table = pd.DataFrame(
        rows, columns=["feature", "slice", "n", "score", "overall", "gap", "metric"]
    )
    return (
        table.sort_values(["gap", "n"], ascending=[False, False]).head(limit).reset_index(drop=True)
    )
