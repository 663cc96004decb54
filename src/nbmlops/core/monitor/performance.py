"""Realized and estimated performance of a served model per time window and model version.

Realized metrics come from scikit-learn on the records labelled so far: accuracy, F1, ROC AUC
and log loss for classifiers (F1 and ROC AUC of the second class for two classes, macro
averages for more, as CBPE estimates them), RMSE and MAE for regressors. A classifier that
logged its class probabilities also gets the CBPE estimate (``<metric>_estimated``) of every
window, labelled or not, calibrated on a reference set with labels.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from nbmlops.core.monitor.cbpe import CBPE
from nbmlops.core.monitor.labels import PROBA_PREFIX, proba_columns
from nbmlops.exceptions import UsageError

if TYPE_CHECKING:
    import pandas as pd
    from matplotlib.figure import Figure

CLASSIFICATION = ("accuracy", "f1", "roc_auc", "log_loss")
ESTIMATED = ("accuracy", "f1", "roc_auc")
REGRESSION = ("rmse", "mae")


def classification_metrics(
    y_true: np.ndarray, y_pred: np.ndarray, proba: np.ndarray | None, n_classes: int
) -> dict[str, float]:
    """Accuracy, F1, ROC AUC and log loss of class indices (NaN where undefined: ROC AUC
    with one class present, probability metrics without probabilities)."""
    from sklearn.metrics import accuracy_score, f1_score, log_loss, roc_auc_score

    out = {m: math.nan for m in CLASSIFICATION}
    if len(y_true) == 0:
        return out
    labels = list(range(n_classes))
    out["accuracy"] = float(accuracy_score(y_true, y_pred))
    if n_classes == 2:
        out["f1"] = float(f1_score(y_true, y_pred, pos_label=1, zero_division=0.0))
    else:
        out["f1"] = float(
            f1_score(y_true, y_pred, labels=labels, average="macro", zero_division=0.0)
        )
    if proba is not None:
        out["log_loss"] = float(log_loss(y_true, proba, labels=labels))
        if len(np.unique(y_true)) == n_classes:  # ROC AUC needs every class present
            if n_classes == 2:
                out["roc_auc"] = float(roc_auc_score(y_true, proba[:, 1]))
            else:
                out["roc_auc"] = float(
                    roc_auc_score(y_true, proba, multi_class="ovr", average="macro", labels=labels)
                )
    return out


def regression_metrics(y_true: np.ndarray, y_pred: np.ndarray) -> dict[str, float]:
    """RMSE and MAE (NaN without labels)."""
    from sklearn.metrics import mean_absolute_error, mean_squared_error

    if len(y_true) == 0:
        return {m: math.nan for m in REGRESSION}
    return {
        "rmse": float(math.sqrt(mean_squared_error(y_true, y_pred))),
        "mae": float(mean_absolute_error(y_true, y_pred)),
    }


@dataclass
class Task:
    """How one model version's records read: its classes (None: a regressor) and whether it
    logged class probabilities."""

    classes: list[str] | None
    has_proba: bool


def task_of(frame: pd.DataFrame) -> Task:
    """The task of one model version's scored records."""
    cols = [c for c in proba_columns(frame) if frame[c].notna().any()]
    if cols:
        return Task([c[len(PROBA_PREFIX) :] for c in cols], True)
    preds = frame["prediction"].dropna()
    if preds.dtype.kind in "iuf":  # a numeric column: no need to look at each value
        values = preds.to_numpy("float64")
        regression = len(values) and not bool(np.all(np.isfinite(values) & (values % 1 == 0)))
    else:
        numeric = preds.map(lambda v: isinstance(v, int | float) and not isinstance(v, bool))
        regression = (
            len(preds) and numeric.all() and not preds.map(lambda v: float(v).is_integer()).all()
        )
    if regression:
        return Task(None, False)
    seen = set(_texts(preds)) | set(_texts(frame["label"].dropna()))
    return Task(sorted(seen), False)


