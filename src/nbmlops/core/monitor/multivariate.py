"""Multivariate drift by PCA reconstruction error (the method NannyML calls data
reconstruction drift): a change in how the features move together that no single column shows.

The numeric features are standardised with the reference's mean and std (nulls imputed with
the reference's mean), PCA is fitted on half of the reference, keeping the components that
explain ``variance`` of its variance; each row's error is its distance to its projection.
The other half of the reference gives the error a row has when nothing changed. The current
data drifts when its mean error is higher with p < ``alpha`` (Welch's z on the two means)
and by more than ``min_increase`` (a relative effect size, so that huge samples do not flag
a negligible change).

Written with numpy's SVD rather than scikit-learn's PCA: it is a dozen lines, and the
monitoring needs no scikit-learn.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd

__all__ = ["MultivariateDrift", "pca_drift"]

FIT_ROWS = 200_000  # the fit reads at most this many reference rows


@dataclass
class MultivariateDrift:
    """The PCA reconstruction test's result."""

    features: list[str]
    components: int
    reference_error: float  # mean reconstruction error of held-out reference rows
    current_error: float
    increase: float  # current / reference - 1
    p_value: float
    drifted: bool
    note: str = ""

    def summary(self) -> str:
        verdict = "drift" if self.drifted else "no drift"
        return (
            f"multivariate (PCA reconstruction, {self.components} of {len(self.features)} "
            f"components): error {self.reference_error:.3g} -> {self.current_error:.3g} "
            f"({self.increase:+.0%}), {verdict}"
        )

    def to_dict(self) -> dict[str, Any]:
        def num(v: float) -> float | None:
            return v if math.isfinite(v) else None

        return {
            "method": "pca_reconstruction",
            "features": self.features,
            "components": self.components,
            "reference_error": num(self.reference_error),
            "current_error": num(self.current_error),
            "increase": num(self.increase),
            "p_value": num(self.p_value),
            "drifted": self.drifted,
            "note": self.note,
        }


def pca_drift(
    reference: pd.DataFrame,
    current: pd.DataFrame,
    *,
    variance: float = 0.65,
    alpha: float = 0.05,
    min_increase: float = 0.1,
    seed: int = 0,
) -> MultivariateDrift:
    """PCA reconstruction drift of ``current`` from ``reference`` over their numeric columns.

    ``variance=0.65`` keeps few components (NannyML's default), so a change in the
    correlations moves rows off the kept subspace.
    """
    import numpy as np
    from scipy.stats import norm

    cols = [str(c) for c in reference.columns]
    if len(cols) < 2:
        return MultivariateDrift(
            cols, 0, math.nan, math.nan, math.nan, math.nan, False,
            "needs at least two numeric features",
        )  # fmt: skip
    ref = _matrix(reference, cols)
    cur = _matrix(current, cols)
    mean = np.nanmean(ref, axis=0)
    std = np.nanstd(ref, axis=0)
    std[~(std > 0)] = 1.0
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(ref))
    half = len(ref) // 2
    fit_rows, held_rows = order[:half][:FIT_ROWS], order[half:]
    fit = _standardise(ref[fit_rows], mean, std)
    # principal axes of the fit half: the right singular vectors of the centred data
    _, sv, vt = np.linalg.svd(fit - fit.mean(axis=0), full_matrices=False)
    explained = np.cumsum(sv**2) / max(float(np.sum(sv**2)), 1e-300)
    k = min(int(np.searchsorted(explained, variance)) + 1, len(cols) - 1)
    basis = vt[:k]
    centre = fit.mean(axis=0)
    ref_err = _errors(_standardise(ref[held_rows], mean, std), centre, basis)
    cur_err = _errors(_standardise(cur, mean, std), centre, basis)
    r_mean, c_mean = float(ref_err.mean()), float(cur_err.mean())
    se = math.sqrt(ref_err.var() / len(ref_err) + cur_err.var() / len(cur_err))
    p = float(norm.sf((c_mean - r_mean) / se)) if se > 0 else (0.0 if c_mean > r_mean else 1.0)
    increase = c_mean / r_mean - 1.0 if r_mean > 0 else math.inf
    return MultivariateDrift(
        cols, k, r_mean, c_mean, increase, p, bool(p < alpha and increase > min_increase)
    )


def _matrix(frame: pd.DataFrame, cols: list[str]) -> np.ndarray:
    import numpy as np
    import pandas as pd

    arr = np.array(frame[cols].apply(pd.to_numeric, errors="coerce"), dtype="float64")
    arr[~np.isfinite(arr)] = np.nan
    return arr


def _standardise(x: np.ndarray, mean: np.ndarray, std: np.ndarray) -> np.ndarray:
    import numpy as np

    z = (x - mean) / std
    z[np.isnan(z)] = 0.0  # a null sits at the reference's mean
    return z


def _errors(z: np.ndarray, centre: np.ndarray, basis: np.ndarray) -> np.ndarray:
    import numpy as np

    d = z - centre
    recon = (d @ basis.T) @ basis
    return np.sqrt(np.sum((d - recon) ** 2, axis=1))
