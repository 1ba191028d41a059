"""Tests for daydream.stats against published worked examples and properties."""

from __future__ import annotations

import math

import numpy as np
import pytest

from daydream.stats import bootstrap_mean_ci, icc_2_1, krippendorff_alpha_interval

nan = float("nan")

# Krippendorff, K. (2011). "Computing Krippendorff's Alpha-Reliability",
# Annenberg School for Communication, University of Pennsylvania, section C
# ("Nominal data, any number of observers, missing data"): 4 observers (A-D)
# x 12 units, "." = missing. The paper reports alpha = 0.743 (nominal),
# 0.815 (ordinal) and 0.849 (interval) for these data.
KRIPPENDORFF_2011 = np.array(
    [
        [1, 2, 3, 3, 2, 1, 4, 1, 2, nan, nan, nan],  # A
        [1, 2, 3, 3, 2, 2, 4, 1, 2, 5, nan, 3],  # B
        [nan, 3, 3, 3, 2, 3, 4, 2, 2, 5, 1, nan],  # C
        [1, 2, 3, 3, 2, 4, 4, 1, 2, 5, 1, nan],  # D
    ]
)

# Shrout, P. E. & Fleiss, J. L. (1979). Intraclass correlations: uses in
# assessing rater reliability. Psychological Bulletin 86(2), 420-428,
# Table 2: 6 targets x 4 judges. The paper reports ICC(2,1) = .29
# (with ICC(1,1) = .17 and ICC(3,1) = .71 for the other cases).
SHROUT_FLEISS_1979 = np.array(
    [
        [9, 2, 5, 8],
        [6, 1, 3, 2],
        [8, 4, 6, 8],
        [7, 1, 2, 6],
        [10, 5, 6, 9],
        [6, 2, 4, 7],
    ],
    dtype=float,
)


# --- Krippendorff's alpha (interval) -------------------------------------


def test_alpha_interval_krippendorff_2011_example():
    """Krippendorff (2011), 'Computing Krippendorff's Alpha-Reliability':
    interval alpha = 0.849 for the 4-observer x 12-unit example."""
    alpha = krippendorff_alpha_interval(KRIPPENDORFF_2011)
    assert round(alpha, 3) == 0.849


def test_alpha_accepts_nested_lists_with_none_as_nan():
    """Same published example (Krippendorff 2011) passed as plain lists."""
    rows = [
        [None if math.isnan(v) else v for v in row]
        for row in KRIPPENDORFF_2011.tolist()
    ]
    # np.asarray(dtype=float) maps None to NaN.
    assert round(krippendorff_alpha_interval(rows), 3) == 0.849


def test_alpha_ignores_unpairable_units():
    """Unit 12 of the Krippendorff (2011) example has a single value and is
    not pairable; removing it must not change alpha."""
    full = krippendorff_alpha_interval(KRIPPENDORFF_2011)
    without_unit_12 = krippendorff_alpha_interval(KRIPPENDORFF_2011[:, :11])
    assert full == pytest.approx(without_unit_12, abs=1e-12)


def test_alpha_perfect_agreement_is_one():
    ratings = np.array([[1, 2, 3, 4, 5], [1, 2, 3, 4, 5], [1, 2, nan, 4, 5]])
    assert krippendorff_alpha_interval(ratings) == pytest.approx(1.0)


def test_alpha_invariant_to_affine_rescaling():
    """Interval alpha is a ratio of squared differences, so a common affine
    rescaling of all values leaves it unchanged."""
    base = krippendorff_alpha_interval(KRIPPENDORFF_2011)
    assert krippendorff_alpha_interval(3.0 * KRIPPENDORFF_2011 + 7.0) == pytest.approx(
        base
    )


def test_alpha_systematic_disagreement_is_negative():
    ratings = np.array([[1, 5, 1, 5], [5, 1, 5, 1]])
    assert krippendorff_alpha_interval(ratings) < 0.0


def test_alpha_undefined_cases_raise():
    with pytest.raises(ValueError, match="identical"):
        krippendorff_alpha_interval([[3, 3, 3], [3, 3, 3]])
    with pytest.raises(ValueError, match="pairable"):
        krippendorff_alpha_interval([[1, 2, nan], [2, nan, 3]])
    with pytest.raises(ValueError, match="2-D"):
        krippendorff_alpha_interval([1, 2, 3])