def _texts(values: pd.Series) -> list[str]:
    """``str`` of each value: the distinct values' text for a typed column, whose equal
    values print alike (an object column may hold 1 and True, which hash alike)."""
    import pandas as pd

    if values.dtype == object:
        return values.map(str).tolist()
    uniques = pd.unique(values)
    return [str(v) for v in uniques.tolist()] if len(uniques) else []


def class_indices(values: pd.Series, classes: list[str]) -> np.ndarray:
    """Class indices of values (as their text); -1 for a value outside ``classes``."""
    import pandas as pd

    lookup = {c: i for i, c in enumerate(classes)}
    if values.dtype != object:  # each distinct value once
        codes, uniques = pd.factorize(values, use_na_sentinel=False)
        table = np.array([lookup.get(str(v), -1) for v in uniques.tolist()], dtype=np.int64)
        return table[codes] if len(codes) else np.empty(0, dtype=np.int64)
    at = pd.Index(list(lookup)).get_indexer(values.map(str))
    table = np.array([*lookup.values(), -1], dtype=np.int64)  # position -1 reads the -1
    return table[at]


def window_starts(ts: np.ndarray, seconds: float | None) -> np.ndarray:
    """The start (epoch seconds) of each record's window: multiples of ``seconds``."""
    if seconds is None:
        return np.full(len(ts), float(np.min(ts)) if len(ts) else 0.0)
    return np.floor(np.asarray(ts, dtype="float64") / seconds) * seconds


def fit_reference(reference: pd.DataFrame, task: Task, where: str) -> CBPE:
    """A CBPE fitted on the labelled records of ``reference`` (a scored frame)."""
    assert task.classes is not None
    labelled = reference[reference["label"].notna()]
    cols = [f"{PROBA_PREFIX}{c}" for c in task.classes]
    missing = [c for c in cols if c not in labelled.columns]
    if missing:
        raise UsageError(
            f"The reference of {where} has no probability column {missing[0]!r}",
            fix=f"Give the reference one {PROBA_PREFIX}<class> column per class "
            "(or take it from the labelled prediction log).",
        )
    labelled = labelled[labelled[cols].notna().all(axis=1)]
    y = class_indices(labelled["label"], task.classes)
    keep = y >= 0
    return CBPE.fit(y[keep], labelled[cols].to_numpy("float64")[keep], task.classes)


