"""Lifetime value: the BTYD properties (frequent, recent buyers are worth more) and learning."""

from __future__ import annotations

import random

import pytest

from streamproc.models.ltv import LifetimeValue, predict_value


def rfm(frequency: int, recency: int, age: int) -> dict[str, int]:
    return {"frequency": frequency, "recency": recency, "T": age}


@pytest.fixture
def ltv() -> LifetimeValue:
    return LifetimeValue()


def test_more_frequent_buyers_are_worth_more(ltv: LifetimeValue) -> None:
    values = [ltv.predict_value(rfm(x, 88, 90), 60.0 * (x + 1), x + 1) for x in range(0, 20)]
    assert values == sorted(values) and values[-1] > 5 * values[1]


def test_more_recent_buyers_are_worth_more(ltv: LifetimeValue) -> None:
    values = [ltv.predict_value(rfm(5, recency, 120), 300.0, 6) for recency in range(0, 121, 5)]
    assert values == sorted(values) and values[0] < values[-1] / 5


def test_a_buyer_silent_for_long_is_worth_less(ltv: LifetimeValue) -> None:
    values = [ltv.predict_value(rfm(4, 30, age), 250.0, 5) for age in range(30, 400, 10)]
    assert values == sorted(values, reverse=True) and values[-1] < values[0] / 10
    assert ltv.p_alive(rfm(4, 30, 400)) < ltv.p_alive(rfm(4, 30, 40)) < 1.0
    # one-time buyers: alive by definition in BG/NBD, but their expected rate decays
    assert ltv.p_alive(rfm(0, 0, 300)) == 1.0
    assert ltv.expected_purchases(rfm(0, 0, 300)) < ltv.expected_purchases(rfm(0, 0, 10))


def test_order_value_is_shrunk_toward_the_population(ltv: LifetimeValue) -> None:
    population = ltv.params["mean_order_value"]
    one_big = ltv.expected_order_value(1000.0, 1)
    many_big = ltv.expected_order_value(10_000.0, 10)
    assert population < one_big < many_big < 1000.0
    assert ltv.expected_order_value(0.0, 0) == population
    assert ltv.predict_value(rfm(3, 20, 30), 300.0, 4) < ltv.predict_value(rfm(3, 20, 30), 900.0, 4)


def test_value_scales_with_the_horizon_and_never_buyers_are_zero(ltv: LifetimeValue) -> None:
    r = rfm(3, 50, 60)
    assert 0 < ltv.predict_value(r, 200.0, 4, 30) < ltv.predict_value(r, 200.0, 4, 365)
    # at most the no-dropout count of purchases
    assert ltv.expected_purchases(r, 365) <= (0.25 + 3) / (30 + 60) * 365
    assert ltv.predict_value(None, 0.0, 0) == 0.0
    assert predict_value(r, 200.0, 4) == ltv.predict_value(r, 200.0, 4)


def test_population_parameters_are_learnt_by_moment_matching() -> None:
    """Customers with Gamma(r=2, alpha=20)-distributed daily rates over 200 days."""
    rng = random.Random(5)
    ltv = LifetimeValue(min_weight=100)
    for _ in range(3000):
        rate = rng.gammavariate(2.0, 1 / 20)
        age = 200
        x = sum(1 for _ in range(age) if rng.random() < rate)  # purchase days
        recency = age - 1 if x else 0
        orders = x + 1
        ltv.learn_one(rfm(x, recency, age), total=orders * rng.uniform(20, 80), orders=orders)
    params = ltv.params
    assert params["r"] / params["alpha"] == pytest.approx(0.1, rel=0.15)  # mean rate
    assert params["r"] == pytest.approx(2.0, rel=0.35)
    assert params["mean_order_value"] == pytest.approx(50.0, rel=0.1)


def test_priors_hold_until_enough_customers_were_seen() -> None:
    ltv = LifetimeValue(min_weight=50)
    for _ in range(10):
        ltv.learn_one(rfm(3, 20, 30), 400.0, 4)
    assert ltv.params["r"] == ltv.r and ltv.params["alpha"] == ltv.alpha
    young = LifetimeValue()
    young.learn_one(rfm(1, 1, 2), 50.0, 2)  # younger than min_age_days: rates not learnt
    assert young._w == 0.0