# --- ICC(2,1) ---------------------------------------------------------------


def test_icc_2_1_shrout_fleiss_1979_example():
    """Shrout & Fleiss (1979), Table 2 data: ICC(2,1) = .29."""
    icc = icc_2_1(SHROUT_FLEISS_1979)
    assert round(icc, 2) == 0.29


def test_icc_perfect_agreement_is_one():
    ratings = np.tile(np.array([[1.0], [4.0], [2.0], [5.0]]), (1, 3))
    assert icc_2_1(ratings) == pytest.approx(1.0)


def test_icc_constant_shift_lowers_absolute_agreement():
    """ICC(2,1) measures absolute agreement (judge variance is in the
    denominator, Shrout & Fleiss 1979), so a constant offset lowers it."""
    base = np.tile(np.array([[1.0], [4.0], [2.0], [5.0], [3.0]]), (1, 2))
    shifted = base + np.array([0.0, 2.0])
    assert icc_2_1(base) == pytest.approx(1.0)
    assert icc_2_1(shifted) < icc_2_1(base)
    # Judge 2 already rates lowest in Shrout & Fleiss Table 2; pushing it
    # further down widens the between-judge spread.
    wider_offset = SHROUT_FLEISS_1979 - np.array([0.0, 3.0, 0.0, 0.0])
    assert icc_2_1(wider_offset) < icc_2_1(SHROUT_FLEISS_1979)


def test_icc_drops_rows_with_nan():
    with_missing = np.vstack([SHROUT_FLEISS_1979, [nan, 1.0, 2.0, 3.0]])
    assert icc_2_1(with_missing) == pytest.approx(icc_2_1(SHROUT_FLEISS_1979))


def test_icc_too_few_targets_or_raters_raise():
    with pytest.raises(ValueError, match="at least 2"):
        icc_2_1([[1.0, 2.0], [nan, 3.0]])
    with pytest.raises(ValueError, match="at least 2"):
        icc_2_1([[1.0], [2.0], [3.0]])
    with pytest.raises(ValueError, match="identical"):
        icc_2_1([[2.0, 2.0], [2.0, 2.0]])


# --- bootstrap_mean_ci --------------------------------------------------------


def test_bootstrap_ci_brackets_mean():
    values = np.random.default_rng(1).normal(5.0, 2.0, size=50)
    mean, low, high = bootstrap_mean_ci(values)
    assert mean == pytest.approx(values.mean())
    assert low <= mean <= high
    assert low < high


def test_bootstrap_is_deterministic_for_seed():
    values = np.random.default_rng(2).normal(size=30)
    assert bootstrap_mean_ci(values, seed=7) == bootstrap_mean_ci(values, seed=7)
    assert bootstrap_mean_ci(values, seed=7) != bootstrap_mean_ci(values, seed=8)


def test_bootstrap_narrows_with_more_data():
    rng = np.random.default_rng(3)
    _, low_small, high_small = bootstrap_mean_ci(rng.normal(size=20))
    _, low_large, high_large = bootstrap_mean_ci(rng.normal(size=2000))
    assert (high_large - low_large) < (high_small - low_small)


def test_bootstrap_higher_confidence_is_wider():
    values = np.random.default_rng(4).normal(size=40)
    _, lo90, hi90 = bootstrap_mean_ci(values, confidence=0.90)
    _, lo99, hi99 = bootstrap_mean_ci(values, confidence=0.99)
    assert (hi99 - lo99) > (hi90 - lo90)


def test_bootstrap_single_value_gives_nan_bounds():
    mean, low, high = bootstrap_mean_ci([4.0])
    assert mean == 4.0
    assert math.isnan(low) and math.isnan(high)


def test_bootstrap_empty_and_nan_handling():
    assert all(math.isnan(x) for x in bootstrap_mean_ci([]))
    mean, low, high = bootstrap_mean_ci([3.0, nan])
    assert mean == 3.0 and math.isnan(low) and math.isnan(high)


def test_bootstrap_constant_values_give_degenerate_interval():
    assert bootstrap_mean_ci([2.0, 2.0, 2.0]) == (2.0, 2.0, 2.0)


def test_bootstrap_rejects_bad_parameters():
    with pytest.raises(ValueError):
        bootstrap_mean_ci([1.0, 2.0], confidence=1.5)
    with pytest.raises(ValueError):
        bootstrap_mean_ci([[1.0, 2.0]])
