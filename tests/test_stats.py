"""Tests for daydream.stats against published worked examples and properties."""

from __future__ import annotations

import math
import re

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


# --- Spearman's rho, bootstraps, OLS group means, prediction-powered means ------------------------
from scipy import stats as sp_stats  # noqa: E402

from daydream.stats import (  # noqa: E402
    Estimate,
    alpha_interval_rows,
    dense_codes,
    group_means_at,
    mean_difference,
    ols,
    paired_bootstrap,
    ppi_mean,
    spearman,
    spearman_rows,
)

# Wikipedia, "Spearman's rank correlation coefficient", worked example: IQ against hours of TV
# per week for 10 people; sum d^2 = 194, rho = 1 - 6 * 194 / (10 * 99) = -29/165 = -0.17576.
IQ = [106, 100, 86, 101, 99, 103, 97, 113, 112, 110]
TV = [7, 27, 2, 50, 28, 29, 20, 12, 6, 17]


def test_spearman_matches_the_published_worked_example():
    assert spearman(IQ, TV) == pytest.approx(-29 / 165, abs=1e-12)


def test_spearman_gives_ties_their_mean_rank():
    # ranks x: 1 2 3 4 5; ranks y: 1 2 3.5 5 3.5 -> by hand Pearson of the ranks = 0.82078...
    rx, ry = np.array([1, 2, 3, 4, 5.0]), np.array([1, 2, 3.5, 5, 3.5])
    by_hand = np.sum((rx - 3) * (ry - 3)) / np.sqrt(np.sum((rx - 3) ** 2) * np.sum((ry - 3) ** 2))
    assert spearman([1, 2, 3, 4, 5], [5, 6, 7, 8, 7]) == pytest.approx(by_hand) == pytest.approx(0.8207826816)


def test_spearman_drops_pairs_with_nan_and_refuses_fewer_than_three_or_no_variance():
    assert spearman([1, 2, nan, 3], [2, 4, 5, 7]) == pytest.approx(1.0)
    with pytest.raises(ValueError, match="at least 3 pairs, got 2"):
        spearman([1, 2], [2, 1])
    with pytest.raises(ValueError, match="every y value is the same"):
        spearman([1, 2, 3], [4, 4, 4])


def test_paired_bootstrap_is_deterministic_brackets_the_value_and_matches_scipy_percentile():
    rng = np.random.default_rng(3)
    x = rng.normal(size=60)
    y = x + rng.normal(size=60)
    first = paired_bootstrap(spearman, (x, y))
    assert first == paired_bootstrap(spearman, (x, y)) and first.note == ""
    assert first.low < first.value < first.high
    assert first.value == pytest.approx(sp_stats.spearmanr(x, y).statistic)
    # the mean through the same resampler equals bootstrap_mean_ci's percentile interval closely
    mean = paired_bootstrap(np.mean, (x,), n_resamples=4000)
    reference = bootstrap_mean_ci(x, n_resamples=4000)
    assert mean.low == pytest.approx(reference[1], abs=0.05) and mean.high == pytest.approx(reference[2], abs=0.05)


def test_paired_bootstrap_notes_an_undefined_value_or_interval_instead_of_crashing():
    short = paired_bootstrap(spearman, ([1, 2], [3, 4]))
    assert all(map(math.isnan, short[:3])) and short.note == "Spearman's rho needs at least 3 pairs, got 2"
    constant = paired_bootstrap(spearman, ([1, 2, 3, 4], [5, 5, 5, 5]))
    assert math.isnan(constant.value) and "no variance" in constant.note
    # 3 units: the resamples with one distinct value are undefined, left out and counted
    few = paired_bootstrap(spearman, ([1, 2, 3], [1, 3, 2]))
    assert few.value == pytest.approx(0.5) and few.low < few.high
    assert re.fullmatch(r"\d+ of 2000 bootstrap resamples undefined, left out", few.note)

    def all_distinct_mean(x):
        if np.unique(x).size < x.size:
            raise ValueError("repeated unit")
        return float(x.mean())

    # 4 units: only 24 of 256 resamples hold each unit once, so no interval is given
    mostly_undefined = paired_bootstrap(all_distinct_mean, ([1.0, 2.0, 3.0, 4.0],))
    assert mostly_undefined.value == 2.5 and math.isnan(mostly_undefined.low)
    assert "no interval: the statistic is undefined in" in mostly_undefined.note


def test_mean_difference_by_hand_and_its_degenerate_cases():
    estimate = mean_difference([4, 6, 8], [1, 3])
    assert estimate.value == pytest.approx(4.0) and estimate.low < 4.0 < estimate.high and estimate.note == ""
    assert mean_difference([5, 5, 5], [2, 2]) == Estimate(3.0, 3.0, 3.0)
    assert "fewer than 2" in mean_difference([4, 6], [1]).note
    assert math.isnan(mean_difference([], [1, 2]).value) and "both groups" in mean_difference([], [1, 2]).note


