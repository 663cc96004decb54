"""Drift of a frame's columns from a reference: a KS or chi-square test and the population
stability index per column."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from nbmlops.core.data.column_kinds import column_kind, float_values, is_numeric

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd

__all__ = ["PSI_BINS", "PSI_EPSILON", "ColumnDrift", "measure_drift"]

# Proportions below this count as this in PSI, so an empty bin or unseen category stays finite.
PSI_EPSILON = 1e-4
PSI_BINS = 10


@dataclass
class ColumnDrift:
    """How far one column of the current frame moved from the reference.

    ``test`` is ``"ks"`` (two-sample Kolmogorov-Smirnov) for numeric columns and ``"chi2"``
    (chi-square on the category counts) for categorical ones; ``psi`` is the population
    stability index; ``drifted`` follows the rule in :func:`validate_frame`.
    """

    column: str
    kind: Literal["numeric", "categorical"]
    test: Literal["ks", "chi2"]
    statistic: float
    p_value: float
    psi: float
    drifted: bool


def measure_drift(
    df: pd.DataFrame,
    reference: pd.DataFrame,
    *,
    p_threshold: float,
    psi_threshold: float,
    categorical_max: int,
) -> list[ColumnDrift]:
    """One :class:`ColumnDrift` per column ``df`` shares with ``reference`` that can be compared
    (the rule and the tests are described in :func:`~nbmlops.core.data.validate.validate_frame`)."""
    drift: list[ColumnDrift] = []
    for col in reference.columns:
        if col not in df.columns:
            continue
        kind = column_kind(reference[col], categorical_max)
        result = None
        if kind == "numeric" and is_numeric(df[col]):
            result = _numeric_drift(reference[col], df[col])
        elif kind == "categorical":
            result = _categorical_drift(reference[col], df[col])
        if kind is None or result is None:
            continue
        stat, p, psi = result
        drifted = (
            p < p_threshold and (psi >= psi_threshold or kind == "categorical")
        ) or psi >= psi_threshold
        drift.append(
            ColumnDrift(
                column=str(col),
                kind=kind,
                test="ks" if kind == "numeric" else "chi2",
                statistic=stat,
                p_value=p,
                psi=psi,
                drifted=bool(drifted),
            )
        )
    return drift


def _psi(ref_p: np.ndarray, cur_p: np.ndarray) -> float:
    import numpy as np

    r = np.clip(ref_p, PSI_EPSILON, None)
    c = np.clip(cur_p, PSI_EPSILON, None)
    return float(np.sum((c - r) * np.log(c / r)))


def _numeric_drift(ref: pd.Series, cur: pd.Series) -> tuple[float, float, float] | None:
    import numpy as np
    from scipy.stats import ks_2samp

    r, c = float_values(ref), float_values(cur)
    if len(r) == 0 or len(c) == 0:
        return None
    ks = ks_2samp(r, c)
    edges = np.unique(np.quantile(r, np.linspace(0.0, 1.0, PSI_BINS + 1)[1:-1]))
    nbins = len(edges) + 1
    r_counts = np.bincount(np.searchsorted(edges, r, side="right"), minlength=nbins)
    c_counts = np.bincount(np.searchsorted(edges, c, side="right"), minlength=nbins)
    psi = _psi(r_counts / len(r), c_counts / len(c))
    return float(ks.statistic), float(ks.pvalue), psi


def _categorical_drift(ref: pd.Series, cur: pd.Series) -> tuple[float, float, float] | None:
    import numpy as np
    import pandas as pd
    from scipy.stats import chi2_contingency

    r = ref.dropna().astype(object).value_counts()
    c = cur.dropna().astype(object).value_counts()
    if r.sum() == 0 or c.sum() == 0:
        return None
    # The union of categories; one seen on a single side gets a zero count on the other.
    table = pd.concat([r.rename("ref"), c.rename("cur")], axis=1).fillna(0)
    table = table[(table["ref"] + table["cur"]) > 0]
    counts = table.to_numpy(dtype="float64").T  # 2 x k
    if counts.shape[1] < 2:  # a single category on both sides: nothing can have moved
        stat, p = 0.0, 1.0
    else:
        res = chi2_contingency(counts)
        stat, p = float(res.statistic), float(res.pvalue)
    psi = _psi(counts[0] / counts[0].sum(), counts[1] / counts[1].sum())
    return stat, p, float(np.round(psi, 12))
