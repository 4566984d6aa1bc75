"""`streamproc respond`: simulated customers answer decisions on the real topics."""

from __future__ import annotations

from typing import Any

import pytest

from streamproc.events.schemas import load_event_schemas
from streamproc.simulator.population import Population
from tests.integration.conftest import Env

pytestmark = pytest.mark.integration


async def test_respond_answers_simulated_customers_decisions(stack_env: Env) -> None:
    env = stack_env
    population = Population.generate(40, seed=11)
    decisions: list[dict[str, Any]] = [
        {"decision_id": f"it-d{i}", "customer_id": c.customer_id,
         "ts": "2026-03-01T10:00:00.000Z", "personalised": True, "slot": "homepage_hero",
         "action": {"id": "hot_intent_bundle", "kind": "offer"}}
        for i, c in enumerate(population.customers[:25])
    ]
    decisions.append({**decisions[0], "decision_id": "it-other", "customer_id": "not-simulated"})
    await env.produce_events(env.settings.topics.decisions, decisions)

    result = env.cli("respond", "--customers", "40", "--seed", "11", "--from-beginning",
                     "--max", "25")
    assert result.returncode == 0, result.stderr
    assert "answered 25 decisions" in result.stdout

    def impressions(records: list[dict[str, Any]]) -> int:
        return sum(r["value"].get("outcome") == "impression" for r in records)

    feedback = await env.consume_until(env.settings.topics.feedback,
                                       lambda rs: impressions(rs) >= 25)
    schemas = load_event_schemas()
    answered = set()
    for r in feedback:  # feedback on the decisions, and now and then an NPS survey answer
        schemas[r["value"]["type"]].validate(r["value"])
        assert r["key"] == r["value"]["customer_id"].encode()
        if r["value"]["type"] == "feedback":
            answered.add(r["value"]["decision_id"])
    assert answered == {f"it-d{i}" for i in range(25)}  # never the non-simulated customer
