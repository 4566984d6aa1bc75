"""Value tier, lifecycle, journey and demographics: every rule one below / at / above its
threshold, with plain profile dicts."""

from __future__ import annotations

from typing import Any

import pytest

from streamproc.errors import ConfigError
from streamproc.segments.config import SegmentConfig
from streamproc.segments.demographic import assign_demographics
from streamproc.segments.journey import assign_journey
from streamproc.segments.lifecycle import assign_lifecycle, last_return_day
from streamproc.segments.tiers import assign_value_tier

DAY = 86_400_000
CONFIG = SegmentConfig()

# -- config ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "changes",
    [
        {"tier_emerging": 300.0},  # above profitable
        {"tier_very_profitable": 250.0},  # equal to profitable
        {"tier_emerging": -1.0},
        {"lifecycle_lapsed_days": 90.0},
        {"lifecycle_new_days": 0.0},
        {"lifecycle_reactivated_days": -1.0},
        {"activity_days": 0},
        {"activity_days": 367},
        {"journey_loyal_orders": 2},
        {"journey_engaged_sessions": 0},
        {"rfm_min_customers": -1},
    ],
)
def test_config_refuses_inconsistent_thresholds(changes: dict[str, Any]) -> None:
    with pytest.raises(ConfigError, match="segment config"):
        SegmentConfig(**changes)


def test_config_lists_every_problem() -> None:
    with pytest.raises(ConfigError) as info:
        SegmentConfig(activity_days=0, journey_loyal_orders=1)
    assert "activity_days" in str(info.value) and "journey_loyal_orders" in str(info.value)


# -- value tier ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("total", "tier"),
    [
        (0.0, "unprofitable"), (49.99, "unprofitable"), (50.0, "emerging"), (50.01, "emerging"),
        (249.99, "emerging"), (250.0, "profitable"), (250.01, "profitable"),
        (999.99, "profitable"), (1000.0, "very_profitable"), (1000.01, "very_profitable"),
    ],
)
def test_value_tier_boundaries(total: float, tier: str) -> None:
    assert assign_value_tier({"purchases": {"orders": 1, "total": total}}, CONFIG).segment == tier


def test_value_tier_of_a_customer_who_never_bought() -> None:
    assert assign_value_tier({}, CONFIG) == ("unprofitable", "lifetime value 0.00, under 50.00")


def test_value_tier_thresholds_are_configurable() -> None:
    config = SegmentConfig(tier_emerging=1.0, tier_profitable=2.0, tier_very_profitable=3.0)
    assert assign_value_tier({"purchases": {"total": 2.5}}, config).segment == "profitable"


# -- lifecycle -------------------------------------------------------------------------------------


def visitor(first_day: float, last_day: float) -> dict[str, Any]:
    return {"first_seen_ms": int(first_day * DAY), "last_seen_ms": int(last_day * DAY),
            "purchases": {"orders": 0, "total": 0.0, "first_ms": None, "last_ms": None,
                          "days": {}}}


def buyer(*purchase_days: float, last_seen: float | None = None) -> dict[str, Any]:
    days = sorted(purchase_days)
    return {
        "first_seen_ms": 0,
        "last_seen_ms": int((last_seen if last_seen is not None else days[-1]) * DAY),
        "purchases": {"orders": len(days), "total": 10.0 * len(days),
                      "first_ms": int(days[0] * DAY), "last_ms": int(days[-1] * DAY),
                      "days": {str(int(d)): 10.0 for d in days}},
    }


def lifecycle(profile: dict[str, Any], now_day: float, previous: str | None = None,
              config: SegmentConfig = CONFIG) -> str:
    return assign_lifecycle(profile, int(now_day * DAY), previous, config).segment


@pytest.mark.parametrize(
    ("idle", "stage"),
    [(89, "active"), (90, "at_risk"), (91, "at_risk"), (179, "at_risk"), (180, "lapsed"),
     (181, "lapsed")],
)
def test_lifecycle_purchase_recency(idle: float, stage: str) -> None:
    # first purchase long ago, last one at day 500
    assert lifecycle(buyer(100, 500), 500 + idle) == stage


def test_lifecycle_buyer_browsing_is_still_at_risk() -> None:
    assert lifecycle(buyer(100, 500, last_seen=700), 700) == "lapsed"


@pytest.mark.parametrize(("age", "stage"), [(29, "new"), (30, "active"), (31, "active")])
def test_lifecycle_new_buyer(age: float, stage: str) -> None:
    # first purchase `age` days ago, last one yesterday
    assert lifecycle(buyer(1000 - age, 999), 1000) == stage


@pytest.mark.parametrize(
    ("age", "idle", "stage"),
    [(29, 0, "new"), (30, 0, "active"), (400, 89, "active"), (400, 90, "at_risk"),
     (400, 180, "lapsed")],
)
def test_lifecycle_visitor_follows_visits(age: float, idle: float, stage: str) -> None:
    assert lifecycle(visitor(1000 - age, 1000 - idle), 1000) == stage


def test_lifecycle_of_an_empty_profile() -> None:
    assert assign_lifecycle({}, 0, None, CONFIG) == ("new", "no activity yet")


@pytest.mark.parametrize(("gap", "stage"), [(89, "active"), (90, "reactivated"),
                                            (91, "reactivated")])
def test_reactivated_needs_a_gap_of_active_days(gap: int, stage: str) -> None:
    assert lifecycle(buyer(100, 100 + gap), 100 + gap + 1) == stage


