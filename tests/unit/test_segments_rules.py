"""Custom segment rules: the example loads, each kind of invalid file gives a located error,
and compiled conditions evaluate correctly (count windows, missing fields, ops)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
import pytest
import yaml

from streamproc.errors import ConfigError
from streamproc.events.schemas import schema_dir
from streamproc.segments.rules import RuleSet, load_rules, parse_rules

DAY = 86_400_000
NOW = 20_000 * DAY + 15 * 3_600_000  # 15:00 on epoch day 20000
TODAY = 20_000
EXAMPLE = schema_dir() / "examples" / "segment-rules.yaml"
EVENT_TYPES = {"page_view", "product_view", "search", "cart_add", "purchase"}


def rules(*conditions: Any, **kwargs: Any) -> RuleSet:
    doc = {"segments": [{"name": f"r{i}", "when": c} for i, c in enumerate(conditions)]}
    return parse_rules(doc, event_types=kwargs.pop("event_types", EVENT_TYPES), **kwargs)


def problems(doc: Any, **kwargs: Any) -> list[str]:
    with pytest.raises(ConfigError) as info:
        parse_rules(doc, event_types=EVENT_TYPES, **kwargs)
    lines = str(info.value).splitlines()
    assert lines[0].endswith("in the segment rules:")
    return [line.strip() for line in lines[1:]]


def one(when: Any, **kwargs: Any) -> list[str]:
    return problems({"segments": [{"name": "ok", "when": when}]}, **kwargs)


def holds(condition: Any, profile: dict[str, Any], now_ms: int = NOW) -> bool:
    return rules(condition).evaluate(profile, now_ms)["r0"]


# -- loading ---------------------------------------------------------------------------------------


def test_example_file_loads_with_the_real_event_types() -> None:
    loaded = load_rules(EXAMPLE)
    assert loaded.names[:2] == ("shoe_browsers_not_buying", "big_spenders_on_mobile")


def test_example_file_matches_the_brief() -> None:
    doc = yaml.safe_load(EXAMPLE.read_text())
    first = doc["segments"][0]["when"]["all"]
    assert first[0] == {"count": {"event": "product_view", "category": "shoes",
                                  "within_days": 7, "at_least": 3}}


def test_json_rules_file(tmp_path: Path) -> None:
    path = tmp_path / "rules.json"
    doc = {"segments": [{"name": "a", "when": {"field": "device", "op": "exists"}}]}
    path.write_bytes(orjson.dumps(doc))
    assert load_rules(path, event_types=EVENT_TYPES).names == ("a",)


def test_empty_rule_list_is_valid() -> None:
    assert len(parse_rules({"segments": []}, event_types=EVENT_TYPES)) == 0


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("segments: [", "not valid YAML"),
        ("", "the file is empty"),
        ("- a\n- b", "top level: must be object"),
        ("segment: []", "top level: missing 'segments'"),
        ("segments: {}", "segments: must be array"),
    ],
)
def test_unreadable_documents(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "rules.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=message):
        load_rules(path, event_types=EVENT_TYPES)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        load_rules(tmp_path / "nope.yaml")


def test_invalid_json(tmp_path: Path) -> None:
    path = tmp_path / "rules.json"
    path.write_text("{segments: []}")
    with pytest.raises(ConfigError, match="not valid JSON"):
        load_rules(path)


# -- located errors --------------------------------------------------------------------------------


def test_window_longer_than_activity_kept() -> None:
    doc = {"segments": [
        {"name": "a", "when": {"field": "device", "op": "exists"}},
        {"name": "b", "when": {"all": [
            {"count": {"event": "purchase", "within_days": 45, "at_least": 1}}]}},
    ]}
    assert problems(doc) == [
        "segments[1].when.all[0].count.within_days: 45 is more than the 30 days of activity kept"
    ]
    assert problems(doc, activity_days=14)[0].endswith("45 is more than the 14 days of "
                                                       "activity kept")
    parse_rules(doc, activity_days=45, event_types=EVENT_TYPES)


def test_all_problems_are_listed() -> None:
    doc = {"segments": [
        {"name": "Bad", "when": {"field": "device", "op": "exists"}},
        {"name": "dup", "when": {"count": {"event": "purchas", "within_days": 7,
                                           "at_least": 1}}},
        {"name": "dup", "when": {"not": {"field": "device", "op": "in", "value": "mobile"}}},
    ]}
    assert problems(doc) == [
        "segments[0].name: must match pattern ^[a-z][a-z0-9_]{0,63}$, got 'Bad'",
        "segments[1].when.count.event: unknown event type 'purchas'; known: cart_add, "
        "page_view, product_view, purchase, search",
        "segments[2].name: 'dup' is already the name of segments[1]",
        "segments[2].when.not.value: 'in' needs a list of values, got 'mobile'",
    ]


@pytest.mark.parametrize(
    ("when", "expected"),
    [
        ({"field": "device", "op": "exists", "value": 1}, ".value: 'exists' takes no value"),
        ({"field": "device", "op": "=="}, ": '==' needs a value"),
        ({"field": "device", "op": "==", "value": ["a"]},
         ".value: '==' compares with one value, got a list; use 'in' for a list"),
        ({"field": "purchases.total", "op": "<", "value": True},
         ".value: '<' needs a number or a string, got True"),
        ({"field": "purchases.total", "op": ">=", "value": [1]},
         ".value: '>=' needs a number or a string, got [1]"),
        ({"field": "attributes.country", "op": "not_in", "value": "GB"},
         ".value: 'not_in' needs a list of values, got 'GB'"),
        ({"field": "attributes.country", "op": "in", "value": ["GB", False]},
         ".value: mixes booleans and strings"),
        ({"field": "device", "op": "~", "value": 1}, ".op: must be one of"),
        ({"field": "purchase.total", "op": ">", "value": 1},
         ".field: unknown profile field 'purchase'; known: activity,"),
        ({"field": "purchases.totl", "op": ">", "value": 1},
         ".field: unknown field purchases.'totl'; "
         "known: average, days, first_ms, last_ms, orders, total"),
        ({"field": "purchases.total.x", "op": ">", "value": 1},
         ".field: purchases.total is a value; it has no field 'x'"),
        ({"field": "purchases..total", "op": ">", "value": 1}, ".field: must match pattern"),
        ({"field": "segments.rfm", "op": "==", "value": "champion"},
         ".value: rfm has no segment 'champion'; known: champions,"),
        ({"field": "segments.lifecycle", "op": "in", "value": ["lapsed", "gone"]},
         ".value: lifecycle has no segment 'gone'"),
        ({"field": "segments.tier", "op": "==", "value": "x"},
         ".field: unknown segmentation 'tier'"),
        ({"field": "segments.custom.nope", "op": "==", "value": "member"},
         ".field: no rule named 'nope' in this file"),
        ({"field": "segments.custom.ok", "op": "==", "value": "yes"},
         ".value: custom.ok has no segment 'yes'; known: member, not_member"),
        ({"field": "device", "op": "==", "value": 1, "extra": 2},
         ": unknown key 'extra'; expected field, op, value"),
        ({"count": {"event": "purchase", "within_days": 7}}, ".count: give at_least, at_most"),
        ({"count": {"event": "purchase", "within_days": 7, "at_least": 3, "at_most": 2}},
         ".count: at_least 3 is more than at_most 2: never true"),
        ({"count": {"event": "purchase", "within_days": 0, "at_least": 1}},
         ".count.within_days: must be bigger than or equal to 1, got 0"),
        ({"count": {"event": "purchase", "at_least": 1}}, ".count: missing 'within_days'"),
        ({"count": {"event": "purchase", "within_days": 7, "at_least": -1}},
         ".count.at_least: must be bigger than or equal to 0"),
        ({"count": {"event": "purchase", "category": "", "within_days": 7, "at_least": 1}},
         ".count.category: must be longer than or equal to 1 characters"),
        ({"count": {"event": "purchase", "days": 7, "within_days": 7, "at_least": 1}},
         ".count: unknown key 'days'"),
        ({"all": []}, ".all: must contain at least 1 items, got []"),
        ({"any": "x"}, ".any: must be array"),
        ({"all": [{"field": "device", "op": "exists"}], "any": []},
         ": a condition needs exactly one of all, any, not, count or field"),
        ({}, ": a condition needs exactly one of all, any, not, count or field (with op and "
             "value), got nothing"),
        ("device == mobile", ": a condition must be a mapping, got 'device == mobile'"),
        ({"not": [{"field": "device", "op": "exists"}]}, ".not: a condition must be a mapping"),
    ],
)
def test_each_kind_of_invalid_condition(when: Any, expected: str) -> None:
    found = one(when)
    assert len(found) == 1, found
    assert found[0].startswith("segments[0].when" + expected), found[0]


def test_nested_locations() -> None:
    when = {"any": [{"field": "device", "op": "exists"},
                    {"all": [{"not": {"count": {"event": "x", "within_days": 3,
                                                "at_least": 1}}}]}]}
    assert one(when) == ["segments[0].when.any[1].all[0].not.count.event: unknown event type "
                         "'x'; known: cart_add, page_view, product_view, purchase, search"]


def test_rule_level_problems() -> None:
    assert problems({"segments": [{"name": "a"}]}) == ["segments[0]: missing 'when'"]
    assert problems({"segments": [{"name": "a", "when": {"field": "device", "op": "exists"},
                                   "owner": "me"}]}) == [
        "segments[0]: unknown key 'owner'; expected name, description, when"]
    assert problems({"segments": ["a"]}) == ["segments[0]: must be object, got 'a'"]
    assert problems({"segments": [{"name": "a" * 65, "when": {"field": "device",
                                                              "op": "exists"}}]})[0].startswith(
        "segments[0].name: must be shorter than or equal to 64 characters")
    assert problems({"segments": [], "version": 2}) == [
        "top level: unknown key 'version'; expected segments, allow_sensitive, sensitive"]


def test_depth_is_limited() -> None:
    when: dict[str, Any] = {"field": "device", "op": "exists"}
    for _ in range(8):
        when = {"not": when}
    assert one(when) == ["segments[0].when" + ".not" * 8 + ": conditions nest deeper than 8 "
                         "levels"]
    rules(when["not"])  # 8 levels are fine


# -- evaluation ------------------------------------------------------------------------------------


def activity(**per_key: dict[int, int]) -> dict[str, Any]:
    """{"product_view:shoes": {days_ago: count}} -> profile with epoch-day string keys."""
    return {"activity": {key.replace("__", ":"): {str(TODAY - ago): n for ago, n in days.items()}
                         for key, days in per_key.items()}}


SHOES_3_IN_7 = {"count": {"event": "product_view", "category": "shoes", "within_days": 7,
                          "at_least": 3}}


@pytest.mark.parametrize(
    ("days", "expected"),
    [
        ({0: 3}, True),
        ({6: 3}, True),  # 6 days ago: the oldest day of a 7-day window
        ({7: 3}, False),  # 7 days ago: outside
        ({8: 3}, False),  # 8 days ago: outside
        ({0: 1, 3: 1, 6: 1}, True),
        ({0: 1, 3: 1, 8: 5}, False),
        ({0: 2}, False),
        ({-1: 3}, True),  # a day after now_ms (events out of order) is recent
    ],
)
def test_count_window(days: dict[int, int], expected: bool) -> None:
    assert holds(SHOES_3_IN_7, activity(product_view__shoes=days)) is expected


def test_count_window_is_in_calendar_days() -> None:
    profile = activity(product_view__shoes={6: 3})
    assert holds(SHOES_3_IN_7, profile, TODAY * DAY) is True  # 6 days ago at midnight
    assert holds(SHOES_3_IN_7, profile, (TODAY + 1) * DAY) is False  # next day: 7 days ago


def test_count_category_and_type_are_separate_counters() -> None:
    profile = activity(product_view={0: 10}, product_view__bags={0: 10})
    assert holds(SHOES_3_IN_7, profile) is False
    any_view = {"count": {"event": "product_view", "within_days": 7, "at_least": 10}}
    assert holds(any_view, profile) is True


@pytest.mark.parametrize(
    ("n", "at_least", "at_most", "expected"),
    [(2, 3, None, False), (3, 3, None, True), (4, 3, None, True),
     (0, None, 0, True), (1, None, 0, False), (4, 2, 4, True), (5, 2, 4, False),
     (1, 2, 4, False)],
)
def test_count_bounds(n: int, at_least: int | None, at_most: int | None,
                      expected: bool) -> None:
    spec: dict[str, Any] = {"event": "purchase", "within_days": 30}
    if at_least is not None:
        spec["at_least"] = at_least
    if at_most is not None:
        spec["at_most"] = at_most
    profile = activity(purchase={1: n}) if n else {}
    assert holds({"count": spec}, profile) is expected


def test_brief_example_shoe_browsers() -> None:
    rule = {"all": [SHOES_3_IN_7,
                    {"not": {"count": {"event": "purchase", "within_days": 7, "at_least": 1}}}]}
    assert holds(rule, activity(product_view__shoes={1: 3})) is True
    assert holds(rule, activity(product_view__shoes={1: 3}, purchase={2: 1})) is False
    assert holds(rule, activity(product_view__shoes={1: 3}, purchase={8: 1})) is True


PROFILE: dict[str, Any] = {
    "customer_id": "c1",
    "device": "mobile",
    "purchases": {"orders": 3, "total": 500.0},
    "attributes": {"country": "GB", "extra": {"vip": True}},
    "session": {"products": ["p1", "p2"]},
    "affinities": {"categories": {"shoes": 0.8}},
    "segments": {"rfm": "champions", "custom.other": "member"},
    "location": {"city": "Manchester"},
    "first_seen_ms": None,
}


@pytest.mark.parametrize(
    ("field", "op", "value", "expected"),
    [
        ("purchases.total", ">=", 499.99, True), ("purchases.total", ">=", 500, True),
        ("purchases.total", ">=", 500.01, False), ("purchases.total", ">", 500, False),
        ("purchases.total", "<", 500, False), ("purchases.total", "<=", 500, True),
        ("purchases.total", "==", 500, True), ("purchases.total", "!=", 500, False),
        ("purchases.orders", "in", [1, 3], True), ("purchases.orders", "not_in", [1, 3], False),
        ("device", "==", "mobile", True), ("device", "!=", "desktop", True),
        ("device", "<", "n", True),  # strings order with strings
        ("device", "<", 5, False),  # and never with numbers
        ("purchases.total", "==", "500", False),
        ("attributes.extra.vip", "==", True, True), ("attributes.extra.vip", "==", 1, False),
        ("attributes.country", "in", ["GB", "IE"], True),
        ("attributes.country", "not_in", ["GB", "IE"], False),
        ("attributes.country", "not_in", ["FR"], True),
        ("session.products", "contains", "p2", True),
        ("session.products", "contains", "p3", False),
        ("session.products.0", "==", "p1", True), ("session.products.5", "exists", None, False),
        ("affinities.categories", "contains", "shoes", True),
        ("location.city", "contains", "chest", True),
        ("purchases.total", "contains", "5", False),
        ("affinities.categories.shoes", ">", 0.5, True),
        ("segments.rfm", "==", "champions", True),
        ("segments.custom.other", "==", "member", True),
        ("device", "exists", None, True), ("device", "missing", None, False),
        ("first_seen_ms", "exists", None, False),  # null is missing
        ("first_seen_ms", "missing", None, True),
    ],
)
def test_field_ops(field: str, op: str, value: Any, expected: bool) -> None:
    condition: dict[str, Any] = {"field": field, "op": op}
    if value is not None:
        condition["value"] = value
    doc = {"segments": [{"name": "other", "when": condition}]}
    assert parse_rules(doc, event_types=EVENT_TYPES).evaluate(PROFILE, NOW) == {
        "other": expected}


@pytest.mark.parametrize("op", ["==", "!=", "<", "<=", ">", ">=", "in", "not_in", "contains"])
@pytest.mark.parametrize("field", ["attributes.gender", "cart.value", "counts.page_view.x",
                                   "session.products.9", "rfm.T"])
def test_missing_fields_make_comparisons_false(op: str, field: str) -> None:
    value: Any = [1, "a"] if op in ("in", "not_in") else 1
    profile = {"counts": {"page_view": 5}, "cart": {"value": None}, "rfm": None,
               "session": {"products": ["p1"]}}
    assert holds({"field": field, "op": op, "value": value}, profile) is False
    assert holds({"field": field, "op": "missing"}, profile) is True


def test_any_all_not() -> None:
    yes = {"field": "device", "op": "exists"}
    no = {"field": "device", "op": "missing"}
    profile = {"device": "mobile"}
    assert holds({"all": [yes, yes]}, profile) and not holds({"all": [yes, no]}, profile)
    assert holds({"any": [no, yes]}, profile) and not holds({"any": [no, no]}, profile)
    assert holds({"not": no}, profile) and not holds({"not": yes}, profile)


def test_malformed_profile_data_is_false_not_an_exception() -> None:
    profile = {"activity": {"purchase": {"not-a-day": 1}}}
    assert holds({"count": {"event": "purchase", "within_days": 3, "at_least": 1}},
                profile) is False


def test_evaluate_returns_every_rule_in_order() -> None:
    loaded = rules({"field": "device", "op": "exists"}, {"field": "device", "op": "missing"})
    assert list(loaded.evaluate({}, NOW).items()) == [("r0", False), ("r1", True)]
