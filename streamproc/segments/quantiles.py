"""RFM scores 1 to 5 against streaming quantiles of the whole customer base.

The base is summarised by one histogram per dimension over the fixed buckets of :data:`BUCKETS`:
for each bucket, how many customers currently have a value in it (each customer counted once; when
a customer's value moves, its old bucket loses one and its new bucket gains one). The dimensions:

- ``recency_days``: days since the last purchase (BTYD ``T - recency``); lower is better;
- ``frequency``: repeat purchase days (BTYD ``frequency``: distinct purchase days minus one);
- ``monetary``: average order value, ``purchases.total / purchases.orders``.

**Score.** A customer's score in a dimension is ``1 + min(4, floor(5 * w))`` where ``w`` is the
share of the base strictly worse than the customer: beat 80 % of customers or more and the
score is 5, beat fewer than 20 % and it is 1. Ties share the lower score, so when every customer
has frequency 0 they all get F1 (nobody beats anybody), not F3; an empty base scores everyone 1.
:func:`cut_points` turns a histogram into the four quintile boundaries, ``cuts[k-1]`` being the
bucket holding the ``k``/5 quantile, and :func:`score` is then ``1 +`` the number of boundaries
the customer's bucket lies above.

**Ties across a boundary.** When two boundaries fall in one bucket (a fifth of the base or more
ties there, across a quintile), the quintiles cannot be told apart and the tie takes the lowest
of the scores it spans: on a shop's first day everybody bought today, and a purchase minutes old
scored R1 (``lost``); the next day the 80 % who bought today scored R2. A dimension whose four
boundaries are not four different buckets is therefore scored against the fixed thresholds
(:data:`DEFAULT_THRESHOLDS`), as a base too small is (like ``pandas.qcut``, which refuses bin
edges that are not unique).

**Bucket order.** Bucket indices run from worst to best in every dimension, so one rule serves all
three: bucket 0 of ``recency_days`` holds the purchases longest ago (its edges are read backwards).

**Approximation.** Values are compared by bucket: customers in one bucket tie, so a boundary can
sit up to one bucket away from the exact quintile. Buckets are one unit wide where values are
small (each of days 0 to 10, each of 0 to 20 repeat purchase days, each unit of order value up to
10) and about 10 to 20 % of the value above that (log-spaced), up to 10 years, 1,000 repeat days and
50,000 per order; larger values share the top bucket. Changing an edge changes bucket numbers:
bump :data:`BUCKETS_VERSION` and rebuild the histograms.

>>> histogram = {bucket_of("frequency", 0): 60, bucket_of("frequency", 3): 40}
>>> cuts = cut_points(histogram)
>>> score("frequency", 0, cuts), score("frequency", 3, cuts)
(1, 4)
>>> score("recency_days", 2, DEFAULT_CUTS["recency_days"])
5
"""

from __future__ import annotations

import math
from bisect import bisect_right
from collections.abc import Mapping

Cuts = tuple[float, float, float, float]

DIMENSIONS = ("recency_days", "frequency", "monetary")
LOWER_IS_BETTER = frozenset({"recency_days"})
BUCKETS_VERSION = 1

# Lower edges, ascending in the dimension's own unit; bucket i is [edge i, edge i+1).
BUCKETS: dict[str, tuple[float, ...]] = {
    "recency_days": (
        0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 12, 14, 16, 18, 21, 24, 27, 30, 35, 40, 45, 50, 60,
        70, 80, 90, 105, 120, 135, 150, 180, 210, 240, 270, 300, 365, 420, 480, 540, 600, 730,
        850, 1000, 1100, 1250, 1460, 1700, 2000, 2400, 2900, 3650,
    ),
    "frequency": (
        0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 22, 25, 30,
        35, 40, 50, 60, 70, 85, 100, 120, 150, 200, 250, 300, 400, 500, 700, 1000,
    ),
    "monetary": (
        0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 12, 14, 16, 18, 20, 22.5, 25, 27.5, 30, 35, 40, 45,
        50, 55, 60, 70, 80, 90, 100, 110, 125, 140, 160, 180, 200, 225, 250, 275, 300, 350, 400,
        450, 500, 600, 700, 800, 900, 1000, 1250, 1500, 1750, 2000, 2500, 3000, 4000, 5000, 7500,
        10000, 15000, 20000, 50000,
    ),
}

# Fixed boundaries for when there is no base yet (or too small a one), in each dimension's unit:
# score k+1 needs frequency/monetary >= thresholds[k-1], or recency_days < thresholds[k-1].
# So R5 is a purchase under 30 days ago, F5 is 8+ repeat purchase days, M5 is 200+ per order.
DEFAULT_THRESHOLDS: dict[str, tuple[float, float, float, float]] = {
    "recency_days": (365, 180, 90, 30),
    "frequency": (1, 2, 4, 8),
    "monetary": (25, 50, 100, 200),
}

# Every boundary above every bucket: nobody beats anybody, everyone scores 1.
NO_BASE: Cuts = (math.inf, math.inf, math.inf, math.inf)


