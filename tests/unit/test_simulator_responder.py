"""Simulated customers answering decision records (the pure part of `streamproc respond`)."""

from __future__ import annotations

from typing import Any

from streamproc.events.schemas import load_event_schemas
from streamproc.simulator.population import Population
from streamproc.simulator.preferences import Preferences
from streamproc.simulator.responder import Responder, ResponderStats

POPULATION = Population.generate(30, seed=7)


def record(i: int, customer: str, action: str = "running_shoes_10pct", **extra: Any,
           ) -> dict[str, Any]:
    out = {"decision_id": f"d{i}", "customer_id": customer, "ts": "2026-03-01T10:00:00.000Z",
           "action": {"id": action, "kind": "offer"}, "personalised": True}
    out.update(extra)
    return out


def test_simulated_customers_answer_with_valid_feedback_on_the_decision() -> None:
    responder, stats = Responder(POPULATION, Preferences(seed=7)), ResponderStats()
    schemas = load_event_schemas()
    customer = POPULATION.customers[3].customer_id
    events = responder.answer(record(1, customer), stats)
    assert events[0]["outcome"] == "impression" and events[0]["ts"] == "2026-03-01T10:00:00.000Z"
    for event in events:
        schemas[event["type"]].validate(event)
        assert event["customer_id"] == customer
        if event["type"] == "feedback":
            assert event["decision_id"] == "d1"
            assert event["action_id"] == "running_shoes_10pct"
    assert events == Responder(POPULATION, Preferences(seed=7)).answer(record(1, customer),
                                                                       ResponderStats())
    assert stats.answered == 1 and stats.feedback == len(events)


def test_what_is_not_answered_is_counted() -> None:
    responder, stats = Responder(POPULATION, Preferences(seed=7)), ResponderStats()
    known = POPULATION.customers[0].customer_id
    assert responder.answer(record(1, "someone-else"), stats) == []
    assert responder.answer(None, stats) == []
    assert responder.answer(record(2, known), stats) != []
    assert responder.answer(record(3, known, action={"id": "x", "kind": "none"}), stats) == []
    assert responder.answer(record(4, known, ts="yesterday"), stats) == []
    assert stats.skipped == {
        "decisions about customers outside the simulated population": 1,
        "records that are not decisions": 1, "decisions that show nothing": 1,
        "decisions without a valid ts": 1}
    assert "answered 1 decisions" in stats.summary()


def test_neutral_decisions_are_answered_at_the_neutral_rate() -> None:
    prefs = Preferences(seed=7)
    responder = Responder(POPULATION, prefs)
    customer = POPULATION.customers[0]
    responder.answer(record(1, customer.customer_id, "house_default", personalised=False),
                     ResponderStats())
    assert "house_default" in prefs.neutral
    assert prefs.conversion(customer, "house_default") == prefs.conversion(customer,
                                                                           "bestsellers_hero")


def test_feedback_is_held_until_the_wall_clock_reaches_it() -> None:
    from streamproc.events.codec import parse_ts
    from streamproc.simulator.preferences import Preferences as Prefs
    from streamproc.simulator.responder import FeedbackQueue

    prefs = Prefs(seed=7, click_delay_ms=5_000, conversion_delay_ms=60_000)
    customer = POPULATION.customers[0]
    events: list[dict[str, Any]] = []
    for i in range(400):  # enough decisions for clicks and conversions
        events += [e for _, e in prefs.respond(customer, {"decision_id": f"d{i}",
                                                         "ts_ms": 1_000_000,
                                                         "action_id": "hot_intent_bundle"})]
    outcomes = {e["outcome"]: parse_ts(e["ts"]) - 1_000_000 for e in events}
    assert outcomes == {"impression": 0, "click": 5_000, "conversion": 60_000}
    queue = FeedbackQueue()
    for event in events:
        queue.push(parse_ts(event["ts"]), event)
    assert queue.due(999_999) == []
    now = [e["outcome"] for e in queue.due(1_000_000)]
    assert set(now) == {"impression"} and len(now) == 400
    assert {e["outcome"] for e in queue.due(1_059_999)} == {"click"}
    assert queue.next_due() == 1_060_000
    assert {e["outcome"] for e in queue.due(2_000_000)} == {"conversion"}
    assert len(queue) == 0 and queue.next_due() is None


def test_messages_are_opened_before_a_click_and_some_customers_answer_a_survey() -> None:
    """Opens and NPS answers come on top of the impression, click and conversion of
    Preferences.respond, which stay the same (their own random streams)."""
    responder, stats = Responder(POPULATION, Preferences(seed=7)), ResponderStats()
    prefs = Preferences(seed=7)
    schemas = load_event_schemas()
    opened = clicked = surveys = 0
    for i in range(400):
        customer = POPULATION.customers[i % 30]
        rec = record(i, customer.customer_id, action="cart_reminder", channel="email",
                     slot="email")
        events = responder.answer(rec, stats)
        plain = [e for _, e in prefs.respond(customer, {
            "decision_id": f"d{i}", "action_id": "cart_reminder",
            "ts_ms": 1_772_359_200_000})]
        assert [e for e in events if e.get("outcome") not in {"open", None}] == plain
        outcomes = [e.get("outcome") for e in events]
        for event in events:
            schemas[event["type"]].validate(event)
        if "click" in outcomes:
            clicked += 1
            assert "open" in outcomes and outcomes.index("open") < outcomes.index("click")
        opened += "open" in outcomes
        for survey in (e for e in events if e["type"] == "survey"):
            surveys += 1
            assert 0 <= survey["score"] <= 10 and survey["channel"] == "email"
    assert clicked > 0 and opened > clicked  # some opened without clicking
    assert 10 < surveys < 80  # about 1 in 10
    assert stats.by_outcome["survey"] == surveys and stats.by_outcome["open"] == opened
    web = responder.answer(record(999, POPULATION.customers[0].customer_id, channel="web"), stats)
    assert "open" not in [e.get("outcome") for e in web]  # a web slot is not opened


def test_a_delivery_offer_converts_more_when_the_decision_saw_wet_weather() -> None:
    def conversions(features: dict[str, float] | None, action: str) -> int:
        responder = Responder(POPULATION, Preferences(seed=7))
        return sum(e.get("outcome") == "conversion"
                   for i in range(3000) for e in responder.answer(
                       record(i, POPULATION.customers[i % 30].customer_id, action,
                              features=features), ResponderStats()))

    wet, dry = {"bias": 1.0, "weather_wet": 1.0}, {"bias": 1.0, "weather_fair": 1.0}
    assert conversions(wet, "rainy_day_delivery") > 1.8 * conversions(dry, "rainy_day_delivery")
    assert conversions(None, "rainy_day_delivery") == conversions(dry, "rainy_day_delivery")
    # Other offers do not care about the weather.
    assert conversions(wet, "running_shoes_10pct") == conversions(dry, "running_shoes_10pct")
