"""Intent model: scoring, progressive validation, tiers, and adaptation to a flipped concept."""

from __future__ import annotations

import math
import pickle
import random

import pytest

from streamproc.models.intent import IntentModel, exact_auc


def example(rng: random.Random, flipped: bool = False) -> tuple[dict[str, float], bool]:
    x = {"cart": rng.gauss(0, 1), "views": rng.gauss(0, 1), "noise": rng.gauss(0, 1)}
    y = x["cart"] + 0.5 * x["views"] + 0.3 * rng.gauss(0, 1) > 0.5
    return x, (not y) if flipped else y


def test_it_learns_and_scores_probabilities() -> None:
    rng = random.Random(1)
    model = IntentModel()
    for _ in range(3000):
        model.observe(*example(rng))
    p_hot = model.predict_proba_one({"cart": 2.0, "views": 1.0, "noise": 0.0})
    p_cold = model.predict_proba_one({"cart": -2.0, "views": -1.0, "noise": 0.0})
    assert 0.0 <= p_cold < 0.3 < 0.7 < p_hot <= 1.0
    stats = model.stats()
    assert stats["auc"] > 0.85 and 0 < stats["logloss"] < 0.6
    assert stats["n"] == 3000 == stats["positives"] + stats["negatives"]
    assert stats["version"] == 1 + stats["drifts"]


def test_observe_predicts_before_it_learns() -> None:
    model = IntentModel()
    x = {"cart": 1.0}
    assert model.observe(x, True) == 0.5  # an untrained logistic regression
    assert model.predict_proba_one(x) > 0.5  # and then it learnt
    # With the score given when the snapshot was taken, that score is what is judged.
    fresh = IntentModel()
    assert fresh.observe(x, True, score=0.9) == 0.9
    assert fresh.stats()["logloss"] == pytest.approx(-math.log(0.9), abs=1e-3)


def test_predict_has_no_side_effects() -> None:
    rng = random.Random(2)
    model = IntentModel()
    for _ in range(500):
        model.observe(*example(rng))
    x = {"cart": 1.0, "views": 0.0, "noise": 0.0}
    before, stats = model.predict_proba_one(x), model.stats()
    for _ in range(10):
        assert model.predict_proba_one(x) == before
    assert model.stats() == stats


def test_it_pickles() -> None:
    rng = random.Random(3)
    model = IntentModel()
    for _ in range(300):
        model.observe(*example(rng))
    copy = pickle.loads(pickle.dumps(model))
    x = {"cart": 1.0, "views": 0.5, "noise": 0.0}
    assert copy.predict_proba_one(x) == model.predict_proba_one(x)
    assert copy.stats() == model.stats()


@pytest.mark.parametrize(("p", "tier"), [(0.0, "cold"), (0.19, "cold"), (0.2, "warm"),
                                         (0.49, "warm"), (0.5, "hot"), (1.0, "hot")])
def test_tiers_follow_the_thresholds(p: float, tier: str) -> None:
    assert IntentModel().tier(p) == tier


def test_thresholds_are_configurable_and_checked() -> None:
    model = IntentModel(thresholds=(0.05, 0.1))
    assert [model.tier(p) for p in (0.01, 0.07, 0.3)] == ["cold", "warm", "hot"]
    with pytest.raises(ValueError):
        IntentModel(thresholds=(0.6, 0.3))


def auc_after_flip(model: IntentModel, seed: int) -> tuple[float, int]:
    """Learn 4,000 labels, flip the concept, learn 1,500 more; ROC AUC on the next 1,000."""
    rng = random.Random(seed)
    for _ in range(4000):
        model.observe(*example(rng))
    for _ in range(1500):
        model.observe(*example(rng, flipped=True))
    labels, scores = [], []
    for _ in range(1000):
        x, y = example(rng, flipped=True)
        labels.append(y)
        scores.append(model.observe(x, y))
    return exact_auc(labels, scores), model.stats()["drifts"]


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_a_flipped_concept_is_detected_and_adapted_to(seed: int) -> None:
    adaptive, drifts = auc_after_flip(IntentModel(), seed)
    stubborn, _ = auc_after_flip(IntentModel(boost=1.0), seed)  # detects, does not adapt
    assert drifts >= 1
    assert adaptive > 0.95
    assert stubborn < 0.6


def test_a_drift_boosts_learning_for_a_while() -> None:
    rng = random.Random(4)
    model = IntentModel(boost_labels=50)
    for _ in range(4000):
        model.observe(*example(rng))
    assert not model.stats()["boosting"]
    while model.stats()["drifts"] == 0:
        model.observe(*example(rng, flipped=True))
    assert model.stats()["boosting"] and model.boost_left == 50
    for _ in range(50):
        model.observe(*example(rng, flipped=True))
    assert not model.stats()["boosting"] or model.stats()["drifts"] > 1


def test_few_false_alarms_on_a_stationary_stream() -> None:
    rng = random.Random(4)
    model = IntentModel()
    for _ in range(20_000):
        model.observe(*example(rng))
    assert model.stats()["drifts"] <= 1


def test_exact_auc() -> None:
    assert exact_auc([True, False], [0.9, 0.1]) == 1.0
    assert exact_auc([True, False], [0.1, 0.9]) == 0.0
    assert exact_auc([True, False], [0.5, 0.5]) == 0.5
    assert math.isnan(exact_auc([True, True], [0.1, 0.9]))