def bucket_of(dimension: str, value: float) -> int:
    """The histogram bucket of ``value``, numbered from worst to best (see the module notes).

    >>> bucket_of("frequency", 0), bucket_of("frequency", 2.5), bucket_of("recency_days", 5000)
    (0, 2, 0)
    """
    edges = BUCKETS[dimension]
    raw = 0 if math.isnan(value) else max(bisect_right(edges, value) - 1, 0)
    return len(edges) - 1 - raw if dimension in LOWER_IS_BETTER else raw


def cut_points(counts: Mapping[int, int]) -> Cuts:
    """The quintile boundaries of a histogram ``{bucket: customers}``.

    ``cuts[k-1]`` is the lowest bucket at or below which at least ``k``/5 of the customers lie.
    Buckets with no (or, after a counting slip, negative) customers are ignored; an empty
    histogram gives :data:`NO_BASE`.

    >>> cut_points({b: 10 for b in range(10)})
    (1.0, 3.0, 5.0, 7.0)
    >>> cut_points({0: 500})
    (0.0, 0.0, 0.0, 0.0)
    """
    histogram = sorted((b, n) for b, n in counts.items() if n > 0)
    total = sum(n for _, n in histogram)
    if total == 0:
        return NO_BASE
    pairs = iter(histogram)
    bucket, running = histogram[0][0], 0
    cuts: list[float] = []
    for k in range(1, 5):
        while 5 * running < k * total:  # integers: no rounding at exact quintiles
            bucket, n = next(pairs)
            running += n
        cuts.append(float(bucket))
    return (cuts[0], cuts[1], cuts[2], cuts[3])


def score_bucket(bucket: int, cuts: Cuts) -> int:
    """1 to 5: one plus the number of boundaries ``bucket`` lies above."""
    return 1 + sum(1 for cut in cuts if bucket > cut)


def score(dimension: str, value: float, cuts: Cuts) -> int:
    """The 1 to 5 score of ``value`` (recency inverted: a recent purchase scores 5).

    >>> cuts = cut_points({bucket_of("recency_days", d): 1 for d in (1, 20, 60, 200, 900)})
    >>> [score("recency_days", d, cuts) for d in (1, 20, 60, 200, 900)]
    [5, 4, 3, 2, 1]
    """
    return score_bucket(bucket_of(dimension, value), cuts)


def worst_value_within(dimension: str, cut: float) -> float | None:
    """The lowest value of a lower-is-better ``dimension`` whose bucket is at or below ``cut``
    (None: no value's is): as the value grows (days since the last purchase, with time), the
    score falls to at most ``k`` from that value on, for ``cut`` = ``cuts[k-1]``.

    >>> cuts = DEFAULT_CUTS["recency_days"]  # R5 under 30 days, R4 under 90, ...
    >>> worst_value_within("recency_days", cuts[3]), worst_value_within("recency_days", cuts[0])
    (30, 365)
    """
    if dimension not in LOWER_IS_BETTER:
        raise ValueError(f"{dimension} is not lower-is-better")
    edges = BUCKETS[dimension]
    # bucket = len - 1 - raw, raw = the index of the value's edge: bucket <= cut iff
    # raw >= len - 1 - cut, iff the value is at least that edge.
    lowest = len(edges) - 1 - cut
    if lowest <= 0:
        return edges[0]
    index = math.ceil(lowest)
    return edges[index] if index < len(edges) else None


def cuts_at(dimension: str, thresholds: tuple[float, float, float, float]) -> Cuts:
    """Fixed cuts from value thresholds, read as in :data:`DEFAULT_THRESHOLDS`.

    Exact when each threshold is a bucket edge; otherwise it moves to its bucket's edge.
    """
    # Lower is better: score >= k+1 iff value < t, iff the value's bucket is above t's.
    # Higher is better: score >= k+1 iff value >= t, iff the value's bucket is at least t's.
    shift = 0 if dimension in LOWER_IS_BETTER else 1
    a, b, c, d = (float(bucket_of(dimension, t) - shift) for t in thresholds)
    return (a, b, c, d)

DEFAULT_CUTS: dict[str, Cuts] = {d: cuts_at(d, t) for d, t in DEFAULT_THRESHOLDS.items()}


def cuts_from_histograms(
    histograms: Mapping[str, Mapping[int, int]], min_customers: int = 100
) -> dict[str, Cuts]:
    """Cuts for every dimension: from its histogram, or the default ones for a small base or a
    base whose quintiles share a bucket (a tie across a boundary: see the module notes).

    >>> cuts_from_histograms({"frequency": {0: 3}})["frequency"] == DEFAULT_CUTS["frequency"]
    True
    >>> today = bucket_of("recency_days", 0)  # 500 customers who all bought today
    >>> cuts_from_histograms({"recency_days": {today: 500}})["recency_days"] == DEFAULT_CUTS[
    ...     "recency_days"]
    True
    """
    out = dict(DEFAULT_CUTS)
    for dimension, counts in histograms.items():
        if dimension in out and sum(n for n in counts.values() if n > 0) >= max(min_customers, 1):
            cuts = cut_points(counts)
            if cuts[0] < cuts[1] < cuts[2] < cuts[3]:
                out[dimension] = cuts
    return out
