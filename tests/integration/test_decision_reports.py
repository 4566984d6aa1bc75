"""`streamproc report` and `streamproc evaluate` reading the real decisions and feedback topics."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from tests.integration.conftest import Env

pytestmark = pytest.mark.integration


def decision(env: Env, i: int, customer: str, arm: str, action: str) -> dict[str, Any]:
    control = arm == "control"
    return {
        "decision_id": f"{customer}-d{i}", "customer_id": customer,
        "ts": "2026-03-01T10:00:00.000Z", "decided_at": "2026-03-01T10:00:00.020Z",
        "trigger": {"type": "slot_request", "event_id": f"{customer}-e{i}",
                    "topic": env.settings.topics.browsing, "partition": 0, "offset": i},
        "slot": "homepage_hero", "channel": "web",
        "action": {"id": action, "kind": "content"}, "personalised": not control,
        "reasons": ["test"], "segments": {"rfm": "new" if i % 2 else "loyal"}, "scores": {},
        "experiment": {"id": "exp-it", "arm": arm}, "propensity": 1.0 if control else 0.5,
        "expires_at": None, "model_versions": {}, "latency_ms": 3,
        "policy": "neutral" if control else "thompson-v1",
    }


async def test_report_and_evaluate_read_the_topics(stack_env: Env) -> None:
    env = stack_env
    decisions, feedback = [], []
    # 8 control customers (1 converts); 16 bandit customers, half shown "a" (all convert,
    # 20.0 each), half "b" (none convert). Each customer has one decision.
    for i in range(24):
        customer = env.customer(f"r{i}")
        arm = "control" if i < 8 else "bandit"
        action = "default_content" if arm == "control" else ("a" if i % 2 else "b")
        record = decision(env, i, customer, arm, action)
        decisions.append(record)
        converts = (arm == "control" and i == 0) or action == "a"
        outcomes = ["impression", "click", "conversion"] if converts else ["impression"]
        for k, outcome in enumerate(outcomes):
            event: dict[str, Any] = {
                "event_id": f"{customer}-f{k}", "type": "feedback", "customer_id": customer,
                "ts": "2026-03-01T10:05:00.000Z", "decision_id": record["decision_id"],
                "outcome": outcome, "action_id": action}
            if outcome == "conversion":
                event["revenue"] = 20.0
            feedback.append(event)
    await env.produce_events(env.settings.topics.decisions, decisions)
    # A redelivered decision and a retried feedback event must count once.
    await env.produce_events(env.settings.topics.decisions, decisions[-1:])
    await env.produce_events(env.settings.topics.feedback, feedback + feedback[-1:])

    report = env.cli("report", "--json")
    assert report.returncode == 0, report.stderr
    out = orjson.loads(report.stdout)
    rows = {r["arm"]: r for r in out["rows"]}
    assert set(rows) == {"control", "bandit"}
    assert (rows["control"]["customers"], rows["control"]["decisions"]) == (8, 8)
    assert rows["control"]["conversion"]["value"] == pytest.approx(1 / 8, abs=1e-6)
    assert (rows["bandit"]["customers"], rows["bandit"]["decisions"]) == (16, 16)
    assert rows["bandit"]["conversion"]["value"] == pytest.approx(0.5)
    assert rows["bandit"]["click_rate"]["value"] == pytest.approx(0.5)
    assert rows["bandit"]["revenue_per_customer"]["value"] == pytest.approx(10.0)
    # 8 and 16 customers: too few for an honest uplift interval; the report says so and how
    # many customers the arms still need (the uplift figures are unit-tested in test_report).
    assert rows["bandit"]["uplift"] is None
    assert rows["bandit"]["status"] == "not enough data yet"
    assert rows["bandit"]["still_needed"] > 0
    assert "1 repeated decision records counted once" in out["notes"]
    assert "1 repeated feedback events counted once" in out["notes"]

    by_segment = env.cli("report", "--by", "segments.rfm")
    assert by_segment.returncode == 0, by_segment.stderr
    assert "loyal" in by_segment.stdout and "new" in by_segment.stdout

    evaluation = env.cli("evaluate", "--candidate", "action:a", "--candidate", "uniform",
                         "--json")
    assert evaluation.returncode == 0, evaluation.stderr
    always_a, uniform = orjson.loads(evaluation.stdout)
    assert always_a["decisions"] == 16
    assert always_a["ips"]["value"] == pytest.approx(1.0)  # "a" always converted
    assert uniform["ips"]["value"] == pytest.approx(0.5)
    assert always_a["excluded"] == {"control-group or neutral-policy decisions": 8}


async def test_a_missing_topic_is_a_clear_error(stack_env: Env) -> None:
    env = stack_env
    env.env["STREAMPROC_TOPIC_DECISIONS"] = f"{env.settings.topics.decisions}-missing"
    result = env.cli("report")
    assert result.returncode == 2
    assert "does not exist" in result.stderr


async def test_the_bandit_candidate_comes_from_the_learners_snapshot_in_redis(
        stack_env: Env, test_redis: Any) -> None:
    import dataclasses

    from streamproc.cli.decisions import bandit_from_redis
    from streamproc.decisions.bandit import ThompsonChooser
    from streamproc.errors import StreamprocError
    from streamproc.learning.modelstore import RedisModelStore
    from streamproc.learning.scorer import ServedModels
    from streamproc.models import IntentModel, dump
    from streamproc.models.snapshot import SnapshotError

    # The keys are the test's own: its app id is unique.
    settings = dataclasses.replace(stack_env.settings, model_secret="it-secret-1234")
    models = RedisModelStore(test_redis, settings.app_id)
    try:
        with pytest.raises(StreamprocError, match="no model snapshot in Redis"):
            await bandit_from_redis(settings)
        learnt = ThompsonChooser()
        learnt.learn("a", "ctx", 1.0)
        served = ServedModels(IntentModel(), {"bandit_pending": 0},
                              bandit=learnt.serving_copy())
        blob = dump(served, b"it-secret-1234", version=4)
        assert await models.publish(4, blob, blob)
        loaded, about = await bandit_from_redis(settings)
        assert loaded.posterior("ctx", "a") == (2.0, 1.0) and about["version"] == 4
        wrong = dataclasses.replace(settings, model_secret="not-the-secret")
        with pytest.raises(SnapshotError, match="signature does not match"):
            await bandit_from_redis(wrong)
    finally:
        await models.delete()