def performance_table(
    scored: pd.DataFrame,
    *,
    window: float | None = 3600.0,
    reference: pd.DataFrame | None = None,
    reference_until: float | None = None,
    estimate: bool = True,
) -> pd.DataFrame:
    """Realized and estimated metrics per (model, version, window) of a scored frame.

    ``reference``: labelled records with ``proba:<class>`` columns to calibrate the estimate
    on; default: the labelled records of the same version logged before ``reference_until``
    (all labelled records when None). ``estimate=False`` skips the estimate; a classifier
    without probabilities is an error unless it is skipped.
    """
    import pandas as pd

    rows: list[dict[str, Any]] = []
    for (model, version), part in scored.groupby(["model", "version"], sort=True, dropna=False):
        where = f"{model} version {version}"
        task = task_of(part)
        starts = window_starts(part["ts"].to_numpy(), window)
        uniq, groups = np.unique(starts, return_inverse=True)
        est: dict[str, np.ndarray] = {}
        if estimate and task.classes is not None:
            if not task.has_proba:
                raise UsageError(
                    f"{where} logged no class probabilities, so its performance cannot be "
                    "estimated before labels arrive",
                    fix="Serve a classifier with predict_proba (its probabilities are logged), "
                    "or ask for realized metrics only (--no-estimate, estimate=False).",
                )
            ref = reference
            if ref is None:
                ref = part if reference_until is None else part[part["ts"] < reference_until]
            cbpe = fit_reference(ref, task, where)
            cols = [f"{PROBA_PREFIX}{c}" for c in task.classes]
            proba = part[cols].to_numpy("float64")
            pred = class_indices(part["prediction"], task.classes)
            ok = (pred >= 0) & ~np.isnan(proba).any(axis=1)
            est = cbpe.estimate(pred[ok], proba[ok], groups[ok])
        # every window's rows at once: one stable sort by window, then slices in log order
        order = np.argsort(groups, kind="stable")
        bounds = np.searchsorted(groups[order], np.arange(len(uniq) + 1))
        labelled = part["label"].notna().to_numpy()
        n_of = np.diff(bounds)
        cols = [f"{PROBA_PREFIX}{c}" for c in task.classes or []]
        if task.classes is None:
            y_all = part["label"].to_numpy("float64", na_value=np.nan)
            p_all = part["prediction"].to_numpy("float64", na_value=np.nan)
        else:
            y_all = np.full(len(part), -1, dtype=np.int64)
            y_all[labelled] = class_indices(part["label"][labelled], task.classes)
            p_all = class_indices(part["prediction"], task.classes)
        proba_all = part[cols].to_numpy("float64") if task.has_proba and cols else None
        for gi, start in enumerate(uniq):
            at = order[bounds[gi] : bounds[gi + 1]]
            at = at[labelled[at]]
            row: dict[str, Any] = {
                "model": model,
                "version": version,
                "window_start": pd.Timestamp(start, unit="s", tz="UTC"),
                "n": int(n_of[gi]),
                "labelled": len(at),
            }
            if task.classes is None:
                row.update(regression_metrics(y_all[at], p_all[at]))
            else:
                y, p = y_all[at], p_all[at]
                proba_l = None if proba_all is None else proba_all[at]
                keep = (y >= 0) & (p >= 0)
                if proba_l is not None:
                    keep &= ~np.isnan(proba_l).any(axis=1)
                    proba_l = proba_l[keep]
                row.update(classification_metrics(y[keep], p[keep], proba_l, len(task.classes)))
                for m in ESTIMATED:
                    if m in est and gi < len(est[m]):
                        row[f"{m}_estimated"] = float(est[m][gi])
            rows.append(row)
    return pd.DataFrame(rows)


def frame_single_window(ax: Any, starts: pd.Series, window: float | None) -> None:
    """One window alone would sit in an axis years wide: show it between its neighbours."""
    import pandas as pd
    from matplotlib.dates import AutoDateLocator, ConciseDateFormatter

    if starts.nunique() == 1:
        span = pd.Timedelta(seconds=window or 3600.0)
        ax.set_xlim(starts.iloc[0] - span, starts.iloc[0] + 2 * span)
    locator = AutoDateLocator()
    ax.xaxis.set_major_locator(locator)
    ax.xaxis.set_major_formatter(ConciseDateFormatter(locator))


def plot_performance(
    table: pd.DataFrame, metric: str = "accuracy", window: float | None = None
) -> Figure:
    """``metric`` over time per model version: the estimate (dashed) beside the realized
    value (solid, where labels exist)."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(8, 3.6), layout="constrained")
    ax = fig.subplots()
    if table.empty:
        ax.text(0.5, 0.5, "no predictions in this window", ha="center", va="center")
        return fig
    for (model, version), part in table.groupby(["model", "version"], sort=True):
        name = f"{model} v{version}"
        if metric in part and part[metric].notna().any():
            line = ax.plot(part["window_start"], part[metric], marker="o", label=f"{name} realized")
            color = line[0].get_color()
        else:
            color = None
        est = f"{metric}_estimated"
        if est in part and part[est].notna().any():
            ax.plot(
                part["window_start"], part[est], linestyle="--", marker="x", color=color,
                label=f"{name} estimated",
            )  # fmt: skip
    frame_single_window(ax, table["window_start"], window)
    ax.set_title(f"{metric}: realized and estimated (CBPE)")
    ax.set_xlabel("window start (UTC)")
    ax.set_ylabel(metric)
    ax.grid(alpha=0.3)
    ax.legend(loc="best", fontsize="small")
    return fig
