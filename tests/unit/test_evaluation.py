"""Off-policy evaluation (IPS, doubly robust) on synthetic logs whose answer is known."""

from __future__ import annotations

from typing import Any

import pytest

from streamproc.decisions.bandit import ThompsonChooser
from streamproc.decisions.decision_log import join
from streamproc.decisions.evaluation import (
    EvaluationError,
    FixedActionPolicy,
    UniformPolicy,
    evaluate,
    samples_from_log,
)

RATES = {"young": {"a": 0.10, "b": 0.30, "c": 0.20}, "old": {"a": 0.40, "b": 0.05, "c": 0.15}}


def decision(i: int, context: str, action: str, propensity: Any, **extra: Any) -> dict[str, Any]:
    record = {"decision_id": f"d-{i}", "customer_id": f"c-{i}", "slot": "hero",
              "action": {"id": action, "kind": "content"}, "personalised": True,
              "context": context, "propensity": propensity, "experiment": None,
              "policy": "thompson-v1"}
    record.update(extra)
    return record


def synthetic_log(shares: dict[str, float], per_context: int = 3000,
                  ) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Each action logged exactly ``share * per_context`` times per context, with propensity
    ``share``, and exactly its true rate of those decisions converting: IPS is then exact."""
    decisions, feedback = [], []
    i = 0
    for context, rates in RATES.items():
        for action, share in shares.items():
            count = round(share * per_context)
            wins = round(rates[action] * count)
            for k in range(count):
                decisions.append(decision(i, context, action, share))
                if k < wins:
                    feedback.append({"event_id": f"f-{i}", "type": "feedback",
                                     "decision_id": f"d-{i}", "outcome": "conversion",
                                     "revenue": 10.0})
                i += 1
    return decisions, feedback


def truth(policy: dict[str, float]) -> float:
    """The true mean reward of a policy choosing action x with probability policy[x]."""
    return sum(sum(policy[a] * r for a, r in rates.items()) for rates in RATES.values()) / 2


@pytest.mark.parametrize("shares", [{"a": 1 / 3, "b": 1 / 3, "c": 1 / 3},
                                    {"a": 0.6, "b": 0.2, "c": 0.2}])
def test_ips_is_exact_on_a_balanced_log(shares: dict[str, float]) -> None:
    samples, _ = samples_from_log(join(*synthetic_log(shares)))
    for policy, dist in ((FixedActionPolicy("b"), {"a": 0, "b": 1, "c": 0}),
                         (UniformPolicy(), {"a": 1 / 3, "b": 1 / 3, "c": 1 / 3})):
        result = evaluate(samples, policy)
        assert result.ips.value == pytest.approx(truth(dist), abs=1e-9)
        assert result.ips.low < truth(dist) < result.ips.high
        # DR is unbiased too, and its interval covers the truth.
        assert result.dr.low < truth(dist) < result.dr.high
        assert result.dr.value == pytest.approx(truth(dist), abs=0.02)


def test_dr_is_tighter_than_ips_for_a_policy_far_from_the_log() -> None:
    samples, _ = samples_from_log(join(*synthetic_log({"a": 0.6, "b": 0.2, "c": 0.2})))
    result = evaluate(samples, FixedActionPolicy("c"))
    assert result.dr.high - result.dr.low < result.ips.high - result.ips.low
    assert result.effective_sample_size == pytest.approx(0.2 * len(samples), rel=0.01)


def test_the_logged_policy_evaluates_to_its_observed_reward() -> None:
    shares = {"a": 0.6, "b": 0.2, "c": 0.2}
    samples, _ = samples_from_log(join(*synthetic_log(shares)))

    class Logged:
        name = "logged"

        def probabilities(self, candidates: Any, context: str) -> list[float]:
            return [shares[c] for c in candidates]

    result = evaluate(samples, Logged())
    assert result.ips.value == pytest.approx(result.logged.value, abs=1e-9)
    assert result.effective_sample_size == pytest.approx(len(samples))


def test_a_context_aware_candidate_beats_any_fixed_action() -> None:
    samples, _ = samples_from_log(join(*synthetic_log({"a": 1 / 3, "b": 1 / 3, "c": 1 / 3})))
    bandit = ThompsonChooser(exploration=0.01)
    for context, rates in RATES.items():
        for action, rate in rates.items():
            for k in range(400):
                bandit.learn(action, context, 1.0 if k < rate * 400 else 0.0)
    best = evaluate(samples, bandit)
    assert best.candidate == "bandit"
    assert best.ips.value > max(evaluate(samples, FixedActionPolicy(a)).ips.value for a in "abc")
    assert best.dr.value == pytest.approx((0.30 + 0.40) / 2, abs=0.03)


def test_revenue_and_click_rewards() -> None:
    log = join(*synthetic_log({"a": 1 / 3, "b": 1 / 3, "c": 1 / 3}))
    revenue, _ = samples_from_log(log, reward="revenue")
    assert evaluate(revenue, FixedActionPolicy("b"), "revenue").ips.value == pytest.approx(
        10 * truth({"a": 0, "b": 1, "c": 0}))
    clicks, _ = samples_from_log(log, reward="click")  # a conversion counts as a click
    assert [s.reward for s in clicks] == [s.reward for s in samples_from_log(log)[0]]
    with pytest.raises(EvaluationError, match="unknown reward"):
        samples_from_log(log, reward="likes")


def test_missing_or_zero_propensities_are_a_clear_error() -> None:
    log = join([decision(1, "x", "a", 0.5), decision(2, "x", "b", None),
                decision(3, "x", "b", 0.0)], [])
    with pytest.raises(EvaluationError, match=r"2 of 3 decisions have no usable propensity.*"
                                              r"d-2 \(missing\), d-3 \(0\.0\)"):
        samples_from_log(log)


def test_control_neutral_and_filtered_decisions_are_left_out_and_counted() -> None:
    exp = {"id": "e1", "arm": "bandit"}
    log = join([
        decision(1, "x", "a", 0.5, experiment=exp),
        decision(2, "x", "default_content", 1.0, experiment={"id": "e1", "arm": "control"}),
        decision(3, "x", "default_content", 1.0, personalised=False),
        decision(4, "x", "b", 0.5, experiment={"id": "e2", "arm": "bandit"}),
        decision(5, "x", "b", None, policy="neutral"),
        decision(6, "x", "b", 1.0, policy="reuse", experiment=exp),
        decision(7, "x", "b", 1.0, candidates=[], experiment=exp),
    ], [])
    samples, excluded = samples_from_log(log, experiment="e1")
    assert [s.decision_id for s in samples] == ["d-1"]
    assert excluded == {"decisions of other experiments": 3,
                        "control-group or neutral-policy decisions": 1,
                        "forced choices (re-use of a fresh action, nothing to choose among)": 2}
    samples, excluded = samples_from_log(log)
    assert [s.decision_id for s in samples] == ["d-1", "d-4"]
    assert excluded["non-personalised decisions (no consent, missing data)"] == 1


def test_candidates_come_from_the_record_or_from_the_actions_logged_at_the_slot() -> None:
    log = join([decision(1, "x", "a", 0.5, candidates=["a", "z"]),
                decision(2, "x", "b", 0.5), decision(3, "x", "c", 0.5, slot="other")], [])
    samples, _ = samples_from_log(log)
    assert [s.candidates for s in samples] == [("a", "z"), ("a", "b"), ("c",)]
    by_segment, _ = samples_from_log(log, context="segments.rfm")
    assert {s.context for s in by_segment} == {"all"}


def test_an_empty_log_is_a_clear_error() -> None:
    with pytest.raises(EvaluationError, match="no logged decisions"):
        evaluate([], UniformPolicy())
