"""Data you can trust: sources and their levels, min_trust, the neutral fallback and its reason,
the data quality score, and profiles stored before sources were kept."""

from __future__ import annotations

import copy
from typing import Any

import pytest
import yaml

from streamproc.days import DAY_MS
from streamproc.decisions.catalogue import default_catalogue_path, parse_catalogue, parse_time_ms
from streamproc.decisions.engine import Engine
from streamproc.decisions.record import Source
from streamproc.errors import ConfigError
from streamproc.events.schemas import load_event_schemas
from streamproc.settings import Settings
from streamproc.state.profile import ProfileConfig, apply_event, new_profile, upgrade_profile
from streamproc.state.provenance import quality, source_of
from tests.unit.helpers import GRANTED
from tests.unit.test_decisions_engine import VALIDATE, Recorder

SHIPPED = yaml.safe_load(default_catalogue_path().read_text())
DAY0 = "2026-03-01T10:00:00Z"


DEFAULT = ProfileConfig()


def update(p: Any, at: str, source: str | None, config: ProfileConfig = DEFAULT,
           **attributes: Any) -> None:
    data: dict[str, Any] = {"attributes": attributes}
    if source is not None:
        data["source"] = source
    apply_event(p, "profile_update", parse_time_ms(at), data, config)


def decide_hero(engine: Engine, p: Any, at: str) -> dict[str, Any]:
    ts = parse_time_ms(at)
    src = Source("slot_request", f"e-{at}", "c1", at, ts, "streamproc.browsing", 0, 1)
    [record] = engine.decide(p, src, {"slot": "homepage_hero"}, [], ts).records
    VALIDATE(record)
    return record


def engine(levels: dict[str, int] | None = None) -> Engine:
    data = copy.deepcopy(SHIPPED)
    data["experiments"] = []
    return Engine(parse_catalogue(data), Recorder(), consent_defaults=GRANTED,
                  trust_levels=levels)


def test_each_attribute_keeps_its_source_and_time_and_old_events_count_as_crm() -> None:
    p = new_profile("c1")
    update(p, DAY0, None, city="Leeds")
    update(p, "2026-03-02T10:00:00Z", "declared", age_band="25-34")
    assert p["provenance"] == {"city": ["c", parse_time_ms(DAY0)],
                               "age_band": ["d", parse_time_ms("2026-03-02T10:00:00Z")]}
    assert source_of(p, "attributes.city")[0] == "crm"
    assert source_of(p, "affinities.categories.shoes")[0] == "inferred"
    assert source_of(p, "cart.value")[0] == "observed"


def test_the_schema_takes_a_source_and_refuses_an_unknown_one() -> None:
    validate = load_event_schemas()["profile_update"].validate
    body = {"event_id": "e1", "type": "profile_update", "customer_id": "c1", "ts": DAY0,
            "attributes": {"city": "Leeds"}}
    validate(body)
    validate({**body, "source": "declared"})
    with pytest.raises(Exception, match="source must be one of"):
        validate({**body, "source": "gossip"})


def test_trust_levels_are_a_setting_that_says_what_is_wrong() -> None:
    assert Settings.from_env({}).trust_level_map() == {"declared": 3, "observed": 3, "crm": 2,
                                                       "inferred": 1}
    custom = Settings.from_env({"STREAMPROC_TRUST_LEVELS":
                                "declared=5,observed=1,crm=9,inferred=0"})
    assert custom.trust_level_map()["crm"] == 9
    with pytest.raises(ConfigError, match="unknown source 'crn'"):
        Settings.from_env({"STREAMPROC_TRUST_LEVELS": "declared=3,crn=2"})
    with pytest.raises(ConfigError, match="no level for inferred, observed"):
        Settings.from_env({"STREAMPROC_TRUST_LEVELS": "declared=3,crm=2"})


