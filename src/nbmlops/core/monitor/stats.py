"""Per-feature drift statistics on whole columns: KS and Wasserstein for numeric columns,
chi-square and Jensen-Shannon for categorical ones, PSI for both, the default test chosen by
type and sample size, and the multiple-testing correction.

A column reaches these functions as a *summary*: :class:`SortedColumn` (the exact finite
values, sorted once) or anything with the same small interface (``n``, ``cdf``,
``quantiles``, ``std``, ``value_counts``), such as a quantile sketch from a profile
(:mod:`nbmlops.core.monitor.profile`). Categorical columns arrive as value counts.

The default test follows Evidently's rule (``get_stattest`` in its stattests registry):

========================  ==========================  ===================================
reference rows            numeric, > 5 distinct       categorical, or numeric <= 5 values
========================  ==========================  ===================================
<= 1000                   KS (p < 0.05)               chi-square (p < 0.05)
> 1000                    Wasserstein / std >= 0.1    Jensen-Shannon distance >= 0.1
========================  ==========================  ===================================

Evidently uses a z-test of proportions for two values; the chi-square test without continuity
correction used here is the same test (its statistic is z squared, its p-value the same).
Evidently's chi-square treats the reference shares as exact (goodness of fit); here both sides
are samples (a 2 x k contingency table), the right test when the reference is a sample too.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, Protocol

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd

__all__ = [
    "DEFAULT_THRESHOLDS",
    "FEW_VALUES",
    "SMALL_SAMPLE",
    "TESTS",
    "NumericSummary",
    "SortedColumn",
    "adjust_p_values",
    "chi_square",
    "choose_test",
    "jensen_shannon",
    "ks_p_value",
    "ks_wasserstein",
    "numeric_psi",
    "psi",
    "share_vectors",
]

TestName = Literal["ks", "wasserstein", "chi2", "jensenshannon", "psi"]
TESTS: tuple[str, ...] = ("ks", "wasserstein", "chi2", "jensenshannon", "psi")
# Evidently's defaults: p-value tests drift below the threshold, distances at or above it.
DEFAULT_THRESHOLDS: dict[str, float] = {
    "ks": 0.05,
    "chi2": 0.05,
    "wasserstein": 0.1,
    "jensenshannon": 0.1,
    "psi": 0.1,
}
P_VALUE_TESTS = frozenset({"ks", "chi2"})
SMALL_SAMPLE = 1000  # reference rows up to which hypothesis tests are used
FEW_VALUES = 5  # a numeric column with this few distinct values is compared as categories
PSI_BINS = 10
PSI_EPSILON = 1e-4  # a share below this counts as this, so an empty bin stays finite
# Points of the quantile grid that sketch-based KS and Wasserstein are evaluated on.
SKETCH_GRID = 1001
# scipy's ks_2samp computes exact p-values up to this many rows per side (its MAX_AUTO_N).
KS_EXACT_MAX = 10_000


class NumericSummary(Protocol):
    """What the numeric statistics need of a column: counts, its CDF and quantile function."""

    @property
    def n(self) -> int: ...  # finite values

    def cdf(self, points: np.ndarray) -> np.ndarray: ...
    def quantiles(self, ranks: np.ndarray) -> np.ndarray: ...
    def std(self) -> float: ...
    def value_counts(self, limit: int) -> pd.Series | None: ...


@dataclass
class SortedColumn:
    """The finite values of a numeric column, sorted once; every statistic reads this."""

    values: np.ndarray

    @classmethod
    def from_values(cls, values: np.ndarray, *, owned: bool = False) -> SortedColumn:
        """Sorted ``values``; ``owned=True`` sorts the given array in place (no copy)."""
        import numpy as np

        arr = np.asarray(values, dtype="float64")
        if not owned:
            return cls(np.sort(arr))
        arr.sort()
        return cls(arr)

    @property
    def n(self) -> int:
        return int(self.values.shape[0])

    def cdf(self, points: np.ndarray) -> np.ndarray:
        import numpy as np

        return np.searchsorted(self.values, points, side="right") / max(self.n, 1)

    def quantiles(self, ranks: np.ndarray) -> np.ndarray:
        import numpy as np

        # the sample is already sorted, so a quantile is an index (numpy's "linear" rule)
        pos = np.asarray(ranks, dtype="float64") * (self.n - 1)
        lo = np.floor(pos).astype(np.int64)
        hi = np.minimum(lo + 1, self.n - 1)
        frac = pos - lo
        return self.values[lo] * (1.0 - frac) + self.values[hi] * frac

    def std(self) -> float:
        return float(self.values.std()) if self.n else math.nan

    def value_counts(self, limit: int) -> pd.Series | None:
        """Counts per distinct value when there are at most ``limit``; None otherwise."""
        import numpy as np
        import pandas as pd

        if self.n == 0:
            return pd.Series(dtype="int64")
        starts = np.flatnonzero(np.r_[True, self.values[1:] != self.values[:-1]])
        if len(starts) > limit:
            return None
        counts = np.diff(np.r_[starts, self.n])
        return pd.Series(counts, index=self.values[starts])


def choose_test(kind: str, reference_rows: int, distinct: int | None) -> TestName:
    """The default test for a column (see the table in the module's docstring).

    ``distinct`` is the number of distinct values in reference and current together (None:
    more than :data:`FEW_VALUES`).
    """
    few = kind == "categorical" or (distinct is not None and distinct <= FEW_VALUES)
    if reference_rows <= SMALL_SAMPLE:
        return "chi2" if few else "ks"
    return "jensenshannon" if few else "wasserstein"


def ks_wasserstein(ref: NumericSummary, cur: NumericSummary) -> tuple[float, float]:
    """(KS statistic, Wasserstein-1 distance) of two numeric summaries.

    Exact for two :class:`SortedColumn`: the current values are placed among the reference's
    with one ``searchsorted`` (no second sort), and both statistics come from the two running
    CDFs over the merged order. Sketches are compared on a grid of their quantiles.
    """
    if isinstance(ref, SortedColumn) and isinstance(cur, SortedColumn):
        return _exact_ks_wasserstein(ref.values, cur.values)
    return _grid_ks_wasserstein(ref, cur)


def _exact_ks_wasserstein(r: np.ndarray, c: np.ndarray) -> tuple[float, float]:
    import numpy as np

    n, m = len(r), len(c)
    # Position of each current value in the merged order: after every reference value <= it
    # (ties: reference first), so the merged array is built without sorting it again.
    pos = np.searchsorted(r, c, side="right")
    pos += np.arange(m)
    is_ref = np.ones(n + m, dtype=bool)
    is_ref[pos] = False
    merged = np.empty(n + m, dtype="float64")
    merged[pos] = c
    merged[is_ref] = r
    # Fr - Fc after k merged values = refs_seen * (1/n + 1/m) - k/m, in place
    diff = np.cumsum(is_ref, dtype="float64")
    diff *= 1.0 / n + 1.0 / m
    diff -= np.arange(1, n + m + 1, dtype="float64") / m
    np.abs(diff, out=diff)
    # The CDFs are compared after the last of equal values; between values they are flat.
    last = np.empty(n + m, dtype=bool)
    np.not_equal(merged[1:], merged[:-1], out=last[:-1])
    last[-1] = True
    ks = float(np.max(diff, where=last, initial=0.0))
    wasserstein = float(np.dot(diff[:-1], np.diff(merged)))
    return ks, wasserstein


def _grid_ks_wasserstein(ref: NumericSummary, cur: NumericSummary) -> tuple[float, float]:
    import numpy as np

    ranks = np.linspace(0.0, 1.0, SKETCH_GRID)
    qr, qc = ref.quantiles(ranks), cur.quantiles(ranks)
    points = np.unique(np.r_[qr, qc])
    ks = float(np.max(np.abs(ref.cdf(points) - cur.cdf(points))))
    # W1 is the area between the quantile functions: integrate |Qr - Qc| over the ranks.
    gap = np.abs(qr - qc)
    wasserstein = float(np.sum((gap[1:] + gap[:-1]) / 2.0) / (SKETCH_GRID - 1))
    return ks, wasserstein


def ks_p_value(d: float, n: int, m: int) -> float:
    """Two-sided p-value of a two-sample KS statistic for large samples.

    scipy's ``ks_2samp`` (asymptotic method) evaluates the one-sample KS distribution
    ``kstwo`` at n*m/(n+m); that costs ~0.1 s a call at a million rows, so above
    :data:`KS_EXACT_MAX` effective rows its limit, Kolmogorov's distribution
    (``kstwobign`` at d*sqrt(en)), is used: the two differ by O(1/sqrt(en)).
    """
    import numpy as np
    from scipy.stats import kstwo, kstwobign

    if n == 0 or m == 0:
        return math.nan
    en = n * m / (n + m)
    if en > KS_EXACT_MAX:
        return float(np.clip(kstwobign.sf(d * math.sqrt(en)), 0.0, 1.0))
    return float(np.clip(kstwo.sf(d, np.round(en)), 0.0, 1.0))


def ks_test(ref: NumericSummary, cur: NumericSummary, d: float) -> float:
    """p-value of the KS statistic ``d``: scipy's exact one for small exact samples."""
    if (
        isinstance(ref, SortedColumn)
        and isinstance(cur, SortedColumn)
        and max(ref.n, cur.n) <= KS_EXACT_MAX
    ):
        from scipy.stats import ks_2samp

        return float(ks_2samp(ref.values, cur.values).pvalue)
    return ks_p_value(d, ref.n, cur.n)


def psi(ref_share: np.ndarray, cur_share: np.ndarray) -> float:
    """Population stability index of two share vectors over the same bins."""
    import numpy as np

    r = np.clip(np.asarray(ref_share, dtype="float64"), PSI_EPSILON, None)
    c = np.clip(np.asarray(cur_share, dtype="float64"), PSI_EPSILON, None)
    return float(np.sum((c - r) * np.log(c / r)))


def numeric_psi(ref: NumericSummary, cur: NumericSummary, bins: int = PSI_BINS) -> float:
    """PSI over the reference's decile bins (``bins`` equal-frequency bins of the reference)."""
    import numpy as np

    edges = np.unique(ref.quantiles(np.linspace(0.0, 1.0, bins + 1)[1:-1]))

    def shares(s: NumericSummary) -> np.ndarray:
        return np.diff(np.r_[0.0, s.cdf(edges), 1.0])

    return psi(shares(ref), shares(cur))


def share_vectors(ref: pd.Series, cur: pd.Series) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Counts of both sides over the union of their categories, as (ref, cur, categories)."""
    import numpy as np
    import pandas as pd

    table = pd.concat([ref.rename("ref"), cur.rename("cur")], axis=1).fillna(0)
    counts = table.to_numpy(dtype="float64")
    return counts[:, 0], counts[:, 1], np.asarray(table.index, dtype=object)


def chi_square(ref_counts: np.ndarray, cur_counts: np.ndarray) -> tuple[float, float]:
    """Chi-square test of homogeneity on the 2 x k table of counts: (statistic, p-value).

    No continuity correction, so with two categories it is the two-proportion z-test.
    """
    import numpy as np
    from scipy.stats import chi2_contingency

    table = np.vstack([ref_counts, cur_counts])
    table = table[:, table.sum(axis=0) > 0]
    if table.shape[1] < 2:  # one category on both sides: nothing can have moved
        return 0.0, 1.0
    res = chi2_contingency(table, correction=False)
    return float(res.statistic), float(res.pvalue)


def jensen_shannon(ref_counts: np.ndarray, cur_counts: np.ndarray) -> float:
    """Jensen-Shannon distance between two count vectors, with natural logarithms (so in
    [0, sqrt(ln 2)]), as Evidently 0.7 computes it: its 0.1 threshold means the same here."""
    from scipy.spatial.distance import jensenshannon

    if ref_counts.sum() == 0 or cur_counts.sum() == 0:
        return math.nan
    return float(jensenshannon(ref_counts, cur_counts))


def adjust_p_values(p_values: np.ndarray, method: str) -> np.ndarray:
    """p-values corrected for testing several features: ``"bh"`` (Benjamini-Hochberg, false
    discovery rate), ``"bonferroni"`` (family-wise error) or ``"none"``. NaNs stay NaN."""
    import numpy as np
    from scipy.stats import false_discovery_control

    p = np.asarray(p_values, dtype="float64")
    out = p.copy()
    ok = np.isfinite(p)
    if method == "none" or not ok.any():
        return out
    if method == "bonferroni":
        out[ok] = np.minimum(p[ok] * ok.sum(), 1.0)
    elif method == "bh":
        out[ok] = false_discovery_control(p[ok], method="bh")
    else:
        from nbmlops.exceptions import UsageError

        raise UsageError(
            f"unknown correction {method!r}", fix="pass correction='bh', 'bonferroni' or 'none'"
        )
    return out


def is_drifted(test: str, value: float, threshold: float) -> bool:
    """The verdict of one test: p below the threshold, or a distance at or above it."""
    if not math.isfinite(value):
        return False
    return value < threshold if test in P_VALUE_TESTS else value >= threshold


def describe(test: str) -> Any:
    """A short human name for a test."""
    return {
        "ks": "Kolmogorov-Smirnov p-value",
        "wasserstein": "Wasserstein distance / reference std",
        "chi2": "chi-square p-value",
        "jensenshannon": "Jensen-Shannon distance",
        "psi": "population stability index",
    }[test]
