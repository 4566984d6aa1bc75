"""How long a time-driven segment holds: the ``until_ms`` of RFM and lifecycle, exact to the
millisecond (the segmenter skips them until then), checked against the segment assigned 1 ms
before it, at it and in between."""

from __future__ import annotations

import random
from typing import Any

import pytest

from streamproc.days import DAY_MS, days_since, reached_ms
from streamproc.segments.config import SegmentConfig
from streamproc.segments.lifecycle import SEGMENTS, lifecycle_deferred
from streamproc.segments.quantiles import DEFAULT_CUTS, bucket_of, cut_points
from streamproc.segments.rfm import rfm_deferred

T0 = 1_772_359_200_050  # a purchase time, off any day boundary
TEN_YEARS = 3_653 * DAY_MS


@pytest.mark.parametrize("days", [1, 30, 90.0, 30.5, 1 / 3, 0.1, 1e-9, 3650])
def test_reached_ms_is_the_first_millisecond_at_the_threshold(days: float) -> None:
    at = reached_ms(T0, days)
    assert days_since(at - 1, T0) < days <= days_since(at, T0)


def buyer(last_ms: int, orders: int = 1, total: float = 30.0, days: int = 1,
          first_ms: int | None = None) -> dict[str, Any]:
    purchase_days = {str(last_ms // DAY_MS - 200 * i): 1.0 for i in range(days)}
    return {"first_seen_ms": first_ms or last_ms, "last_seen_ms": last_ms,
            "purchases": {"orders": orders, "total": total, "first_ms": first_ms or last_ms,
                          "last_ms": last_ms, "days": purchase_days},
            "rfm": {"frequency": days - 1}}


def test_rfm_holds_until_the_recency_cut_to_the_millisecond() -> None:
    p = buyer(T0)  # F1 M2: "new" while R5 (under 30 days), "promising" at R4
    held = rfm_deferred(p, T0 + DAY_MS, DEFAULT_CUTS)
    assert (held.segment, held.until_ms) == ("new", T0 + 30 * DAY_MS)
    assert rfm_deferred(p, held.until_ms - 1, DEFAULT_CUTS).segment == "new"
    assert rfm_deferred(p, held.until_ms, DEFAULT_CUTS).segment == "promising"


def test_rfm_until_skips_the_scores_that_keep_the_segment() -> None:
    p = buyer(T0, orders=12, total=3000.0, days=12)  # F5 M5: champions (R5), loyal (R4, R3)
    assert rfm_deferred(p, T0, DEFAULT_CUTS).until_ms == T0 + 30 * DAY_MS
    loyal = rfm_deferred(p, T0 + 30 * DAY_MS, DEFAULT_CUTS)
    assert (loyal.segment, loyal.until_ms) == ("loyal", T0 + 180 * DAY_MS)  # at R2: cant_lose
    last = rfm_deferred(p, T0 + 180 * DAY_MS, DEFAULT_CUTS)
    assert (last.segment, last.until_ms) == ("cant_lose", None)  # R1 is cant_lose too


def test_a_prospect_and_a_recency_from_rfm_do_not_move_with_time() -> None:
    assert rfm_deferred({"purchases": {"orders": 0}}, T0, DEFAULT_CUTS).until_ms is None
    legacy = {"purchases": {"orders": 2, "total": 60.0}, "rfm": {"frequency": 1, "T": 40,
                                                                "recency": 5}}
    assert rfm_deferred(legacy, T0, DEFAULT_CUTS).until_ms is None


def random_cuts(rng: random.Random) -> dict[str, tuple[float, float, float, float]]:
    recency = {bucket_of("recency_days", rng.uniform(0, 4000)): rng.randint(1, 50)
               for _ in range(rng.randint(1, 12))}
    return {**DEFAULT_CUTS, "recency_days": cut_points(recency)}


def assert_holds_until(segment_at: Any, now_ms: int, until_ms: int | None,
                       rng: random.Random) -> None:
    """The segment is the same from ``now_ms`` to 1 ms before ``until_ms`` and differs at it
    (or, with None, is the same ten years later)."""
    segment = segment_at(now_ms)
    if until_ms is None:
        assert segment_at(now_ms + TEN_YEARS) == segment
        return
    assert until_ms > now_ms
    for t in (until_ms - 1, *(rng.randrange(now_ms, until_ms) for _ in range(3))):
        assert segment_at(t) == segment, (t - now_ms, until_ms - now_ms)
    assert segment_at(until_ms) != segment


def test_rfm_until_on_random_buyers_and_bases() -> None:
    rng = random.Random(11)
    for _ in range(400):
        days = rng.randint(1, 30)
        p = buyer(T0, orders=days + rng.randint(0, 5), total=rng.uniform(1, 5000), days=days)
        cuts = random_cuts(rng) if rng.random() < 0.7 else DEFAULT_CUTS
        now = T0 + rng.randint(0, 2000) * DAY_MS + rng.randint(0, DAY_MS)
        held = rfm_deferred(p, now, cuts)
        assert_holds_until(lambda t, p=p, cuts=cuts: rfm_deferred(p, t, cuts).segment, now,
                           held.until_ms, rng)


@pytest.mark.parametrize(
    ("days", "previous", "now_days", "stage", "until_days"),
    [
        ([0], None, 1, "new", 30),  # first purchase 30 days old: active
        ([0], None, 30, "active", 90),  # last purchase 90 days old: at risk
        ([0], None, 90, "at_risk", 180),  # then lapsed
        ([0], None, 180, "lapsed", None),  # for good
        ([0, 100], None, 101, "reactivated", 130),  # a return 100 days after: 30 days of it
        ([0, 10], "lapsed", 11, "reactivated", 40),  # back after an away stage
    ],
)
def test_lifecycle_holds_until_its_next_threshold_to_the_millisecond(
        days: list[int], previous: str | None, now_days: int, stage: str,
        until_days: int | None) -> None:
    p = {"purchases": {"orders": len(days), "first_ms": days[0] * DAY_MS,
                       "last_ms": days[-1] * DAY_MS, "days": {str(d): 5.0 for d in days}}}
    config = SegmentConfig()
    held = lifecycle_deferred(p, now_days * DAY_MS, previous, config)
    assert held.segment == stage
    if until_days is None:
        assert held.until_ms is None
        return
    assert held.until_ms == until_days * DAY_MS
    assert lifecycle_deferred(p, held.until_ms - 1, previous, config).segment == stage
    assert lifecycle_deferred(p, held.until_ms, previous, config).segment != stage


def test_lifecycle_until_on_random_buyers() -> None:
    rng = random.Random(5)
    for _ in range(600):
        config = SegmentConfig(
            lifecycle_new_days=rng.choice([30.0, 7.5, 45.0]),
            lifecycle_active_days=rng.choice([90.0, 60.25]),
            lifecycle_lapsed_days=rng.choice([180.0, 365.0]),
            lifecycle_reactivated_days=rng.choice([30.0, 10.5]))
        days = sorted({rng.randint(0, 600) for _ in range(rng.randint(1, 5))})
        last_ms = days[-1] * DAY_MS + rng.randint(0, DAY_MS - 1)
        p = {"purchases": {"orders": len(days), "first_ms": days[0] * DAY_MS + 7,
                           "last_ms": last_ms, "days": {str(d): 5.0 for d in days}}}
        previous = rng.choice([None, *SEGMENTS])
        now = last_ms + rng.randint(0, 400) * DAY_MS + rng.randint(0, DAY_MS)
        held = lifecycle_deferred(p, now, previous, config)
        assert_holds_until(
            lambda t, p=p, previous=previous, config=config:
            lifecycle_deferred(p, t, previous, config).segment, now, held.until_ms, rng)


def test_a_visitor_holds_while_their_last_visit_is_their_time() -> None:
    config = SegmentConfig()
    p = {"first_seen_ms": T0, "last_seen_ms": T0 + 5 * DAY_MS}
    held = lifecycle_deferred(p, T0 + 5 * DAY_MS, None, config)
    # New until the first visit is 30 days old, whatever their visits until then.
    assert (held.segment, held.until_ms) == ("new", reached_ms(T0, 30.0))
    later = {**p, "last_seen_ms": held.until_ms - 1}
    assert lifecycle_deferred(later, held.until_ms - 1, None, config).segment == "new"
    at = {**p, "last_seen_ms": held.until_ms}
    assert lifecycle_deferred(at, held.until_ms, None, config).segment == "active"
    # Active for good while they visit; with their clock ahead of their last visit (a timer
    # moved it) the stage is assigned again on any move of the clock.
    assert lifecycle_deferred(at, held.until_ms, None, config).until_ms is None
    ahead = held.until_ms + 91 * DAY_MS
    assert lifecycle_deferred(at, ahead, None, config).until_ms == ahead
