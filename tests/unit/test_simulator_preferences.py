"""Hidden preferences over the decision catalogue and the simulated feedback."""

from __future__ import annotations

import pytest

from streamproc.events.schemas import load_event_schemas
from streamproc.simulator.population import Population
from streamproc.simulator.preferences import (
    DEFAULT_ACTIONS,
    NEUTRAL_ACTION,
    NEUTRAL_ACTIONS,
    Preferences,
)

POPULATION = Population.generate(400, seed=3)


def test_preferences_are_deterministic_and_work_with_any_action_ids() -> None:
    a, b = Preferences(["x1", "x2"], seed=3), Preferences(["x1", "x2"], seed=3)
    customer = POPULATION.customers[0]
    assert a.conversion(customer, "x1") == b.conversion(customer, "x1")
    assert a.persona_rates == b.persona_rates
    assert Preferences(["x1", "x2"], seed=4).persona_rates != a.persona_rates
    # An action first met later gets the rate it would have had if listed up front.
    assert a.conversion(customer, "cart_reminder") == Preferences(
        ["cart_reminder"], seed=3).conversion(customer, "cart_reminder")


def test_the_best_action_depends_on_the_persona_and_beats_the_neutral_one() -> None:
    prefs = Preferences(DEFAULT_ACTIONS, seed=7)
    best = {persona: max(rates, key=rates.__getitem__)
            for persona, rates in prefs.persona_rates.items()}
    assert len(set(best.values())) >= 3  # no single action is best for everybody
    for rates in prefs.persona_rates.values():
        assert max(rates[a] for a in DEFAULT_ACTIONS) > rates[NEUTRAL_ACTION]
        assert all(0 < r < 1 for r in rates.values())
        assert {rates[a] for a in NEUTRAL_ACTIONS} == {rates[NEUTRAL_ACTION]}


def test_an_action_naming_a_category_appeals_to_the_personas_who_like_it() -> None:
    import math

    from streamproc.simulator.population import PERSONAS
    from streamproc.simulator.preferences import ACTION_SPREAD, _normal

    action = "baby_essentials_15pct"
    rates = Preferences([action], seed=7).persona_rates
    for persona in PERSONAS:
        base = (0.01 + 0.08 * persona.propensity) * math.exp(
            ACTION_SPREAD * _normal(7, persona.name, action))
        share = persona.categories.get("baby", 0) / sum(persona.categories.values())
        assert rates[persona.name][action] == pytest.approx(base * (1 + 3 * share))
    assert next(p for p in PERSONAS if p.name == "new_parent").categories["baby"] > 0


def test_feedback_follows_the_hidden_probabilities_and_the_schema() -> None:
    prefs = Preferences(DEFAULT_ACTIONS, seed=7)
    validate = load_event_schemas()["feedback"].validate
    customer = POPULATION.customers[5]
    action = prefs.best_action(customer)
    n, conversions, clicks = 6000, 0, 0
    for i in range(n):
        events = prefs.respond(customer, {"decision_id": f"d{i}", "action_id": action,
                                          "ts_ms": 1_700_000_000_000 + i})
        times = [t for t, _ in events]
        assert times == sorted(times) and times[0] == 1_700_000_000_000 + i
        for _, event in events:
            validate(event)
        outcomes = [e["outcome"] for _, e in events]
        assert outcomes[0] == "impression"
        clicks += "click" in outcomes
        conversions += "conversion" in outcomes
        if "conversion" in outcomes:
            assert events[-1][1]["revenue"] > 0
    p = prefs.conversion(customer, action)
    assert conversions / n == pytest.approx(p, abs=4 * (p * (1 - p) / n) ** 0.5)
    assert clicks / n == pytest.approx(min(0.9, 3 * p), abs=0.03)
    again = prefs.respond(customer, {"decision_id": "d7", "action_id": action, "ts_ms": 0})
    assert again == prefs.respond(customer, {"decision_id": "d7", "action_id": action,
                                             "ts_ms": 0})
