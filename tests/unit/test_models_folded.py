"""The folded intent model gives River's pipeline's scores bit for bit: on random models and
vectors, on models learnt from the simulator's stream, with missing and new features, and falls
back to River for a model it cannot fold."""

from __future__ import annotations

import copy
import itertools
import math
import random
from datetime import UTC, datetime

import pytest
from river import linear_model, preprocessing, tree

from streamproc.events.codec import parse_ts
from streamproc.learning.observations import FEATURE_NAMES
from streamproc.models.features import EVENT_TYPES, INTENT_NAMES, intent_values
from streamproc.models.folded import fold
from streamproc.models.intent import IntentModel, default_pipeline
from streamproc.models.labels import PendingLabels
from streamproc.simulator import Population, generate_events
from streamproc.state.profile import apply_event, new_profile

ENVELOPE = ("event_id", "type", "customer_id", "ts")


def river_score(model: IntentModel, values: tuple[float, ...],
                names: tuple[str, ...] = INTENT_NAMES) -> float:
    """What the scorer served before folding: River's pipeline on the feature dict."""
    return model.predict_proba_one(dict(zip(names, values, strict=True)))


def random_vector(rng: random.Random, n: int = len(INTENT_NAMES)) -> tuple[float, ...]:
    """Values of every magnitude the features take and more (a scaler sees outliers too)."""
    return tuple(rng.choice((0.0, 1.0, rng.gauss(0, 1), rng.uniform(0, 10),
                             rng.gauss(0, 1) * 10 ** rng.randint(-6, 6))) for _ in range(n))


@pytest.mark.parametrize("seed", range(6))
def test_random_models_score_the_same_to_the_last_bit(seed: int) -> None:
    rng = random.Random(seed)
    model = IntentModel()
    # The learner learns in the observations' order (sorted names); the worker scores in
    # intent_values' order: the folded model must follow the serving order, as River does.
    for _ in range(rng.choice((2, 50, 3000))):
        x = dict(zip(INTENT_NAMES, random_vector(rng), strict=True))
        model.learn_one(dict(sorted(x.items())), rng.random() < 0.3 + 0.05 * x["cart_value"])
    folded = fold(model.model, INTENT_NAMES)
    assert folded is not None and folded.terms  # folded, and not into nothing
    for _ in range(2000):
        values = random_vector(rng)
        assert folded.predict(values) == river_score(model, values)


def test_an_untrained_model_folds_to_one_half_and_saturated_scores_are_0_and_1() -> None:
    untrained = fold(default_pipeline(), INTENT_NAMES)
    assert untrained is not None and untrained.terms == ()
    assert untrained.predict(random_vector(random.Random(1))) == 0.5
    model = IntentModel()
    for i in range(200):
        model.learn_one({"a": float(i % 2)}, bool(i % 2))
    model.model["LogisticRegression"]._weights["a"] = 1e6  # z far beyond +-30
    folded = fold(model.model, ("a",))
    assert folded is not None
    for value in (0.0, 1.0):
        assert folded.predict((value,)) == river_score(model, (value,), ("a",)) in (0.0, 1.0)


def simulated_moments(seed: int, events: int) -> list[tuple[tuple[float, ...], bool | None]]:
    """The simulator's browsing moments (features as the worker takes them) in event time, each
    with its label once a purchase within 30 minutes gave one (None: not labelled yet)."""
    sims = itertools.islice(generate_events(Population.generate(300, seed),
                                            datetime(2026, 3, 2, tzinfo=UTC), seed), events)
    profiles: dict[str, dict] = {}
    labels = PendingLabels(horizon_ms=30 * 60_000)
    out: list[tuple[tuple[float, ...], bool | None]] = []
    for sim in sims:
        ev = sim.event
        type_, customer, ts = ev["type"], ev["customer_id"], parse_ts(ev["ts"])
        p = profiles.setdefault(customer, new_profile(customer))
        if type_ == "purchase":
            out.extend((tuple(item.features[n] for n in INTENT_NAMES), True)
                       for item in labels.on_purchase(customer, ts))
        apply_event(p, type_, ts, {k: v for k, v in ev.items() if k not in ENVELOPE})
        if type_ in EVENT_TYPES:
            values = intent_values(p, type_, ts)
            labels.add(customer, ts, dict(zip(INTENT_NAMES, values, strict=True)))
            out.append((values, None))
        out.extend((tuple(item.features[n] for n in INTENT_NAMES), False)
                   for item in labels.expire(ts))
    return out