def test_an_offer_needing_declared_data_falls_back_to_neutral_on_crm_data_with_the_reason(
) -> None:
    e = engine()
    p = new_profile("c1")
    update(p, DAY0, "crm", extra={"shoe_size": 42})
    d = decide_hero(e, p, "2026-03-04T10:00:00Z")
    assert d["action"]["id"] == "bestsellers_hero" and d["personalised"] is False
    assert ("picked_in_your_size: data too weak: attributes.extra.shoe_size from crm "
            "(trust 2, 3 days old), needs declared (3) or better") in d["reasons"]

    update(p, "2026-03-04T11:00:00Z", "declared", extra={"shoe_size": 42})
    d = decide_hero(e, p, "2026-03-04T12:00:00Z")
    assert d["action"]["id"] == "picked_in_your_size"
    assert d["action"]["params"]["shoe_size"] == 42
    assert ("data: attributes.extra.shoe_size from declared (trust 3, 1 h old)"
            in d["reasons"])


def test_levels_decide_so_a_shop_that_trusts_its_crm_most_gets_the_offer() -> None:
    p = new_profile("c1")
    update(p, DAY0, "crm", extra={"shoe_size": 42})
    d = decide_hero(engine({"declared": 3, "observed": 3, "crm": 4, "inferred": 1}), p,
                    "2026-03-01T11:00:00Z")
    assert d["action"]["id"] == "picked_in_your_size"


def test_contradictory_sources_are_weak_until_the_next_update_settles_it() -> None:
    e = engine()
    p = new_profile("c1")
    update(p, DAY0, "crm", extra={"shoe_size": 44})
    update(p, "2026-03-02T10:00:00Z", "declared", extra={"shoe_size": 42})
    assert p["provenance"]["extra"][2:] == ["c", parse_time_ms(DAY0)]
    d = decide_hero(e, p, "2026-03-02T11:00:00Z")
    assert d["action"]["id"] == "bestsellers_hero"
    assert any(r.startswith("picked_in_your_size: data contradictory: attributes.extra."
                            "shoe_size from declared") and "differs from what crm said 24 h"
               in r for r in d["reasons"])
    update(p, "2026-03-03T10:00:00Z", "declared", extra={"shoe_size": 42})  # confirmed
    assert decide_hero(e, p, "2026-03-03T11:00:00Z")["action"]["id"] == "picked_in_your_size"


def test_disagreement_outside_the_window_or_from_the_same_source_is_no_conflict() -> None:
    p = new_profile("c1")
    config = ProfileConfig(trust_conflict_days=1)
    update(p, DAY0, "crm", config, city="Leeds")
    update(p, "2026-03-05T10:00:00Z", "declared", config, city="York")  # 4 days later
    assert len(p["provenance"]["city"]) == 2
    update(p, "2026-03-05T11:00:00Z", "declared", config, city="Hull")  # a correction
    assert len(p["provenance"]["city"]) == 2


def test_old_data_fails_max_data_age_with_its_age() -> None:
    p = new_profile("c1")
    update(p, DAY0, "declared", extra={"shoe_size": 42})
    d = decide_hero(engine(), p, "2027-03-05T10:00:00Z")  # over a year later
    assert d["action"]["id"] == "bestsellers_hero"
    assert any(r.startswith("picked_in_your_size: data stale: attributes.extra.shoe_size from "
                            "declared (trust 3, 369 days old), at most 365 days")
               for r in d["reasons"])


def test_a_profile_stored_without_provenance_has_unknown_attributes_and_still_works() -> None:
    old = {"customer_id": "c1", "attributes": {"extra": {"shoe_size": 42}, "city": "Leeds"},
           "consent": {}, "purchases": {"orders": 0, "total": 0.0}}
    p = upgrade_profile(old)
    assert source_of(p, "attributes.city") == ("unknown", None, None)
    d = decide_hero(engine(), p, DAY0)
    assert d["action"]["id"] == "bestsellers_hero"
    assert ("picked_in_your_size: data too weak: attributes.extra.shoe_size from unknown "
            "(trust 0, age unknown), needs declared (3) or better") in d["reasons"]
    assert d["data_quality"] == quality(p, parse_time_ms(DAY0))["score"] == pytest.approx(
        (1 / 7) / 3, abs=0.001)


