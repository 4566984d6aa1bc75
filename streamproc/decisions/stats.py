"""Confidence intervals for experiment results and policy estimates (95%).

Exact about what they compute:

* :func:`proportion_ci`: Wilson score interval of a proportion (good also near 0 and with few
  customers, unlike the plain Wald interval);
* :func:`mean_ci`: mean and normal-approximation interval (``mean +- z * sd / sqrt(n)``);
* :func:`difference_ci`: difference of two independent means (Welch standard error), used for
  uplift over control of both conversion (a mean of 0/1 values) and revenue per customer,
  normal theory: for large samples (policy evaluation);
* with scipy, for experiment results at any size: :func:`mean_t_ci` (Student t),
  :func:`welch_t_ci` and :func:`bootstrap_difference_ci` (the uplift over control:
  :func:`uplift_ci` picks one), :func:`enough_data` (below which the report says "not enough
  data yet") and :func:`customers_needed` (the sample size each arm needs).

>>> [round(x, 4) for x in proportion_ci(12, 100)]
[0.12, 0.07, 0.1981]
>>> mean_ci([1.0, 2.0, 3.0]).value
2.0
>>> round(difference_ci([1, 1, 0, 1], [0, 0, 1, 0]).value, 2)
0.5
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import NamedTuple

Z95 = 1.959963984540054


class Interval(NamedTuple):
    value: float
    low: float
    high: float

    def as_dict(self, digits: int = 6) -> dict[str, float]:
        return {"value": round(self.value, digits), "low": round(self.low, digits),
                "high": round(self.high, digits)}


def proportion_ci(successes: int, n: int, z: float = Z95) -> Interval:
    """Wilson score interval of ``successes / n``; (0, 0, 1) when n is 0."""
    if n <= 0:
        return Interval(0.0, 0.0, 1.0)
    p = successes / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return Interval(p, max(0.0, centre - half), min(1.0, centre + half))


def _mean_var(values: Sequence[float]) -> tuple[float, float]:
    n = len(values)
    mean = math.fsum(values) / n
    var = math.fsum((v - mean) ** 2 for v in values) / (n - 1) if n > 1 else 0.0
    return mean, var


def mean_ci(values: Sequence[float], z: float = Z95) -> Interval:
    """The mean of ``values`` with a normal-approximation interval; NaNs when empty."""
    if not values:
        return Interval(math.nan, math.nan, math.nan)
    mean, var = _mean_var(values)
    half = z * math.sqrt(var / len(values))
    return Interval(mean, mean - half, mean + half)


def difference_ci(treated: Sequence[float], control: Sequence[float],
                  z: float = Z95) -> Interval:
    """``mean(treated) - mean(control)`` with a Welch (unequal variances) interval."""
    if not treated or not control:
        return Interval(math.nan, math.nan, math.nan)
    m1, v1 = _mean_var(treated)
    m0, v0 = _mean_var(control)
    diff = m1 - m0
    half = z * math.sqrt(v1 / len(treated) + v0 / len(control))
    return Interval(diff, diff - half, diff + half)


# What a trustworthy comparison needs, at least: customers in each arm, and converted customers
# in the two arms together. Below that, the report says "not enough data yet" instead of an
# interval that would only look precise.
MIN_CUSTOMERS = 30
MIN_CONVERSIONS = 10
# Below this many customers in an arm, uplift intervals are bootstrapped (revenue is skewed and
# conversions are few); above it, Welch's t is as good and costs nothing.
BOOTSTRAP_BELOW = 5000
BOOTSTRAP_RESAMPLES = 2000


def enough_data(n_treated: int, n_control: int, converted: int,
                min_customers: int = MIN_CUSTOMERS,
                min_conversions: int = MIN_CONVERSIONS) -> bool:
    """Whether two arms hold enough customers and conversions to compare them.

    >>> enough_data(40, 35, 12), enough_data(40, 12, 30), enough_data(400, 400, 3)
    (True, False, False)
    """
    return (n_treated >= min_customers and n_control >= min_customers
            and converted >= min_conversions)


def mean_t_ci(values: Sequence[float], confidence: float = 0.95) -> Interval:
    """The mean with a Student t interval (right at small counts, unlike ``mean_ci``).

    >>> [round(x, 3) for x in mean_t_ci([1.0, 2.0, 3.0])]
    [2.0, -0.484, 4.484]
    """
    from scipy import stats

    n = len(values)
    if n == 0:
        return Interval(math.nan, math.nan, math.nan)
    mean, var = _mean_var(values)
    if n == 1 or var == 0:
        return Interval(mean, mean, mean) if n > 1 else Interval(mean, math.nan, math.nan)
    half = float(stats.t.ppf(0.5 + confidence / 2, n - 1)) * math.sqrt(var / n)
    return Interval(mean, mean - half, mean + half)


def welch_t_ci(treated: Sequence[float], control: Sequence[float],
               confidence: float = 0.95) -> Interval:
    """``mean(treated) - mean(control)`` with a Welch t interval (Welch-Satterthwaite degrees
    of freedom).

    >>> [round(x, 3) for x in welch_t_ci([1, 1, 0, 1], [0, 0, 1, 0])]
    [0.5, -0.365, 1.365]
    """
    from scipy import stats

    if len(treated) < 2 or len(control) < 2:
        return _point_only(treated, control)
    m1, v1 = _mean_var(treated)
    m0, v0 = _mean_var(control)
    a, b = v1 / len(treated), v0 / len(control)
    diff = m1 - m0
    if a + b == 0:
        return Interval(diff, diff, diff)
    df = (a + b) ** 2 / (a * a / (len(treated) - 1) + b * b / (len(control) - 1))
    half = float(stats.t.ppf(0.5 + confidence / 2, df)) * math.sqrt(a + b)
    return Interval(diff, diff - half, diff + half)


def bootstrap_difference_ci(treated: Sequence[float], control: Sequence[float],
                            confidence: float = 0.95, resamples: int = BOOTSTRAP_RESAMPLES,
                            seed: int = 0) -> Interval:
    """``mean(treated) - mean(control)`` with a percentile bootstrap interval (scipy), each
    arm resampled on its own; the same seed gives the same interval.

    >>> iv = bootstrap_difference_ci([0, 0, 0, 40.0] * 10, [0, 0, 0, 20.0] * 10)
    >>> iv.value, iv.low < 5.0 < iv.high
    (5.0, True)
    """
    import numpy as np
    from scipy import stats

    if len(treated) < 2 or len(control) < 2:
        return _point_only(treated, control)
    t = np.asarray(treated, dtype=float)
    c = np.asarray(control, dtype=float)
    diff = float(t.mean() - c.mean())
    if t.min() == t.max() and c.min() == c.max():
        return Interval(diff, diff, diff)
    res = stats.bootstrap((t, c), lambda x, y, axis=-1: x.mean(axis=axis) - y.mean(axis=axis),
                          confidence_level=confidence, n_resamples=resamples,
                          method="percentile", vectorized=True,
                          rng=np.random.default_rng(seed))
    return Interval(diff, float(res.confidence_interval.low),
                    float(res.confidence_interval.high))


def _point_only(treated: Sequence[float], control: Sequence[float]) -> Interval:
    """The difference without an interval (one customer in an arm), NaNs when one is empty."""
    if not treated or not control:
        return Interval(math.nan, math.nan, math.nan)
    diff = math.fsum(treated) / len(treated) - math.fsum(control) / len(control)
    return Interval(diff, math.nan, math.nan)


def uplift_ci(treated: Sequence[float], control: Sequence[float]) -> Interval:
    """The uplift interval the report uses: bootstrap below :data:`BOOTSTRAP_BELOW` customers
    in an arm, Welch t above."""
    if min(len(treated), len(control)) < BOOTSTRAP_BELOW:
        return bootstrap_difference_ci(treated, control)
    return welch_t_ci(treated, control)


def customers_needed(p_control: float, relative_uplift: float = 0.10, alpha: float = 0.05,
                     power: float = 0.80) -> int | None:
    """Customers each arm needs to detect a relative uplift in conversion over ``p_control``
    (two-sided test of two proportions at ``alpha``, with ``power``); None when the control
    conversion is 0 or 1 (nothing to scale the uplift by).

    >>> customers_needed(0.10), customers_needed(0.10, 0.5), customers_needed(0.0)
    (14751, 686, None)
    """
    from scipy import stats

    p1 = p_control * (1 + relative_uplift)
    if not 0 < p_control < 1 or not 0 < p1 < 1:
        return None
    za = float(stats.norm.ppf(1 - alpha / 2))
    zb = float(stats.norm.ppf(power))
    pbar = (p_control + p1) / 2
    n = (za * math.sqrt(2 * pbar * (1 - pbar))
         + zb * math.sqrt(p_control * (1 - p_control) + p1 * (1 - p1))) ** 2 / (p1 - p_control) ** 2
    return math.ceil(n)
