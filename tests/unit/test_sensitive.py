"""No creepy personalisation: sensitive attributes refused in the segment rules and the decision
catalogue unless the file allows them with a reason, and the limit on decisions that reveal
tracking ("you looked at X")."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml

from streamproc.api.deciding import served_event
from streamproc.decisions.catalogue import (
    Catalogue,
    check_catalogue,
    default_catalogue_path,
    describe,
    load_catalogue,
    parse_catalogue,
)
from streamproc.decisions.engine import Engine
from streamproc.decisions.exposure import MAX_REVEALS
from streamproc.errors import ConfigError
from streamproc.segments.rulecheck import check_rules
from streamproc.segments.sensitive import SensitivePolicy

from .helpers import GRANTED
from .test_decisions_engine import Customer, Recorder, view

SHIPPED: dict[str, Any] = yaml.safe_load(default_catalogue_path().read_text())
TYPES = {"purchase", "product_view", "page_view"}


# -- the vocabulary ------------------------------------------------------------------------------


@pytest.mark.parametrize(("path", "categories"), [
    ("attributes.extra.religion", ("religion",)),
    ("attributes.extra.religious_holidays", ("religion",)),
    ("affinities.categories.pregnancy_tests", ("health",)),
    ("activity.purchase:diabetes-care", ("health",)),
    ("attributes.extra.ethnic_origin", ("ethnicity",)),
    ("attributes.extra.sexual_orientation", ("sexual_orientation",)),
    ("attributes.extra.politics", ("political_opinion",)),
    ("attributes.extra.trade_union_member", ("trade_union",)),
    ("attributes.extra.dna_kit_result", ("genetic",)),
    ("attributes.extra.fingerprint_hash", ("biometric",)),
    ("attributes.extra.credit_score", ("financial_distress",)),
    ("attributes.extra.in_arrears", ("financial_distress",)),
    ("attributes.extra.DebtLevel", ("financial_distress",)),  # case does not hide it
    ("attributes.extra.health_debt", ("health", "financial_distress")),
])
def test_the_vocabulary_recognises_each_category(path: str, categories: tuple[str, ...]) -> None:
    assert SensitivePolicy().categories(path) == categories


@pytest.mark.parametrize("path", [
    "affinities.categories.shoes", "purchases.total", "attributes.extra.party_supplies",
    "affinities.categories.race_bikes", "attributes.extra.member_benefits", "segments.rfm",
    "attributes.country", "affinities.brands.general_store", "attributes.extra.no_baby_offers",
    "cart.value",
])
def test_ordinary_shop_words_are_not_sensitive(path: str) -> None:
    assert SensitivePolicy().categories(path) == ()


def test_a_file_declares_its_own_sensitive_names_and_covers_what_is_below() -> None:
    policy = SensitivePolicy.of({"sensitive": [{"attribute": "attributes.extra.seg_x7",
                                                "category": "health"}]})
    assert policy.categories("attributes.extra.seg_x7") == ("health",)
    assert policy.categories("attributes.extra.seg_x7.level") == ("health",)
    assert policy.categories("attributes.extra.seg_x70") == ()


# -- segment rules ---------------------------------------------------------------------------------


def rules(when: dict[str, Any], **top: Any) -> list[str]:
    return check_rules({"segments": [{"name": "r", "when": when}], **top}, activity_days=30,
                       event_types=TYPES)


RELIGION = {"field": "attributes.extra.religion", "op": "==", "value": "x"}


def test_a_rule_on_a_sensitive_attribute_is_refused_with_where_and_what_to_do() -> None:
    assert rules({"all": [{"field": "purchases.total", "op": ">", "value": 1}, RELIGION]}) == [
        "segments[0].when.all[1].field: attributes.extra.religion is sensitive data (religion, "
        "GDPR art. 9): remove it, or allow it with a reason under allow_sensitive: "
        "[{attribute: attributes.extra.religion, category: religion, reason: ...}]"]


def test_counts_and_contains_reach_sensitive_categories_too() -> None:
    [count] = rules({"count": {"event": "purchase", "category": "pregnancy_tests",
                               "within_days": 7, "at_least": 1}})
    assert count.startswith("segments[0].when.count: activity.purchase:pregnancy_tests is "
                            "sensitive data (health, GDPR art. 9)")
    [contains] = rules({"field": "affinities.categories", "op": "contains",
                        "value": "debt_advice"})
    assert contains.startswith("segments[0].when.field: affinities.categories.debt_advice is "
                               "sensitive data (financial_distress, financial distress)")


def test_an_allowance_with_a_reason_lets_the_rule_load() -> None:
    allow = [{"attribute": "attributes.extra", "category": "religion",
              "reason": "customers choose their holiday greetings in the account page"}]
    assert rules(RELIGION, allow_sensitive=allow) == []
    # ... for its category only, and a reason is not blank.
    assert len(rules({"field": "attributes.extra.credit_score", "op": ">", "value": 1},
                     allow_sensitive=allow)) == 1
    assert rules(RELIGION, allow_sensitive=[{**allow[0], "reason": "  "}]) == [
        "allow_sensitive[0].reason: say why this use is fair (who agreed, on what basis); it "
        "is shown in the check's output for review"]
    assert rules(RELIGION, allow_sensitive=[{"attribute": "attributes.extra.religion",
                                             "category": "religion"}])[0] == (
        "allow_sensitive[0]: missing 'reason'")


def test_a_declared_attribute_is_refused_like_a_built_in_one() -> None:
    declared = [{"attribute": "attributes.extra.seg_x7", "category": "other"}]
    [problem] = rules({"field": "attributes.extra.seg_x7", "op": "exists"}, sensitive=declared)
    assert "attributes.extra.seg_x7 is sensitive data (other, declared sensitive)" in problem


def test_the_rules_command_refuses_the_file(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                            ) -> None:
    from streamproc.cli import main

    path = tmp_path / "rules.yaml"
    path.write_text(yaml.safe_dump({"segments": [{"name": "devout", "when": RELIGION}]}))
    assert main(["rules", str(path)]) == 1
    out = capsys.readouterr().out
    assert "line 4: segments[0] (name: devout).when.field: attributes.extra.religion is " \
           "sensitive data (religion" in out


# -- the catalogue ---------------------------------------------------------------------------------


def edited(**top: Any) -> dict[str, Any]:
    data = copy.deepcopy(SHIPPED)
    data.update(top)
    return data


def action(data: dict[str, Any], action_id: str) -> dict[str, Any]:
    found: dict[str, Any] = next(a for a in data["actions"] if a["id"] == action_id)
    return found


def test_every_place_of_the_catalogue_is_checked() -> None:
    data = edited()
    offer = action(data, "baby_essentials_15pct")
    offer["exclude"] = {"field": "attributes.extra.in_debt", "op": "==", "value": True}
    offer["requires"] = ["attributes.extra.health_condition"]
    action(data, "cart_reminder")["params_from"]["faith"] = "event.context.religion"
    data["triggers"][1]["when"] = {"field": "attributes.extra.union_member", "op": "exists"}
    data["triggers"][3]["segment_entry"] = {"segmentation": "custom.diabetic_buyers",
                                            "segment": "member"}
    found = check_catalogue(data)
    assert [p.split(" is sensitive data ")[0] for p in found] == [
        "actions[4].params_from.faith: event.context.religion",
        "actions[7].exclude.field: attributes.extra.in_debt",
        "actions[7].requires[0]: attributes.extra.health_condition",
        "triggers[1].when.field: attributes.extra.union_member",
        "triggers[3].segment_entry: segments.custom.diabetic_buyers.member",
    ]


def test_an_allowed_use_loads_and_the_check_shows_it_with_its_reason(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from streamproc.cli import main

    data = edited(allow_sensitive=[{
        "attribute": "attributes.extra.pregnant", "category": "health",
        "reason": "baby club members told us, consent ref. DPO-2026-14"}])
    action(data, "baby_essentials_15pct")["when"] = {
        "field": "attributes.extra.pregnant", "op": "==", "value": True}
    path = tmp_path / "catalogue.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    cat = load_catalogue(path)
    [(where, attribute, category, reason)] = cat.sensitive_uses
    assert reason == "baby club members told us, consent ref. DPO-2026-14"
    assert where.endswith("actions[7] (id: baby_essentials_15pct).when.field")
    assert where.startswith("line ")
    assert (attribute, category) == ("attributes.extra.pregnant", "health")
    assert main(["catalogue", str(path)]) == 0
    assert (f"{where}: attributes.extra.pregnant (health): baby club members told us, "
            "consent ref. DPO-2026-14") in capsys.readouterr().out
    assert "sensitive data allowed: none" in describe(load_catalogue(default_catalogue_path()),
                                                      "x")


# -- tracking reveals ------------------------------------------------------------------------------


YOU_LOOKED_AT = {
    "id": "you_looked_at", "kind": "content", "title": "Still thinking about it?",
    "slots": ["homepage_hero", "email"],
    "when": {"field": "session.product_views", "op": ">=", "value": 1},
    "params_from": {"product": "session.products.0"}, "freshness_hours": 1,
}


def tracking_catalogue(*extra: dict[str, Any], **top: Any) -> Catalogue:
    data = edited(experiments=[], **top)
    data["actions"] += [YOU_LOOKED_AT, *extra]
    return parse_catalogue(data)


def test_browsing_history_in_params_from_reveals_tracking_unless_the_action_says_not() -> None:
    cat = tracking_catalogue({**YOU_LOOKED_AT, "id": "on_site_recent", "reveals_tracking": False})
    assert cat.actions["you_looked_at"].reveals_tracking is True
    assert cat.actions["on_site_recent"].reveals_tracking is False
    assert cat.actions["cart_reminder"].reveals_tracking is False  # a cart is not tracking
    assert (cat.actions["you_looked_at"].reveal_limit.max,
            cat.actions["you_looked_at"].reveal_limit.per_days) == (1, 7.0)  # the default


def test_the_limit_blocks_the_next_reveal_with_its_reason_and_lifts_after_the_window() -> None:
    engine = Engine(tracking_catalogue(), Recorder(), consent_defaults=GRANTED)
    c = Customer(engine)
    view(c, "socks", "2026-03-01T10:00:00Z")
    first = c.request("homepage_hero", "2026-03-01T10:01:00Z")
    assert first["action"] == {"id": "you_looked_at", "kind": "content",
                               "title": "Still thinking about it?", "params": {"product": "x"}}
    again = c.request("homepage_hero", "2026-03-01T10:30:00Z")  # a reload: fresh, re-used
    assert (again["action"]["id"], again["policy"]) == ("you_looked_at", "reuse")
    view(c, "socks", "2026-03-03T10:00:00Z")
    blocked = c.request("homepage_hero", "2026-03-03T10:01:00Z")
    assert blocked["action"]["id"] == "bestsellers_hero"
    assert ("you_looked_at: reveals tracking: 1 such decision in the last 7 days, at most 1 "
            "(reveal_limit)") in blocked["reasons"]
    view(c, "socks", "2026-03-08T10:02:00Z")  # 7 days and a minute after the first
    assert c.request("homepage_hero", "2026-03-08T10:02:00Z")["action"]["id"] == "you_looked_at"


def test_the_limit_counts_every_action_that_reveals_tracking_and_an_action_may_have_its_own(
        ) -> None:
    second = {**YOU_LOOKED_AT, "id": "more_like_it", "title": "More like what you viewed",
              "reveal_limit": {"max": 3, "per_days": 7}}
    engine = Engine(tracking_catalogue(second, reveal_limit={"max": 1, "per_days": 30}),
                    Recorder(), consent_defaults=GRANTED)  # picks the last: more_like_it
    c = Customer(engine)
    picked = []
    for day in range(1, 6):
        view(c, "socks", f"2026-03-0{day}T10:00:00Z")
        d = c.request("homepage_hero", f"2026-03-0{day}T10:01:00Z")
        picked.append(d["action"]["id"])
        if day == 2:  # the file's 1 in 30 days holds for you_looked_at
            assert ("you_looked_at: reveals tracking: 1 such decision in the last 30 days, at "
                    "most 1 (reveal_limit)") in d["reasons"]
    assert picked == ["more_like_it", "more_like_it", "more_like_it", "bestsellers_hero",
                      "bestsellers_hero"]
    assert len(c.p["decisions"]["reveals"]) == 3


def test_a_decision_served_over_http_counts_as_a_reveal() -> None:
    engine = Engine(tracking_catalogue(), Recorder(), consent_defaults=GRANTED)
    api_copy, worker = Customer(engine), Customer(engine)
    for c in (api_copy, worker):
        view(c, "socks", "2026-03-01T10:00:00Z")
    record = api_copy.request("homepage_hero", "2026-03-01T10:01:00Z")
    assert record["action"]["id"] == "you_looked_at"
    event = served_event(engine.current(), record, learning=False)
    engine.served(worker.p, event, 1_772_359_260_000)
    assert worker.p["decisions"]["reveals"] == [1_772_359_260_000]


def test_the_reveals_kept_stay_bounded() -> None:
    engine = Engine(tracking_catalogue(reveal_limit={"max": 20, "per_days": 1}), Recorder(),
                    consent_defaults=GRANTED)
    c = Customer(engine)
    shown = 0
    for day in range(1, 4):
        for hour in range(0, 24, 2):  # every 2 h: stale again (fresh for 1 h), 12 a day
            view(c, "socks", f"2026-03-0{day}T{hour:02d}:00:00Z")
            d = c.request("homepage_hero", f"2026-03-0{day}T{hour:02d}:00:30Z")
            shown += d["action"]["id"] == "you_looked_at"
    assert shown == 36 and len(c.p["decisions"]["reveals"]) == MAX_REVEALS


def test_reveal_settings_that_cannot_apply_are_refused() -> None:
    data = edited()
    action(data, "cart_reminder")["reveal_limit"] = {"max": 2, "per_days": 7}
    action(data, "bestsellers_hero")["reveals_tracking"] = True
    found = check_catalogue(data)
    assert "actions[4].reveal_limit: the action does not reveal tracking (its params_from " \
           "reads no browsing history); set reveals_tracking: true, or remove reveal_limit" in found
    assert ("actions[0]: a neutral action is the same for everyone; remove reveals_tracking"
            in found)
    with pytest.raises(ConfigError):
        parse_catalogue(edited(reveal_limit={"max": 2}))


def test_the_rules_command_shows_the_allowed_uses(tmp_path: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    from streamproc.cli import main

    path = tmp_path / "rules.yaml"
    path.write_text(yaml.safe_dump({"segments": [{"name": "greetings", "when": RELIGION}],
                                    "allow_sensitive": [{
                                        "attribute": "attributes.extra.religion",
                                        "category": "religion",
                                        "reason": "chosen by the customer for greetings"}]}))
    assert main(["rules", str(path)]) == 0
    line = next(i for i, text in enumerate(path.read_text().splitlines(), 1)
                if "field: attributes.extra.religion" in text)
    assert (f"sensitive data allowed:\n  line {line}: segments[0] (name: greetings).when.field: "
            "attributes.extra.religion (religion): chosen by the customer for greetings"
            ) in capsys.readouterr().out
