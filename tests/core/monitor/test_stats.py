"""Each drift statistic against scipy or a hand computation on known distributions."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats as ss
from scipy.spatial.distance import jensenshannon

from nbmlops.core.monitor import stats
from nbmlops.core.monitor.stats import SortedColumn


def sorted_pair(a: np.ndarray, b: np.ndarray) -> tuple[SortedColumn, SortedColumn]:
    return SortedColumn.from_values(a), SortedColumn.from_values(b)


@pytest.mark.parametrize(
    ("ref", "cur"),
    [
        (
            np.random.default_rng(0).normal(size=3000),
            np.random.default_rng(1).normal(0.1, 1.2, 2000),
        ),
        # ties inside and across the samples (integers), unequal sizes
        (
            np.random.default_rng(2).integers(0, 30, 1500).astype(float),
            np.random.default_rng(3).integers(5, 40, 900).astype(float),
        ),
        (
            np.random.default_rng(4).exponential(size=50),
            np.random.default_rng(5).exponential(2.0, size=70),
        ),
    ],
)
def test_ks_and_wasserstein_equal_scipy(ref, cur):
    ks, w = stats.ks_wasserstein(*sorted_pair(ref, cur))
    expected = ss.ks_2samp(ref, cur)
    assert ks == pytest.approx(expected.statistic, abs=1e-12)
    assert w == pytest.approx(ss.wasserstein_distance(ref, cur), rel=1e-9)
    assert stats.ks_test(*sorted_pair(ref, cur), ks) == pytest.approx(expected.pvalue, rel=1e-9)


def test_ks_p_value_for_large_samples_matches_scipy_asymptotic():
    rng = np.random.default_rng(6)
    ref, cur = rng.normal(size=60_000), rng.normal(0.012, 1, 40_000)
    ks, _ = stats.ks_wasserstein(*sorted_pair(ref, cur))
    expected = ss.ks_2samp(ref, cur, method="asymp")
    assert ks == pytest.approx(expected.statistic, abs=1e-12)
    # Kolmogorov's limit vs scipy's finite-n distribution: equal to O(1/sqrt(n))
    assert stats.ks_p_value(ks, len(ref), len(cur)) == pytest.approx(expected.pvalue, abs=2e-3)


def test_wasserstein_of_a_shifted_normal_is_the_shift():
    rng = np.random.default_rng(7)
    ref = rng.normal(size=200_000)
    _, w = stats.ks_wasserstein(*sorted_pair(ref, ref + 0.3))
    assert w == pytest.approx(0.3, abs=1e-12)


def test_chi_square_equals_scipy_contingency_and_two_values_is_the_z_test():
    ref = np.array([50.0, 30.0, 20.0])
    cur = np.array([30.0, 30.0, 40.0])
    stat, p = stats.chi_square(ref, cur)
    expected = ss.chi2_contingency(np.vstack([ref, cur]), correction=False)
    assert (stat, p) == pytest.approx((expected.statistic, expected.pvalue))
    # two categories: the two-proportion z-test Evidently uses, by hand
    a, b = np.array([60.0, 40.0]), np.array([45.0, 55.0])
    p1, p2 = a[0] / a.sum(), b[0] / b.sum()
    pooled = (a[0] + b[0]) / (a.sum() + b.sum())
    z = (p1 - p2) / math.sqrt(pooled * (1 - pooled) * (1 / a.sum() + 1 / b.sum()))
    stat, p = stats.chi_square(a, b)
    assert stat == pytest.approx(z**2)
    assert p == pytest.approx(2 * ss.norm.sf(abs(z)))
    assert stats.chi_square(np.array([10.0]), np.array([5.0])) == (0.0, 1.0)


def test_jensen_shannon_by_hand():
    ref, cur = np.array([1.0, 1.0, 0.0]), np.array([0.0, 1.0, 1.0])
    p, q = ref / 2, cur / 2
    m = (p + q) / 2

    def kl(x, y):
        keep = x > 0
        return float(np.sum(x[keep] * np.log(x[keep] / y[keep])))

    # natural logarithms, as Evidently 0.7: each KL to the mixture is ln(2) / 2
    by_hand = math.sqrt((kl(p, m) + kl(q, m)) / 2)
    assert by_hand == pytest.approx(math.sqrt(math.log(2) / 2))
    assert stats.jensen_shannon(ref, cur) == pytest.approx(by_hand)
    assert stats.jensen_shannon(ref, cur) == pytest.approx(jensenshannon(p, q))
    assert stats.jensen_shannon(ref, ref * 7) == pytest.approx(0.0)


def test_psi_by_hand_and_on_deciles():
    r, c = np.array([0.5, 0.5]), np.array([0.25, 0.75])
    assert stats.psi(r, c) == pytest.approx(
        (0.25 - 0.5) * math.log(0.5) + (0.75 - 0.5) * math.log(1.5)
    )
    # an empty bin counts as PSI_EPSILON, so the index stays finite
    assert math.isfinite(stats.psi(np.array([1.0, 0.0]), np.array([0.5, 0.5])))
    rng = np.random.default_rng(8)
    ref = rng.uniform(size=100_000)
    cur = rng.uniform(0.0, 0.5, size=100_000)  # all mass in the lower five deciles
    by_hand = 5 * (0.2 - 0.1) * math.log(0.2 / 0.1) + 5 * (1e-4 - 0.1) * math.log(1e-4 / 0.1)
    assert stats.numeric_psi(*sorted_pair(ref, cur)) == pytest.approx(by_hand, rel=0.02)


def test_benjamini_hochberg_and_bonferroni_by_hand():
    p = np.array([0.01, 0.04, 0.03, 0.20, np.nan])
    # BH on the four p-values: sorted p * m / rank (0.04, 0.06, 0.0533, 0.2), then each is the
    # minimum of those at its rank or above, so 0.03 gets 0.0533 too
    bh = stats.adjust_p_values(p, "bh")
    expected = [0.04, 0.04 * 4 / 3, 0.04 * 4 / 3, 0.2]
    assert bh[:4] == pytest.approx(expected, rel=1e-5)
    assert math.isnan(bh[4])
    assert stats.adjust_p_values(p, "bonferroni")[:4] == pytest.approx([0.04, 0.16, 0.12, 0.8])
    assert stats.adjust_p_values(p, "none")[:4] == pytest.approx(p[:4])


@pytest.mark.parametrize(
    ("kind", "rows", "distinct", "test"),
    [
        ("numeric", 1000, None, "ks"),
        ("numeric", 1000, 5, "chi2"),
        ("numeric", 1000, 2, "chi2"),
        ("categorical", 500, None, "chi2"),
        ("numeric", 1001, None, "wasserstein"),
        ("numeric", 1001, 4, "jensenshannon"),
        ("categorical", 50_000, None, "jensenshannon"),
    ],
)
def test_the_default_test_follows_evidently(kind, rows, distinct, test):
    assert stats.choose_test(kind, rows, distinct) == test


def test_sorted_column_quantiles_and_counts():
    col = SortedColumn.from_values(np.array([3.0, 1.0, 2.0, 2.0, 5.0]))
    assert col.quantiles(np.array([0.0, 0.5, 1.0])) == pytest.approx(
        np.quantile([1, 2, 2, 3, 5], [0.0, 0.5, 1.0])
    )
    assert col.cdf(np.array([2.0, 4.0])) == pytest.approx([0.6, 0.8])
    counts = col.value_counts(5)
    assert counts.to_dict() == {1.0: 1, 2.0: 2, 3.0: 1, 5.0: 1}
    assert col.value_counts(3) is None
    assert isinstance(counts, pd.Series)
