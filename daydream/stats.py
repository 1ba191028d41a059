"""Inter-rater agreement and uncertainty statistics for daydream.

Implemented on numpy/scipy:

* :func:`krippendorff_alpha_interval` -- Krippendorff's alpha, interval metric
  (Krippendorff 2011, "Computing Krippendorff's Alpha-Reliability").
* :func:`icc_2_1` -- intraclass correlation ICC(2,1): two-way random effects,
  absolute agreement, single rater (Shrout & Fleiss 1979, Psychological
  Bulletin 86(2), 420-428).
* :func:`bootstrap_mean_ci` -- mean with a percentile bootstrap confidence
  interval computed by :func:`scipy.stats.bootstrap`.

For the judge-reliability reports (`daydream.reports.judges`), each returning an
:class:`Estimate` (value, interval, and a note saying why a part is not computable):

* :func:`spearman` -- Spearman's rank correlation (average ranks for ties).
* :func:`paired_bootstrap` -- any statistic of paired samples with a percentile
  bootstrap interval over the units.
* :func:`mean_difference` -- difference of two independent means, bootstrapped per group.
* :func:`group_means_at` -- OLS of a value on group intercepts and one covariate,
  each group's mean read at a chosen covariate value, with t intervals.
* :func:`ppi_mean` -- prediction-powered estimate of a mean (Angelopoulos et al. 2023).

Missing values are encoded as NaN throughout.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import numpy as np
from numpy.typing import ArrayLike

__all__ = [
    "Estimate", "bootstrap_mean_ci", "group_means_at", "icc_2_1", "krippendorff_alpha_interval",
    "alpha_interval_rows", "dense_codes", "mean_difference", "paired_bootstrap", "ppi_mean", "spearman", "spearman_rows",
]


def _scipy_stats():
    """scipy.stats, imported on first use: the Snakefile imports the package (through the site
    and report modules) on every run, dry runs and no-op reruns included, and scipy.stats alone
    took longer to import than the rest of daydream."""
    from scipy import stats

    return stats


def _as_float_matrix(ratings: ArrayLike, name: str) -> np.ndarray:
    """Return ``ratings`` as a 2-D float array; NaN allowed, +/-inf rejected."""
    try:
        arr = np.asarray(ratings, dtype=float)
    except (TypeError, ValueError) as exc:
        raise ValueError(
            f"{name} must be numeric (use NaN for missing): {exc}"
        ) from exc
    if arr.ndim != 2:
        raise ValueError(f"{name} must be 2-D, got an array with shape {arr.shape}")
    if np.isinf(arr).any():
        raise ValueError(f"{name} must not contain infinite values")
    return arr


def krippendorff_alpha_interval(ratings: ArrayLike) -> float:
    """Krippendorff's alpha for interval data.

    Parameters
    ----------
    ratings:
        2-D array-like of shape ``(coders, units)``; ``NaN`` marks a missing
        value. Units with fewer than two values are not pairable and are
        dropped, as in the reference definition.

    Returns
    -------
    float
        ``alpha = 1 - D_o / D_e`` with the interval metric
        ``delta(c, k) = (c - k) ** 2`` (Krippendorff, K. (2011). *Computing
        Krippendorff's Alpha-Reliability*. Annenberg School for Communication,
        University of Pennsylvania). 1.0 is perfect agreement, 0.0 is agreement
        at chance level, and negative values are systematic disagreement.

    Raises
    ------
    ValueError
        If the input is not 2-D numeric, contains infinities, has fewer than
        two pairable units (units with >= 2 values) -- with a single unit
        alpha is identically 0 and carries no information -- or if all
        pairable values are identical (expected disagreement ``D_e == 0``,
        alpha is 0/0 and undefined).

    Notes
    -----
    Equivalent to the coincidence-matrix computation, but written with
    pairwise squared differences. With ``n`` pairable values in total,
    ``m_u`` values in unit ``u`` and the identity
    ``sum_{i != j} (x_i - x_j)**2 = 2 * m * sum_i (x_i - mean)**2``::

        D_o = 1/n * sum_u 1/(m_u - 1) * sum_{i != j in u} (x_i - x_j)**2
        D_e = 1/(n (n - 1)) * sum_{i != j over all pairable values} (x_i - x_j)**2
    """
    data = _as_float_matrix(ratings, "ratings")
    present = ~np.isnan(data)
    m_u = present.sum(axis=0)  # values per unit
    pairable = m_u >= 2
    if int(pairable.sum()) < 2:
        raise ValueError(
            "Krippendorff's alpha is undefined: need at least 2 pairable units "
            f"(units with >= 2 values), found {int(pairable.sum())}"
        )
    data = data[:, pairable]
    m_u = m_u[pairable].astype(float)
    n = m_u.sum()

    # Within-unit sums of squared deviations from the unit mean.
    unit_means = np.nanmean(data, axis=0)
    ss_within = np.nansum((data - unit_means) ** 2, axis=0)
    # sum_{i != j} (x_i - x_j)^2 within unit = 2 m_u SS_u; divide by (m_u - 1).
    d_observed = np.sum(2.0 * m_u * ss_within / (m_u - 1.0)) / n

    values = data[~np.isnan(data)]
    ss_total = np.sum((values - values.mean()) ** 2)
    d_expected = 2.0 * n * ss_total / (n * (n - 1.0))
    if d_expected <= 0.0:
        raise ValueError(
            "Krippendorff's alpha is undefined: all pairable values are identical "
            "(zero expected disagreement)"
        )
    return float(1.0 - d_observed / d_expected)


def icc_2_1(ratings: ArrayLike) -> float:
    """ICC(2,1): two-way random effects, absolute agreement, single rater.

    Parameters
    ----------
    ratings:
        2-D array-like of shape ``(targets, raters)``. Any row (target)
        containing ``NaN`` is dropped, leaving a complete matrix.

    Returns
    -------
    float
        Shrout & Fleiss (1979), Case 2, single rater::

            ICC(2,1) = (BMS - EMS) / (BMS + (k - 1) EMS + k (JMS - EMS) / n)

        with ``n`` targets, ``k`` raters, ``BMS`` the between-targets mean
        square, ``JMS`` the between-judges mean square and ``EMS`` the residual
        mean square of the two-way ANOVA (Shrout, P. E. & Fleiss, J. L. (1979).
        Intraclass correlations: uses in assessing rater reliability.
        *Psychological Bulletin*, 86(2), 420-428). Equals McGraw & Wong's
        (1996) ICC(A,1). Because judge variance enters the denominator,
        systematic offsets between raters lower the value.

    Raises
    ------
    ValueError
        If the input is not 2-D numeric, contains infinities, fewer than 2
        complete targets or fewer than 2 raters remain, or every remaining
        rating is identical (the ratio is 0/0 and undefined).
    """
    data = _as_float_matrix(ratings, "ratings")
    data = data[~np.isnan(data).any(axis=1)]
    n, k = data.shape
    if n < 2 or k < 2:
        raise ValueError(
            "ICC(2,1) needs at least 2 complete targets (rows) and 2 raters "
            f"(columns); got {n} complete target(s) and {k} rater(s)"
        )
    grand = data.mean()
    row_means = data.mean(axis=1)
    col_means = data.mean(axis=0)
    ss_rows = k * np.sum((row_means - grand) ** 2)
    ss_cols = n * np.sum((col_means - grand) ** 2)
    ss_total = np.sum((data - grand) ** 2)
    ss_error = ss_total - ss_rows - ss_cols

    bms = ss_rows / (n - 1)
    jms = ss_cols / (k - 1)
    ems = max(ss_error, 0.0) / ((n - 1) * (k - 1))  # clip float round-off

    denominator = bms + (k - 1) * ems + k * (jms - ems) / n
    if denominator <= 0.0:
        raise ValueError(
            "ICC(2,1) is undefined: all ratings are identical (zero variance)"
        )
    return float((bms - ems) / denominator)


def bootstrap_mean_ci(
    values: ArrayLike,
    *,
    confidence: float = 0.95,
    n_resamples: int = 2000,
    seed: int = 0,
) -> tuple[float, float, float]:
    """Mean and percentile-bootstrap confidence interval.

    Parameters
    ----------
    values:
        1-D array-like of numbers; ``NaN`` entries are treated as missing and
        dropped.
    confidence:
        Two-sided confidence level in (0, 1).
    n_resamples:
        Number of bootstrap resamples (positive).
    seed:
        Seed for :func:`numpy.random.default_rng`; identical inputs and seed
        give identical output.

    Returns
    -------
    tuple[float, float, float]
        ``(mean, low, high)``. The interval is the *percentile* bootstrap of
        :func:`scipy.stats.bootstrap` (``method="percentile"``; Efron &
        Tibshirani 1993, ch. 13). Percentile is chosen over BCa because it
        stays defined for degenerate samples (e.g. all judges giving the same
        score, where BCa yields NaN), which is common for discrete scores.
        With fewer than 2 (non-NaN) values no interval can be formed and
        ``(mean, nan, nan)`` is returned (``mean`` is itself NaN for an empty
        input).

    Raises
    ------
    ValueError
        If ``values`` is not 1-D numeric, contains infinities, or the
        parameters are out of range.
    """
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence!r}")
    if int(n_resamples) < 1:
        raise ValueError(f"n_resamples must be positive, got {n_resamples!r}")
    try:
        arr = np.asarray(values, dtype=float)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"values must be numeric: {exc}") from exc
    if arr.ndim != 1:
        raise ValueError(f"values must be 1-D, got an array with shape {arr.shape}")
    if np.isinf(arr).any():
        raise ValueError("values must not contain infinite values")
    arr = arr[~np.isnan(arr)]

    if arr.size == 0:
        return (float("nan"), float("nan"), float("nan"))
    mean = float(arr.mean())
    if arr.size < 2:
        return (mean, float("nan"), float("nan"))

    result = _scipy_stats().bootstrap(
        (arr,),
        np.mean,
        n_resamples=int(n_resamples),
        vectorized=True,
        axis=-1,
        confidence_level=confidence,
        method="percentile",
        rng=np.random.default_rng(seed),
    )
    low = float(result.confidence_interval.low)
    high = float(result.confidence_interval.high)
    return (mean, low, high)


# -- estimates with intervals for the judge-reliability reports ------------------------------------
NAN = float("nan")
# A bootstrap interval is given only when at least this share of resamples has a defined
# statistic (a resample of few units may hold no variance).
MIN_DEFINED_SHARE = 0.5


class Estimate(NamedTuple):
    """A point estimate and its interval. `note` is "" when all three are computed, else it says
    why the value or the interval is not computable (they are then NaN)."""

    value: float
    low: float
    high: float
    note: str = ""

    @classmethod
    def undefined(cls, note: str) -> Estimate:
        return cls(NAN, NAN, NAN, note)


def _vector(values: ArrayLike, name: str) -> np.ndarray:
    arr = np.asarray(values, dtype=float)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be 1-D, got an array with shape {arr.shape}")
    if np.isinf(arr).any():
        raise ValueError(f"{name} must not contain infinite values")
    return arr


def spearman(x: ArrayLike, y: ArrayLike) -> float:
    """Spearman's rank correlation: the Pearson correlation of the ranks, ties sharing their mean
    rank (Spearman 1904). Pairs with a NaN are dropped.

    Raises ValueError with fewer than 3 pairs, or when x or y has no variance (rho is 0/0)."""
    x, y = _vector(x, "x"), _vector(y, "y")
    if x.shape != y.shape:
        raise ValueError(f"x and y must pair up, got {x.size} and {y.size} values")
    both = ~(np.isnan(x) | np.isnan(y))
    x, y = x[both], y[both]
    if x.size < 3:
        raise ValueError(f"Spearman's rho needs at least 3 pairs, got {x.size}")
    rx, ry = _scipy_stats().rankdata(x), _scipy_stats().rankdata(y)
    rx, ry = rx - rx.mean(), ry - ry.mean()
    denominator = np.sqrt(np.sum(rx**2) * np.sum(ry**2))
    if denominator == 0.0:
        side = "x" if np.sum(rx**2) == 0.0 else "y"
        raise ValueError(f"Spearman's rho is undefined: every {side} value is the same (no variance)")
    return float(np.sum(rx * ry) / denominator)


def _percentile_interval(draws: np.ndarray, confidence: float) -> tuple[float, float]:
    tail = (1.0 - confidence) / 2.0 * 100.0
    low, high = np.percentile(draws, [tail, 100.0 - tail])
    return float(low), float(high)


def dense_codes(values: ArrayLike) -> np.ndarray:
    """Each value's position among the distinct values (0, 1, ...; ties share one): an
    order-preserving recoding, so Spearman's rho of the codes is that of the values, and
    :func:`spearman_rows` ranks resamples of codes without sorting."""
    return _scipy_stats().rankdata(_vector(values, "values"), method="dense") - 1.0


def _average_ranks_rows(values: np.ndarray) -> np.ndarray:
    """Average ranks (ties share their mean rank) within each row of a 2-D array. Rows of
    small non-negative integer codes (`dense_codes`) are ranked by counting, without a sort."""
    rows, n = values.shape
    if values.min() >= 0 and values.max() < 4 * n + 16 and np.array_equal(values, np.floor(values)):
        codes, k = values.astype(np.int64), int(values.max()) + 1
    else:
        distinct, codes = np.unique(values, return_inverse=True)
        codes, k = codes.reshape(rows, n), distinct.size
    counts = np.bincount((codes + (np.arange(rows) * k)[:, None]).ravel(), minlength=rows * k).reshape(rows, k)
    ranks = np.cumsum(counts, axis=1) - counts + (counts + 1) / 2.0
    return np.take_along_axis(ranks, codes, axis=1)


def spearman_rows(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """:func:`spearman` of each row pair of two equal-shape 2-D arrays (no NaN), NaN where a row
    has no variance; rows of fewer than 3 values are all NaN. The vectorised form for
    :func:`paired_bootstrap` (pass `dense_codes` of the samples: same rho, ranked by counting)."""
    if x.shape[-1] < 3:
        return np.full(x.shape[:-1], NAN)
    rx = _average_ranks_rows(np.asarray(x, dtype=float))
    ry = _average_ranks_rows(np.asarray(y, dtype=float))
    rx -= rx.mean(axis=-1, keepdims=True)
    ry -= ry.mean(axis=-1, keepdims=True)
    denominator = np.sqrt(np.sum(rx**2, axis=-1) * np.sum(ry**2, axis=-1))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(denominator > 0, np.sum(rx * ry, axis=-1) / denominator, NAN)


def alpha_interval_rows(*coders: np.ndarray) -> np.ndarray:
    """:func:`krippendorff_alpha_interval` of complete data (every coder rated every unit) for
    each row: `coders` are equal-shape 2-D arrays (resamples x units), NaN where every value of a
    row is the same or a row has fewer than 2 units. The vectorised form for :func:`paired_bootstrap`."""
    data = np.stack(coders, axis=-2)  # rows x coders x units
    k, units = data.shape[-2], data.shape[-1]
    if units < 2:
        return np.full(data.shape[:-2], NAN)
    n = k * units
    ss_within = np.sum((data - data.mean(axis=-2, keepdims=True)) ** 2, axis=(-2, -1))
    d_observed = 2.0 * k * ss_within / (k - 1.0) / n
    flat = data.reshape(*data.shape[:-2], n)
    ss_total = np.sum((flat - flat.mean(axis=-1, keepdims=True)) ** 2, axis=-1)
    d_expected = 2.0 * ss_total / (n - 1.0)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(d_expected > 0, 1.0 - d_observed / d_expected, NAN)


BOOTSTRAP_CHUNK = 250  # resamples drawn and evaluated at once (bounds memory on large samples)


def paired_bootstrap(
    statistic: Callable[..., float],
    samples: tuple[ArrayLike, ...],
    *,
    rows: Callable[..., np.ndarray] | None = None,
    confidence: float = 0.95,
    n_resamples: int = 2000,
    seed: int = 0,
) -> Estimate:
    """`statistic(*samples)` and its percentile bootstrap interval, resampling the units (the
    positions shared by every sample) with replacement.

    `statistic` raises ValueError when it is undefined: on the full samples that is the note of an
    undefined Estimate; on a resample, that resample is left out, and the interval is given only
    when at least MIN_DEFINED_SHARE of the resamples are defined (the note says how many were not).
    `rows`, when given, is the same statistic computed for many resamples at once (2-D arrays,
    one resample per row, NaN where undefined): same resamples, same result, much faster."""
    arrays = [_vector(s, f"sample {i}") for i, s in enumerate(samples)]
    n = arrays[0].size
    if any(a.size != n for a in arrays):
        raise ValueError(f"paired samples must have equal lengths, got {[a.size for a in arrays]}")
    try:
        value = float(statistic(*arrays))
    except ValueError as error:
        return Estimate.undefined(str(error))
    if n < 2:
        return Estimate(value, NAN, NAN, f"no interval from {n} unit(s)")
    rng = np.random.default_rng(seed)
    draws = []
    for start in range(0, int(n_resamples), BOOTSTRAP_CHUNK):
        index = rng.integers(0, n, size=(min(BOOTSTRAP_CHUNK, int(n_resamples) - start), n))
        if rows is not None:
            draws.extend(rows(*(a[index] for a in arrays)).tolist())
            continue
        for one in index:
            try:
                draws.append(statistic(*(a[one] for a in arrays)))
            except ValueError:
                draws.append(NAN)
    draws = np.asarray(draws, dtype=float)
    draws = draws[~np.isnan(draws)]
    undefined = int(n_resamples) - draws.size
    if draws.size < MIN_DEFINED_SHARE * int(n_resamples):
        return Estimate(value, NAN, NAN, f"no interval: the statistic is undefined in {undefined} of "
                                         f"{n_resamples} bootstrap resamples (too few units: {n})")
    low, high = _percentile_interval(draws, confidence)
    note = f"{undefined} of {n_resamples} bootstrap resamples undefined, left out" if undefined else ""
    return Estimate(value, low, high, note)


def mean_difference(
    a: ArrayLike,
    b: ArrayLike,
    *,
    confidence: float = 0.95,
    n_resamples: int = 2000,
    seed: int = 0,
) -> Estimate:
    """mean(a) - mean(b) for two independent samples, with a percentile bootstrap interval that
    resamples each sample on its own (NaN entries dropped). Undefined without values in both;
    no interval unless each has at least 2."""
    a, b = _vector(a, "a"), _vector(b, "b")
    a, b = a[~np.isnan(a)], b[~np.isnan(b)]
    if a.size == 0 or b.size == 0:
        return Estimate.undefined(f"a difference needs values in both groups, got {a.size} and {b.size}")
    value = float(a.mean() - b.mean())
    if a.size < 2 or b.size < 2:
        return Estimate(value, NAN, NAN, f"no interval: a group has fewer than 2 values ({a.size} and {b.size})")
    rng = np.random.default_rng(seed)
    draws = (a[rng.integers(0, a.size, size=(int(n_resamples), a.size))].mean(axis=1)
             - b[rng.integers(0, b.size, size=(int(n_resamples), b.size))].mean(axis=1))
    low, high = _percentile_interval(draws, confidence)
    return Estimate(value, low, high)


def ols(y: ArrayLike, design: ArrayLike) -> tuple[np.ndarray, np.ndarray, int]:
    """Ordinary least squares: (coefficients, their standard errors, residual degrees of freedom).

    Raises ValueError when the design is rank deficient or leaves no residual degree of freedom
    (then no standard error exists)."""
    y = _vector(y, "y")
    x = _as_float_matrix(design, "design")
    n, p = x.shape
    rank = np.linalg.matrix_rank(x)
    if rank < p:
        raise ValueError(f"the regression is not identified: {p} coefficients but the design has rank {rank} "
                         "(a covariate without variance?)")
    df = n - p
    if df < 1:
        raise ValueError(f"the regression has {n} observations for {p} coefficients: no residual left "
                         "to estimate its error")
    coef, *_ = np.linalg.lstsq(x, y, rcond=None)
    residual = y - x @ coef
    sigma2 = float(residual @ residual) / df
    se = np.sqrt(np.diag(np.linalg.inv(x.T @ x)) * sigma2)
    return coef, se, df


def group_means_at(
    y: ArrayLike,
    x: ArrayLike,
    groups: ArrayLike,
    at: float,
    *,
    confidence: float = 0.95,
) -> tuple[dict[object, Estimate], Estimate]:
    """Each group's mean of `y` at covariate value `at`, and the common slope of `y` on `x`.

    The model is ``y = a_g + b (x - at) + e`` (one intercept per group, one shared slope), fitted
    by OLS; `a_g` is group g's mean read at `x = at`, so groups are compared as if their `x` were
    the same. Intervals are ``coef +/- t(df) * se``. When the model cannot be fitted (the
    covariate has no variance within groups, or no residual degree of freedom), every estimate
    is undefined with the reason."""
    y, x = _vector(y, "y"), _vector(x, "x")
    labels = np.asarray(groups, dtype=object)
    keys = sorted(set(labels.tolist()), key=str)
    design = np.column_stack([*(labels == k for k in keys), x - at]).astype(float)
    try:
        coef, se, df = ols(y, design)
    except ValueError as error:
        undefined = Estimate.undefined(str(error))
        return {k: undefined for k in keys}, undefined
    half = _scipy_stats().t.ppf(0.5 + confidence / 2.0, df) * se
    estimates = [Estimate(float(c), float(c - h), float(c + h)) for c, h in zip(coef, half, strict=True)]
    return dict(zip(keys, estimates[:-1], strict=True)), estimates[-1]


def ppi_mean(
    unlabelled: ArrayLike,
    predicted: ArrayLike,
    labels: ArrayLike,
    *,
    confidence: float = 0.95,
    n_resamples: int = 2000,
    seed: int = 0,
) -> Estimate:
    """Prediction-powered estimate of the mean of the labels (Angelopoulos, Bates, Fannjiang,
    Jordan & Zrnic 2023, "Prediction-powered inference", Science 382(6671)):

        mean(predictions over all units) + mean(labels - predictions over the labelled units)

    `unlabelled` holds the predictions of the units without a label, `predicted` and `labels`
    the labelled units' predictions and labels (paired). The first term uses every unit, the
    second corrects its bias. The interval is a percentile bootstrap that resamples the labelled
    and the unlabelled units separately (each resample recomputes both terms), so the overlap of
    the two terms is accounted for. Undefined without a label; no interval below 2 labels."""
    rest, predicted, labels = (_vector(v, name) for v, name in
                               ((unlabelled, "unlabelled"), (predicted, "predicted"), (labels, "labels")))
    if predicted.size != labels.size:
        raise ValueError(f"predicted and labels must pair up, got {predicted.size} and {labels.size}")
    if np.isnan(rest).any() or np.isnan(predicted).any() or np.isnan(labels).any():
        raise ValueError("ppi_mean takes no NaN: drop the units without a prediction first")
    n, m = labels.size, rest.size
    if n == 0:
        return Estimate.undefined("no labelled unit: the bias of the predictions cannot be estimated")
    total = n + m
    value = float((rest.sum() + predicted.sum()) / total + (labels - predicted).mean())
    if n < 2:
        return Estimate(value, NAN, NAN, "no interval from 1 labelled unit")
    rng = np.random.default_rng(seed)
    index = rng.integers(0, n, size=(int(n_resamples), n))
    pred_b, lab_b = predicted[index], labels[index]
    rest_sum = rest[rng.integers(0, m, size=(int(n_resamples), m))].sum(axis=1) if m else 0.0
    draws = (rest_sum + pred_b.sum(axis=1)) / total + (lab_b - pred_b).mean(axis=1)
    low, high = _percentile_interval(draws, confidence)
    return Estimate(value, low, high)