def test_ols_matches_the_hand_computed_simple_regression():
    # y on x = 1..5: slope = Sxy / Sxx = 8 / 10, intercept 0.6, SSE 3.6, sigma^2 = 1.2 on 3 df
    x = np.arange(1, 6, dtype=float)
    coef, se, df = ols([1, 3, 2, 5, 4], np.column_stack([np.ones(5), x]))
    assert coef == pytest.approx([0.6, 0.8]) and df == 3
    assert se[1] == pytest.approx(math.sqrt(1.2 / 10))
    with pytest.raises(ValueError, match="not identified"):
        ols([1, 2, 3], np.column_stack([np.ones(3), np.ones(3)]))
    with pytest.raises(ValueError, match="no residual"):
        ols([1, 2], np.column_stack([np.ones(2), [1, 2]]))


def test_group_means_at_reads_each_group_at_the_chosen_covariate_value():
    # y = 1 + 2 x in group a and 3 + 2 x in group b, exactly: at x = 1 the means are 3 and 5
    x = np.array([0, 1, 2, 3, 0, 1, 2, 3], dtype=float)
    y = np.where(np.arange(8) < 4, 1.0, 3.0) + 2 * x + np.array([0.1, -0.1, -0.1, 0.1] * 2)
    means, slope = group_means_at(y, x, ["a"] * 4 + ["b"] * 4, at=1.0)
    assert slope.value == pytest.approx(2.0) and means["a"].value == pytest.approx(3.0)
    assert means["b"].value == pytest.approx(5.0) and means["a"].low < 3.0 < means["a"].high
    # t interval by hand: residuals +-0.1, SSE = 0.08 on 8 - 3 = 5 df; Sxx within groups = 10
    half = sp_stats.t.ppf(0.975, 5) * math.sqrt(0.08 / 5 / 10)
    assert slope.high - slope.value == pytest.approx(half)
    flat, flat_slope = group_means_at([1, 2, 3], [5, 5, 5], ["a", "a", "b"], at=5.0)
    assert math.isnan(flat_slope.value) and "not identified" in flat["a"].note


def test_ppi_mean_by_hand_and_its_degenerate_cases():
    # predictions 1, 2, 3 (unlabelled) and 2, 4 (labelled, labels 1, 3): 12 / 5 + mean(-1, -1) = 1.4
    estimate = ppi_mean([1, 2, 3], [2, 4], [1, 3])
    assert estimate.value == pytest.approx(1.4) and estimate.low <= 1.4 <= estimate.high
    everything_labelled = ppi_mean([], [2, 4, 6], [1, 2, 3])
    assert everything_labelled.value == pytest.approx(2.0)
    assert "no labelled unit" in ppi_mean([1, 2], [], []).note
    one = ppi_mean([1, 2], [3], [2])
    assert one.value == pytest.approx(1.0) and math.isnan(one.low) and "1 labelled unit" in one.note


def test_the_row_wise_statistics_equal_the_one_sample_ones_and_mark_undefined_rows_nan():
    rng = np.random.default_rng(5)
    x, y = rng.integers(0, 5, size=(50, 7)).astype(float), rng.integers(0, 5, size=(50, 7)).astype(float)
    x[0] = 2.0  # no variance
    by_row = spearman_rows(x, y)
    assert math.isnan(by_row[0])
    assert by_row[1:] == pytest.approx([spearman(a, b) for a, b in zip(x[1:], y[1:], strict=True)])
    alphas = alpha_interval_rows(x, y)
    assert alphas == pytest.approx([krippendorff_alpha_interval(np.vstack([a, b])) for a, b in zip(x, y, strict=True)])
    assert math.isnan(alpha_interval_rows(np.full((1, 4), 3.0), np.full((1, 4), 3.0))[0])
    assert math.isnan(spearman_rows(x[:, :2], y[:, :2])[0])


def test_paired_bootstrap_gives_the_same_interval_row_wise_as_one_resample_at_a_time():
    rng = np.random.default_rng(8)
    x = rng.integers(0, 4, size=25).astype(float)
    y = x + rng.integers(0, 3, size=25)
    assert paired_bootstrap(spearman, (x, y), rows=spearman_rows) == paired_bootstrap(spearman, (x, y))

    def alpha(a, b):
        return krippendorff_alpha_interval(np.vstack([a, b]))

    assert paired_bootstrap(alpha, (x, y), rows=alpha_interval_rows) == paired_bootstrap(alpha, (x, y))
    few = (np.array([1.0, 2, 3]), np.array([1.0, 3, 2]))
    assert paired_bootstrap(spearman, few, rows=spearman_rows) == paired_bootstrap(spearman, few)


def test_dense_codes_keep_spearman_and_rank_resamples_like_scipy():
    rng = np.random.default_rng(9)
    x, y = rng.normal(size=40), rng.integers(0, 6, size=40).astype(float)
    assert spearman(dense_codes(x), dense_codes(y)) == pytest.approx(spearman(x, y))
    assert dense_codes([2.5, 0.1, 2.5, 7.0]).tolist() == [1.0, 0.0, 1.0, 2.0]
    index = rng.integers(0, 40, size=(30, 40))
    by_codes = spearman_rows(dense_codes(x)[index], dense_codes(y)[index])
    assert by_codes == pytest.approx([sp_stats.spearmanr(x[i], y[i]).statistic for i in index])
