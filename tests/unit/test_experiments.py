"""Experiment assignment (deterministic, stable, in the right shares) and validation."""

from __future__ import annotations

from collections import Counter
from typing import Any

import pytest

from streamproc.decisions.experiments import (
    CONTROL,
    arm_policy,
    assign,
    bucket,
    validate_experiment,
)


def experiment(**overrides: Any) -> dict[str, Any]:
    exp: dict[str, Any] = {
        "id": "nba-2026-03", "slots": ["cart_drawer"],
        "arms": [{"id": "bandit", "policy": "bandit", "share": 0.6},
                 {"id": "random", "policy": "uniform", "share": 0.4}],
    }
    exp.update(overrides)
    return exp


def test_assignment_is_deterministic_and_independent_of_other_customers() -> None:
    exp = experiment()
    ids = [f"cust-{i}" for i in range(2000)]
    first = {c: assign(c, exp) for c in ids}
    again = {c: assign(c, exp) for c in reversed(ids[::3])}
    assert all(first[c] == arm for c, arm in again.items())


def test_default_control_share_is_ten_percent_and_arms_get_their_shares() -> None:
    n = 40_000
    counts = Counter(assign(f"cust-{i}", experiment()) for i in range(n))
    # Binomial standard deviations at n = 40,000 are 0.0015 (10%) and 0.0025 (54%, 36%).
    assert counts[CONTROL] / n == pytest.approx(0.10, abs=0.006)
    assert counts["bandit"] / n == pytest.approx(0.9 * 0.6, abs=0.01)
    assert counts["random"] / n == pytest.approx(0.9 * 0.4, abs=0.01)


def test_configured_control_share_and_no_control() -> None:
    n = 20_000
    counts = Counter(assign(f"c{i}", experiment(control_share=0.3)) for i in range(n))
    assert counts[CONTROL] / n == pytest.approx(0.3, abs=0.015)
    assert CONTROL not in {assign(f"c{i}", experiment(control_share=0.0)) for i in range(2000)}


def test_experiments_assign_independently() -> None:
    a, b = experiment(id="exp-a"), experiment(id="exp-b")
    pairs = Counter((assign(f"c{i}", a), assign(f"c{i}", b)) for i in range(20_000))
    # Independent hashing: being in control of one says nothing about the other.
    both = pairs[(CONTROL, CONTROL)] / 20_000
    assert both == pytest.approx(0.01, abs=0.004)


def test_bucket_is_the_documented_hash() -> None:
    import hashlib

    digest = hashlib.blake2b(b"exp\x00cust-1", digest_size=8).digest()
    assert bucket("cust-1", "exp") == int.from_bytes(digest, "big") / 2**64


def test_arm_policy() -> None:
    exp = experiment()
    assert arm_policy(exp, "bandit") == "bandit"
    assert arm_policy(exp, "random") == "uniform"
    assert arm_policy(exp, CONTROL) == "neutral"
    with pytest.raises(KeyError, match="no arm"):
        arm_policy(exp, "nope")


def test_a_valid_experiment_has_no_problems() -> None:
    assert validate_experiment(experiment()) == []
    assert validate_experiment(experiment(control_share=0.2, description="spring test")) == []


@pytest.mark.parametrize(("overrides", "expected"), [
    ({"id": "bad id!"}, "id must be"),
    ({"slots": "cart_drawer"}, "slots must be a non-empty list"),
    ({"control_share": 1.0}, "control_share must be a number from 0 to below 1"),
    ({"control_share": "10%"}, "control_share must be"),
    ({"arms": []}, "arms must be a non-empty list"),
    ({"arms": [{"id": "a", "policy": "bandit", "share": 0.5}]}, "must add up to 1"),
    ({"arms": [{"id": "a", "policy": "bandit", "share": 0.5},
               {"id": "a", "policy": "uniform", "share": 0.5}]}, "duplicate arm id"),
    ({"arms": [{"id": "control", "policy": "neutral", "share": 1}]}, "reserved"),
    ({"arms": [{"id": "a", "policy": "greedy", "share": 1}]}, "policy must be one of"),
    ({"arms": [{"id": "a", "policy": "bandit", "share": 0}]}, "share must be a number in"),
    ({"arms": [{"id": "a", "policy": "bandit", "share": 1, "weight": 2}]}, "unknown field"),
    ({"arms": ["a"]}, "arm #1 must be a mapping"),
    ({"colour": "red"}, "unknown field 'colour'"),
])
def test_each_problem_is_named(overrides: dict[str, Any], expected: str) -> None:
    problems = validate_experiment(experiment(**overrides))
    assert any(expected in p for p in problems), problems


def test_not_a_mapping() -> None:
    assert validate_experiment(["x"]) == ["an experiment must be a mapping, got list"]  # type: ignore[arg-type]