@pytest.mark.parametrize("seed", [7, 11])
def test_models_learnt_from_the_simulators_stream_score_it_the_same(seed: int) -> None:
    model = IntentModel()
    served, folded = model, fold(model.model, INTENT_NAMES)
    compared = moved = 0
    for n, (values, label) in enumerate(simulated_moments(seed, 12_000)):
        if label is not None:  # learnt as the learner learns it: by name, in sorted order
            x = dict(zip(INTENT_NAMES, values, strict=True))
            model.observe({name: x[name] for name in FEATURE_NAMES}, label)
            continue
        if n % 400 == 0:  # a new served version now and then: a copy, as a snapshot is
            served = copy.deepcopy(model)
            folded = fold(served.model, INTENT_NAMES)
            assert folded is not None
        expected = river_score(served, values)
        assert folded.predict(values) == expected
        compared += 1
        moved += served.tier(expected) != "hot"
    assert model.n > 500 and compared > 5000
    assert moved > 100  # a learnt model, scoring customers into several tiers


def test_a_feature_the_snapshot_never_saw_adds_nothing_and_a_retired_one_is_ignored() -> None:
    rng = random.Random(3)
    old_names = tuple(n for n in INTENT_NAMES if n not in ("s_cart_adds", "s_checkouts"))
    old = IntentModel()
    for _ in range(2000):  # an older feature set: no cart adds or checkouts, one since retired
        x = dict(zip(old_names, random_vector(rng, len(old_names)), strict=True))
        x["retired"] = rng.gauss(0, 1)
        old.learn_one(x, rng.random() < 0.2 + 0.1 * (x["retired"] > 0))
    folded = fold(old.model, INTENT_NAMES)
    assert folded is not None
    new_at = {INTENT_NAMES.index("s_cart_adds"), INTENT_NAMES.index("s_checkouts")}
    assert new_at.isdisjoint(i for i, *_ in folded.terms)
    for _ in range(500):
        values = random_vector(rng)
        at_zero = tuple(0.0 if i in new_at else v for i, v in enumerate(values))
        assert folded.predict(values) == river_score(old, values) == folded.predict(at_zero)


@pytest.mark.parametrize("model", [
    linear_model.LogisticRegression(),
    preprocessing.MinMaxScaler() | linear_model.LogisticRegression(),
    preprocessing.StandardScaler() | tree.HoeffdingTreeClassifier(),
    preprocessing.StandardScaler(with_std=False) | linear_model.LogisticRegression(),
    preprocessing.StandardScaler(window_size=100) | linear_model.LogisticRegression(),
])
def test_a_model_of_another_shape_is_not_folded(model) -> None:  # type: ignore[no-untyped-def]
    assert fold(model, INTENT_NAMES) is None


def test_non_finite_weights_give_nan_as_river_does() -> None:
    model = IntentModel()
    model.learn_one({"a": 1.0, "b": 2.0}, True)
    model.learn_one({"a": 3.0, "b": 2.0}, False)  # b has no variance: scaled to 0.0
    model.model["LogisticRegression"]._weights["b"] = math.inf
    folded = fold(model.model, ("a", "b"))
    assert folded is not None
    assert math.isnan(folded.predict((2.0, 5.0))) and math.isnan(
        river_score(model, (2.0, 5.0), ("a", "b")))