@pytest.mark.parametrize(("since", "stage"), [(29, "reactivated"), (30, "active"),
                                              (31, "active")])
def test_reactivated_lasts_reactivated_days(since: int, stage: str) -> None:
    # came back at day 300 after 200 days, bought again at 305: still counted from the return
    assert lifecycle(buyer(100, 300, 305), 300 + since) == stage


def test_reactivated_from_previous_segment() -> None:
    # purchase days not conclusive (gap 60 < 90) but the customer had been marked at risk
    profile = buyer(100, 160)
    assert lifecycle(profile, 165) == "active"
    assert lifecycle(profile, 165, previous="at_risk") == "reactivated"
    assert lifecycle(profile, 165, previous="lapsed") == "reactivated"
    assert lifecycle(profile, 165, previous="active") == "active"
    assert lifecycle(profile, 160 + 30, previous="at_risk") == "active"  # bought 30 days ago


def test_visitors_are_not_reactivated() -> None:
    assert lifecycle(visitor(0, 500), 500, previous="lapsed") == "active"


def test_lifecycle_thresholds_are_configurable() -> None:
    config = SegmentConfig(lifecycle_active_days=10, lifecycle_lapsed_days=20,
                           lifecycle_new_days=5, lifecycle_reactivated_days=3)
    assert lifecycle(buyer(0, 50), 60, config=config) == "at_risk"
    assert lifecycle(buyer(0, 50), 52, config=config) == "reactivated"
    assert lifecycle(buyer(0, 50), 53, config=config) == "active"


def test_last_return_day() -> None:
    assert last_return_day({}, 90) is None
    assert last_return_day({"5": 1.0}, 90) is None
    assert last_return_day({"5": 1.0, "94": 1.0}, 90) is None
    assert last_return_day({"5": 1.0, "95": 1.0}, 90) == 95
    assert last_return_day({"5": 1.0, "200": 1.0, "210": 1.0, "400": 1.0}, 90) == 400
    assert last_return_day({"5": 1.0, "200": 1.0, "210": 1.0}, 90) == 200


def test_lifecycle_reasons() -> None:
    assert assign_lifecycle(buyer(100, 500), 600 * DAY, None, CONFIG).reason == (
        "last purchase 100 days ago, 90+ days"
    )
    assert assign_lifecycle(buyer(100, 300), 302 * DAY, None, CONFIG).reason == (
        "bought again 2 days ago after a gap of 90+ days"
    )


# -- journey ---------------------------------------------------------------------------------------


def browsing(views: int = 0, sessions: int = 1, cart: int = 0, orders: int = 0) -> dict[str, Any]:
    return {
        "counts": {"product_view": views, "sessions": sessions},
        "cart": {"items": {f"p{i}": {"qty": 1, "price": 1.0, "category": "c"}
                           for i in range(cart)}, "value": float(cart)},
        "purchases": {"orders": orders, "total": 10.0 * orders},
    }


@pytest.mark.parametrize(
    ("profile", "stage"),
    [
        (browsing(), "anonymous_visitor"),
        (browsing(views=2, sessions=1), "anonymous_visitor"),
        (browsing(views=3, sessions=1), "engaged_browser"),
        (browsing(views=4, sessions=1), "engaged_browser"),
        (browsing(views=0, sessions=2), "engaged_browser"),
        (browsing(views=9, sessions=5, cart=1), "cart_builder"),
        (browsing(cart=1, orders=1), "first_time_buyer"),
        (browsing(orders=2), "repeat_buyer"),
        (browsing(orders=4), "repeat_buyer"),
        (browsing(orders=5), "loyal"),
        (browsing(orders=6), "loyal"),
        ({}, "anonymous_visitor"),
    ],
)
def test_journey_stages(profile: dict[str, Any], stage: str) -> None:
    assert assign_journey(profile, CONFIG).segment == stage


def test_journey_thresholds_are_configurable() -> None:
    config = SegmentConfig(journey_engaged_product_views=10, journey_engaged_sessions=3,
                           journey_loyal_orders=3)
    assert assign_journey(browsing(views=9, sessions=2), config).segment == "anonymous_visitor"
    assert assign_journey(browsing(orders=3), config).segment == "loyal"


def test_journey_reason() -> None:
    assert assign_journey(browsing(cart=2), CONFIG).reason == "never bought; 2 products in the cart"
    assert assign_journey(browsing(orders=1), CONFIG).reason == "1 order"


# -- demographics ----------------------------------------------------------------------------------


def test_demographics_declared() -> None:
    profile = {"attributes": {"age_band": "25-34", "gender": "non_binary", "country": "GB"},
               "location": {"country": "FR"}}
    assert {k: a.segment for k, a in assign_demographics(profile).items()} == {
        "age_band": "25-34", "gender": "non_binary", "country": "GB"}


def test_demographics_country_from_context() -> None:
    assert assign_demographics({"location": {"country": "FR"}})["country"] == (
        "FR", "seen in event context")


@pytest.mark.parametrize("profile", [{}, {"attributes": {}, "location": {}},
                                     {"attributes": {"age_band": "", "gender": None,
                                                     "country": 5},
                                      "location": {"country": ""}},
                                     {"attributes": None, "location": None}])
def test_demographics_unknown(profile: dict[str, Any]) -> None:
    assert {a.segment for a in assign_demographics(profile).values()} == {"unknown"}