def test_the_quality_score_counts_completeness_freshness_and_trust() -> None:
    p = new_profile("c1")
    update(p, DAY0, "declared", age_band="25-34", gender="female", postcode="LS1",
           city="Leeds", country="GB", timezone="Europe/London", preferred_language="en-GB")
    assert p["quality"] == {"score": 1.0, "completeness": 1.0, "freshness": 1.0, "trust": 1.0}
    later = quality(p, parse_time_ms(DAY0) + 180 * DAY_MS)  # one half-life on
    assert later["freshness"] == 0.5 and later["score"] == round(2.5 / 3, 3)
    update(p, DAY0, "inferred", gender="male")  # inferred, and contradicting: half of 1/3
    q = p["quality"]
    assert q["trust"] == round((6 + 0.5 / 3) / 7, 3) and q["completeness"] == 1.0


def test_the_catalogue_checks_min_trust() -> None:
    data = copy.deepcopy(SHIPPED)
    data["actions"].append({"id": "x", "kind": "offer", "slots": ["homepage_hero"],
                            "requires": ["cart.value"],
                            "min_trust": {"attributes": "declared", "cart": "gossip"}})
    data["actions"].append({"id": "y", "kind": "offer", "slots": ["homepage_hero"],
                            "min_trust": "crm"})
    with pytest.raises(ConfigError) as caught:
        parse_catalogue(data)
    text = str(caught.value)
    assert "min_trust.cart: unknown source 'gossip'" in text
    assert "min_trust.attributes: the action reads nothing under attributes" in text
    assert "y).min_trust: the action reads no profile field" in text or (
        "min_trust: the action reads no profile field" in text)


def test_a_min_trust_per_path_gates_only_the_fields_under_it() -> None:
    data = copy.deepcopy(SHIPPED)
    data["experiments"] = []
    for a in data["actions"]:
        if a["id"] == "picked_in_your_size":
            a["min_trust"] = {"cart": "declared"}
            a["requires"] = ["cart.value"]
    e = Engine(parse_catalogue(data), Recorder(), consent_defaults=GRANTED)
    p = new_profile("c1")
    update(p, DAY0, "inferred", extra={"shoe_size": 42})
    p["cart"]["value"], p["cart"]["updated_ms"] = 10.0, parse_time_ms(DAY0)
    d = decide_hero(e, p, "2026-03-01T10:30:00Z")
    assert d["action"]["id"] == "picked_in_your_size"  # cart is observed (3); size not gated
    assert ("data: attributes.extra.shoe_size from inferred (trust 1, 30 min old); cart.value "
            "from observed (trust 3, 30 min old)") in d["reasons"]


def test_a_contextual_pick_names_its_features_and_the_trust_of_their_data() -> None:
    from tests.unit.test_contextual import cart_add, engine_with, warm_cart_drawer

    record = cart_add(engine_with(warm_cart_drawer()), "mobile")["record"]
    assert record["policy"].startswith("linucb")
    assert any("features that drove it" in r for r in record["reasons"])
    assert ("features from observed data (trust 3): basket, basket_items, device_mobile"
            in record["reasons"]), record["reasons"]
    # The action's own data, too: cart.value, which both cart actions read.
    assert "data: cart.value from observed (trust 3, 0 min old)" in record["reasons"]


def test_streamproc_catalogue_shows_the_trust_an_action_needs() -> None:
    from streamproc.decisions.catalogue import describe

    shown = describe(parse_catalogue(copy.deepcopy(SHIPPED)), "catalogue.yaml")
    [line] = [x for x in shown.splitlines() if "picked_in_your_size" in x]
    assert line.endswith("(fresh 24 h, data trusted from declared up)")
