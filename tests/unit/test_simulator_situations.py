"""Simulated situations: responses that depend on the customer's features and the moment."""

from __future__ import annotations

from bench.contextual_bench import parse_args, simulate, summarise
from streamproc.decisions.contextual import context_features
from streamproc.simulator.situations import ACTIONS, DAY_MS, HOUR_MS, Situation, Situations


def test_the_best_action_depends_on_the_features() -> None:
    world = Situations(customers=200, seed=3)
    base = world.visit(0).profile
    cold = {**base, "device": "desktop", "cart": {"value": 0.0, "items": {}},
            "segments": {**base["segments"], "value_tier": "emerging"},
            "scores": {"intent": 0.5}}

    def best(profile: dict, hour: int) -> str:
        s = Situation(profile, 10 * DAY_MS + hour * HOUR_MS)
        return max(ACTIONS, key=lambda a: world.conversion(s, a))

    assert best({**cold, "device": "mobile"}, 20) == "app_discount"
    assert best({**cold, "cart": {"value": 30.0, "items": {"p": {}}}}, 20) == "free_delivery"
    assert best(cold, 12) == "lunch_deal"
    assert best({**cold, "segments": {**cold["segments"], "value_tier": "very_profitable"}},
                20) == "premium_bundle"


def test_visits_are_replayable_and_readable_as_features() -> None:
    first = [Situations(customers=50, seed=5).visit(i * 1000) for i in range(3)]
    again = [Situations(customers=50, seed=5).visit(i * 1000) for i in range(3)]
    assert first == again
    for s in first:
        x = context_features(s.profile, s.ts_ms)
        assert f"device_{s.profile['device']}" in x
        assert f"value_{s.profile['segments']['value_tier']}" in x


def test_revenue_comes_only_with_a_conversion_and_has_a_long_tail() -> None:
    world = Situations(customers=100, seed=1)
    s = Situation({**world.visit(0).profile, "device": "mobile", "scores": {"intent": 1.0}}, 0)
    earned = [world.respond(s, "app_discount") for _ in range(20_000)]
    sold = [r for r in earned if r > 0]
    assert abs(len(sold) / len(earned) - world.conversion(s, "app_discount")) < 0.01
    assert max(sold) > 3 * sorted(sold)[len(sold) // 2]


def test_the_benchmark_runs_both_arms_through_the_one_learner() -> None:
    args = parse_args(["--visits", "3000", "--customers", "300", "--min-outcomes", "5"])
    run = simulate(args)
    assert run["learner"]["contextual_outcomes"] == run["learner"]["bandit_outcomes"] > 2000
    assert run["picked_by"]["contextual:linucb-v1"] > 1000  # warm after a few outcomes each
    assert set(run["picked_by"]) <= {"contextual:linucb-v1", "contextual:thompson-v1",
                                     "bandit:thompson-v1"}
    summary = summarise(args, run)
    assert summary["per_arm_visits"]["bandit"] + summary["per_arm_visits"]["contextual"] == 3000
    assert summary["evaluate_on_bandit_log"]["decisions"] == summary["per_arm_visits"]["bandit"]
