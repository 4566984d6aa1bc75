"""assign_all over a full profile, custom rules seeing fresh segments, and transitions."""

from __future__ import annotations

import inspect
from typing import Any

import pytest

import streamproc.segments as segments_package
from streamproc.segments import (
    Assignment,
    SegmentConfig,
    Transition,
    assign_all,
    assign_deferred,
    changed,
    parse_rules,
)
from streamproc.segments.assignment import Deferred
from streamproc.segments.builtin import SEGMENTATIONS

DAY = 86_400_000
NOW = 20_000 * DAY
CONFIG = SegmentConfig()


def full_profile() -> dict[str, Any]:
    """The extended profile shape, filled in."""
    last = NOW - 2 * DAY
    return {
        "customer_id": "c1",
        "first_seen_ms": NOW - 400 * DAY, "last_seen_ms": NOW,
        "counts": {"page_view": 40, "product_view": 25, "sessions": 12, "purchase": 7},
        "session": {"id": "s1", "start_ms": NOW, "last_ms": NOW, "views": 1,
                    "product_views": 1, "searches": 0, "products": ["p1"],
                    "categories": {"shoes": 1}},
        "cart": {"items": {}, "value": 0.0, "updated_ms": None},
        "purchases": {"orders": 7, "total": 589.4, "first_ms": NOW - 300 * DAY,
                      "last_ms": last,
                      "days": {str(20_000 - d): 84.2 for d in (300, 250, 200, 150, 100, 50, 2)}},
        "rfm": {"frequency": 6, "recency": 298.0, "T": 300.0, "monetary_value": 84.2},
        "affinities": {"categories": {"shoes": 2.5}, "brands": {}},
        "engagement": {"email": {"sent": 3, "opened": 1, "clicked": 0, "converted": 0,
                                 "unsubscribed": 0, "last_ms": NOW}},
        "attributes": {"age_band": "35-44", "gender": "female", "country": "GB"},
        "consent": {"email": {"granted": True, "source": "web_form", "ts_ms": NOW}},
        "device": "mobile",
        "location": {"locale": "en-GB", "country": "GB", "city": "Leeds"},
        "activity": {"product_view:shoes": {str(20_000): 3}, "purchase": {str(19_998): 1}},
        "segments": {"lifecycle": "active", "rfm": "loyal"},
        "scores": {"intent": 0.31},
        "cluster": {"id": 2, "about": "shoes, mobile"},
    }


def test_assign_all_builtin() -> None:
    out = assign_all(full_profile(), NOW, None, None, CONFIG)
    assert {k: a.segment for k, a in out.items()} == {
        "rfm": "potential_loyalists", "value_tier": "profitable", "lifecycle": "active",
        "journey": "loyal", "age_band": "35-44", "gender": "female", "country": "GB",
        "intent": "warm", "cluster": "2",
    }
    assert out["rfm"].reason == ("R5 F4 M3: bought 2 days ago, 6 repeat purchase days, "
                                 "84.20 per order")
    assert set(out) == set(SEGMENTATIONS)
    assert all(isinstance(a, Assignment) and a.reason for a in out.values())


def test_assign_all_uses_base_cuts_and_defaults_for_missing_dimensions() -> None:
    # a base where 6 repeat days beats everybody, recency left to the defaults
    out = assign_all(full_profile(), NOW, {"frequency": (0, 0, 0, 0),
                                           "monetary": (0, 0, 0, 0)}, None, CONFIG)
    assert out["rfm"].segment == "champions"
    assert out["rfm"].reason.startswith("R5 F5 M5")


def test_assign_all_empty_profile() -> None:
    out = assign_all({"customer_id": "c2"}, NOW, None, None, CONFIG)
    assert {k: a.segment for k, a in out.items()} == {
        "rfm": "prospect", "value_tier": "unprofitable", "lifecycle": "new",
        "journey": "anonymous_visitor", "age_band": "unknown", "gender": "unknown",
        "country": "unknown",
    }


