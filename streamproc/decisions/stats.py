"""Confidence intervals for experiment results and policy estimates (95%, normal theory).

Small, dependency-free and exact about what they compute:

* :func:`proportion_ci`: Wilson score interval of a proportion (good also near 0 and with few
  customers, unlike the plain Wald interval);
* :func:`mean_ci`: mean and normal-approximation interval (``mean +- z * sd / sqrt(n)``);
* :func:`difference_ci`: difference of two independent means (Welch standard error), used for
  uplift over control of both conversion (a mean of 0/1 values) and revenue per customer.

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
