"""Inter-rater agreement and uncertainty statistics for daydream.

Three public functions, all implemented on numpy/scipy:

* :func:`krippendorff_alpha_interval` -- Krippendorff's alpha, interval metric
  (Krippendorff 2011, "Computing Krippendorff's Alpha-Reliability").
* :func:`icc_2_1` -- intraclass correlation ICC(2,1): two-way random effects,
  absolute agreement, single rater (Shrout & Fleiss 1979, Psychological
  Bulletin 86(2), 420-428).
* :func:`bootstrap_mean_ci` -- mean with a percentile bootstrap confidence
  interval computed by :func:`scipy.stats.bootstrap`.

Missing values are encoded as NaN throughout.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike
from scipy import stats as _sp_stats

__all__ = ["bootstrap_mean_ci", "icc_2_1", "krippendorff_alpha_interval"]


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

    result = _sp_stats.bootstrap(
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