def test_lifecycle_reads_the_previous_segment() -> None:
    profile = full_profile()
    # last purchase gap 48 days: only the previous segment makes it a return
    assert assign_all(profile, NOW, None, None, CONFIG)["lifecycle"].segment == "active"
    profile["segments"]["lifecycle"] = "at_risk"
    assert assign_all(profile, NOW, None, None, CONFIG)["lifecycle"].segment == "reactivated"


def test_custom_rules_see_fresh_builtin_segments() -> None:
    rules = parse_rules({"segments": [
        {"name": "potential", "description": "Potential loyalists on mobile",
         "when": {"all": [{"field": "segments.rfm", "op": "==", "value": "potential_loyalists"},
                          {"field": "device", "op": "==", "value": "mobile"}]}},
        {"name": "shoes", "when": {"count": {"event": "product_view", "category": "shoes",
                                             "within_days": 7, "at_least": 4}}},
    ]}, event_types={"product_view"})
    out = assign_all(full_profile(), NOW, None, rules, CONFIG)
    assert out["custom.potential"] == Assignment("member", "Potential loyalists on mobile")
    assert out["custom.shoes"] == Assignment("not_member", "does not match the rule shoes")
    assert list(out)[-2:] == ["custom.potential", "custom.shoes"]


def test_assign_all_does_not_modify_the_profile() -> None:
    profile = full_profile()
    rules = parse_rules({"segments": [{"name": "x", "when": {"field": "device",
                                                             "op": "exists"}}]},
                        event_types={"purchase"})
    assign_all(profile, NOW, None, rules, CONFIG)
    assert profile == full_profile()


def test_changed() -> None:
    new = {"rfm": Assignment("champions", "R5 F5 M5: ..."),
           "journey": Assignment("loyal", "7 orders"),
           "custom.a": Assignment("member", "why")}
    previous = {"rfm": "loyal", "journey": "loyal", "custom.gone": "member", "other": "x"}
    assert changed(previous, new) == [
        Transition("rfm", "loyal", "champions", "R5 F5 M5: ..."),
        Transition("custom.a", None, "member", "why"),
        Transition("custom.gone", "member", None, "the custom segment no longer exists"),
    ]
    assert changed({"rfm": "champions", "journey": "loyal", "custom.a": "member"}, new) == []


@pytest.mark.parametrize("name", segments_package.__all__)
def test_public_names_exist(name: str) -> None:
    assert hasattr(segments_package, name)


def test_assign_all_signature() -> None:
    assert list(inspect.signature(assign_all).parameters) == [
        "profile", "now_ms", "rfm_cuts", "rules", "config", "changed_parts"]


@pytest.mark.parametrize("days_later", [0, 1, 29, 31, 95, 200])
@pytest.mark.parametrize("shape", ["buyer", "browser", "cart", "empty", "away"])
def test_deferred_reasons_are_the_reasons_assign_all_gives(shape: str, days_later: int) -> None:
    p = full_profile()
    if shape != "buyer":
        p["purchases"] = {"orders": 0, "total": 0.0, "first_ms": None, "last_ms": None,
                          "days": {}}
        p.pop("rfm")
    if shape == "cart":
        p["cart"]["items"] = {"p1": {"qty": 1, "price": 9.0, "category": "shoes"}}
    if shape == "empty":
        p = {"customer_id": "c2"}
    if shape == "away":
        p["segments"]["lifecycle"] = "at_risk"
    now = NOW + days_later * DAY
    eager = assign_all(p, now, None, None, CONFIG)
    lazy = assign_deferred(p, now, None, None, CONFIG)
    assert {k: (a.segment, a.reason) for k, a in lazy.items()} == {
        k: tuple(a) for k, a in eager.items()}
    assert {type(lazy[k]) for k in ("rfm", "lifecycle", "journey")} == {Deferred}


def test_changed_builds_only_the_reasons_of_moves() -> None:
    def unread() -> str:
        raise AssertionError("the reason of a segment that did not move was built")

    new = {"rfm": Deferred("loyal", unread), "journey": Deferred("loyal", lambda: "5 orders")}
    assert changed({"rfm": "loyal", "journey": "repeat_buyer"}, new) == [
        Transition("journey", "repeat_buyer", "loyal", "5 orders")]
