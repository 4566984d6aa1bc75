"""RFM quantile scores: bucket edges, cut points on known histograms, scores at boundaries."""

from __future__ import annotations

import itertools
import math

import pytest

from streamproc.segments.quantiles import (
    BUCKETS,
    DEFAULT_CUTS,
    DEFAULT_THRESHOLDS,
    DIMENSIONS,
    NO_BASE,
    bucket_of,
    cut_points,
    cuts_from_histograms,
    score,
    score_bucket,
)


@pytest.mark.parametrize("dimension", DIMENSIONS)
def test_edges_start_at_zero_and_rise(dimension: str) -> None:
    edges = BUCKETS[dimension]
    assert edges[0] == 0
    assert all(a < b for a, b in itertools.pairwise(edges))


@pytest.mark.parametrize("dimension", DIMENSIONS)
def test_default_thresholds_are_bucket_edges(dimension: str) -> None:
    assert set(DEFAULT_THRESHOLDS[dimension]) <= set(BUCKETS[dimension])


@pytest.mark.parametrize("dimension", ["frequency", "monetary"])
def test_bucket_of_counts_up_for_higher_is_better(dimension: str) -> None:
    edges = BUCKETS[dimension]
    assert [bucket_of(dimension, e) for e in edges] == list(range(len(edges)))
    assert bucket_of(dimension, edges[1] - 1e-9) == 0
    assert bucket_of(dimension, edges[-1] * 10) == len(edges) - 1
    assert bucket_of(dimension, -5) == 0
    assert bucket_of(dimension, math.nan) == 0


def test_bucket_of_recency_counts_from_worst() -> None:
    edges = BUCKETS["recency_days"]
    top = len(edges) - 1
    assert bucket_of("recency_days", 0) == top
    assert bucket_of("recency_days", 0.99) == top
    assert bucket_of("recency_days", 1) == top - 1
    assert bucket_of("recency_days", 10_000) == 0


def test_cut_points_uniform() -> None:
    assert cut_points({b: 10 for b in range(10)}) == (1, 3, 5, 7)
    assert cut_points({b: 7 for b in range(5)}) == (0, 1, 2, 3)
    cuts = cut_points({b: 10 for b in range(10)})
    assert [score_bucket(b, cuts) for b in range(10)] == [1, 1, 2, 2, 3, 3, 4, 4, 5, 5]


def test_cut_points_skewed() -> None:
    # 70 % one-time buyers (0 repeat days), then a long tail.
    histogram = {0: 70, 1: 15, 2: 8, 3: 4, 5: 3}
    cuts = cut_points(histogram)
    assert cuts == (0, 0, 0, 1)
    # beat 70 % -> floor(3.5) = 3 -> F4; beat 85 % or more -> F5
    assert [score_bucket(b, cuts) for b in (0, 1, 2, 3, 5)] == [1, 4, 5, 5, 5]


def test_scores_follow_the_share_strictly_beaten() -> None:
    """score = 1 + min(4, floor(5 * share of customers strictly worse))."""
    histogram = {0: 3, 2: 11, 3: 1, 7: 20, 8: 5, 12: 9, 20: 1}
    total = sum(histogram.values())
    cuts = cut_points(histogram)
    for bucket in range(25):
        worse = sum(n for b, n in histogram.items() if b < bucket)
        assert score_bucket(bucket, cuts) == 1 + min(4, 5 * worse // total), bucket


def test_cut_points_all_equal_and_empty() -> None:
    cuts = cut_points({0: 1000})
    assert score("frequency", 0, cuts) == 1  # everyone frequency 0: all F1
    assert score("frequency", 3, cuts) == 5  # someone above them all beats 100 %
    assert cut_points({}) == NO_BASE
    assert cut_points({0: 0, 3: -2}) == NO_BASE  # counting slips are ignored
    assert score("monetary", 10_000, NO_BASE) == 1


def test_cut_points_single_customer() -> None:
    cuts = cut_points({bucket_of("monetary", 80): 1})
    assert score("monetary", 80, cuts) == 1
    assert score("monetary", 200, cuts) == 5


def test_recency_is_inverted() -> None:
    days = [1, 20, 60, 200, 900]
    cuts = cut_points({bucket_of("recency_days", d): 1 for d in days})
    assert [score("recency_days", d, cuts) for d in days] == [5, 4, 3, 2, 1]


@pytest.mark.parametrize(
    ("dimension", "value", "expected"),
    [
        # recency: R5 under 30 days, R4 under 90, R3 under 180, R2 under 365
        ("recency_days", 29.99, 5), ("recency_days", 30, 4), ("recency_days", 31, 4),
        ("recency_days", 89, 4), ("recency_days", 90, 3), ("recency_days", 91, 3),
        ("recency_days", 179, 3), ("recency_days", 180, 2), ("recency_days", 364, 2),
        ("recency_days", 365, 1), ("recency_days", 366, 1), ("recency_days", 0, 5),
        # frequency: F2 at 1 repeat day, F3 at 2, F4 at 4, F5 at 8
        ("frequency", 0, 1), ("frequency", 1, 2), ("frequency", 2, 3), ("frequency", 3, 3),
        ("frequency", 4, 4), ("frequency", 7, 4), ("frequency", 8, 5), ("frequency", 9, 5),
        # monetary: M2 at 25, M3 at 50, M4 at 100, M5 at 200
        ("monetary", 24.99, 1), ("monetary", 25, 2), ("monetary", 25.01, 2),
        ("monetary", 49.99, 2), ("monetary", 50, 3), ("monetary", 99.99, 3),
        ("monetary", 100, 4), ("monetary", 199.99, 4), ("monetary", 200, 5), ("monetary", 1e6, 5),
    ],
)
def test_default_cuts_at_their_thresholds(dimension: str, value: float, expected: int) -> None:
    assert score(dimension, value, DEFAULT_CUTS[dimension]) == expected


def test_cuts_from_histograms_fall_back_below_min_customers() -> None:
    # 150 customers, 30 in each of 5 buckets; 95, 19 in each
    small = {"frequency": {b: 19 for b in range(5)}, "monetary": {b: 30 for b in range(5)}}
    cuts = cuts_from_histograms(small, min_customers=100)
    assert cuts["frequency"] == DEFAULT_CUTS["frequency"]
    assert cuts["recency_days"] == DEFAULT_CUTS["recency_days"]
    assert cuts["monetary"] == (0, 1, 2, 3)
    assert cuts_from_histograms(small, 95)["frequency"] == (0, 1, 2, 3)
    assert cuts_from_histograms({"frequency": {}}, 0)["frequency"] == DEFAULT_CUTS["frequency"]


@pytest.mark.parametrize(
    ("counts", "quantiles_used"),
    [
        ({50: 500}, False),  # everybody in one bucket (all bought today)
        ({49: 100, 50: 400}, False),  # 80 % bought today, 20 % yesterday: today's were R2
        ({46: 100, 47: 200, 48: 100, 49: 100}, False),  # two fifths tie: boundaries 2 and 3
        ({b: 100 for b in range(45, 50)}, True),  # a fifth in each bucket
        ({b: 10 for b in range(50)}, True),
    ],
)
def test_a_base_with_no_spread_is_scored_with_the_fixed_thresholds(
        counts: dict[int, int], quantiles_used: bool) -> None:
    cuts = cuts_from_histograms({"recency_days": counts})["recency_days"]
    assert (cuts == cut_points(counts)) is quantiles_used
    assert (cuts == DEFAULT_CUTS["recency_days"]) is not quantiles_used


def test_todays_buyers_are_r5_not_r1_while_the_whole_base_bought_today() -> None:
    today = bucket_of("recency_days", 0.01)
    cuts = cuts_from_histograms({"recency_days": {today: 745}})["recency_days"]
    assert score("recency_days", 0.01, cuts) == 5
    assert score("recency_days", 0.01, cut_points({today: 745})) == 1  # what the tie gave
